// Package bundle validates the OLM bundle in bundle/ as OperatorHub does:
// the operator-framework validators (default, OperatorHub, capabilities,
// categories, good practices, deprecated APIs) with zero errors and zero
// warnings, plus the static checks the scorecard's basic and OLM suites make
// (scorecard itself runs only as pods from an image).
package bundle

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/operator-framework/api/pkg/manifests"
	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	"github.com/operator-framework/api/pkg/validation"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

func load(t *testing.T) *manifests.Bundle {
	t.Helper()
	b, err := manifests.GetBundleFromDir(filepath.Join(testenv.RepoRoot(), "bundle"))
	if err != nil {
		t.Fatalf("loading bundle/ (run `make bundle`): %v", err)
	}
	return b
}

func TestBundlePassesOperatorHubValidation(t *testing.T) {
	b := load(t)
	validators := validation.DefaultBundleValidators.WithValidators(
		validation.OperatorHubV2Validator,
		validation.StandardCapabilitiesValidator,
		validation.StandardCategoriesValidator,
		validation.AlphaDeprecatedAPIsValidator,
		validation.GoodPracticesValidator,
	)
	objs := b.ObjectsToValidate()
	objs = append(objs, map[string]string{"k8s-version": "1.37"})
	results := validators.Validate(objs...)
	found := 0
	for _, r := range results {
		for _, e := range r.Errors {
			t.Errorf("error (%s): %s", r.Name, e.Error())
			found++
		}
		for _, w := range r.Warnings {
			t.Errorf("warning (%s): %s", r.Name, w.Error())
			found++
		}
	}
	if len(results) == 0 {
		t.Fatal("no validator ran")
	}
	t.Logf("%d validators ran, %d findings", len(results), found)
}

func TestScorecardStaticChecks(t *testing.T) {
	b := load(t)
	csv := b.CSV
	crds := map[string]*apiextensionsv1.CustomResourceDefinition{}
	for _, crd := range b.V1CRDs {
		crds[crd.Spec.Names.Kind] = crd
	}
	owned := map[string]operatorsv1alpha1.CRDDescription{}
	for _, d := range csv.Spec.CustomResourceDefinitions.Owned {
		owned[d.Kind] = d
		if _, ok := crds[d.Kind]; !ok {
			t.Errorf("owned CRD %s is not in the bundle", d.Name)
		}
	}
	var examples []map[string]any
	if err := json.Unmarshal([]byte(csv.Annotations["alm-examples"]), &examples); err != nil || len(examples) == 0 {
		t.Fatalf("alm-examples do not parse: %v", err)
	}
	for _, ex := range examples {
		kind, _ := ex["kind"].(string)
		spec, ok := ex["spec"].(map[string]any)
		if !ok || len(spec) == 0 {
			t.Errorf("example %v has no spec", ex["metadata"])
			continue
		}
		desc, ok := owned[kind]
		if !ok {
			t.Errorf("example kind %s is not an owned CRD", kind)
			continue
		}
		if len(desc.Resources) == 0 {
			t.Errorf("owned CRD %s lists no resources", kind)
		}
		schema := crds[kind].Spec.Versions[0].Schema.OpenAPIV3Schema
		if _, hasStatus := schema.Properties["status"]; hasStatus && len(desc.StatusDescriptors) == 0 {
			t.Errorf("owned CRD %s has a status but no status descriptors", kind)
		}
		props := schema.Properties["spec"].Properties
		for key := range spec {
			if !slices.ContainsFunc(desc.SpecDescriptors, func(d operatorsv1alpha1.SpecDescriptor) bool { return d.Path == key }) {
				t.Errorf("example key spec.%s of %s has no specDescriptor", key, kind)
			}
			if _, ok := props[key]; !ok {
				t.Errorf("example key spec.%s is not declared by the %s CRD", key, kind)
			}
		}
	}
	for _, crd := range b.V1CRDs {
		for _, v := range crd.Spec.Versions {
			if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil || len(v.Schema.OpenAPIV3Schema.Properties) == 0 {
				t.Errorf("CRD %s %s has no validation schema", crd.Name, v.Name)
			}
		}
	}
}

func TestCSVShipsWhatTheOperatorNeeds(t *testing.T) {
	csv := load(t).CSV
	if len(csv.Spec.Icon) != 1 || csv.Spec.Icon[0].Data == "" || csv.Spec.Icon[0].MediaType == "" {
		t.Error("want exactly one icon with data and a media type")
	}
	modes := map[operatorsv1alpha1.InstallModeType]bool{}
	for _, m := range csv.Spec.InstallModes {
		modes[m.Type] = m.Supported
	}
	if !modes[operatorsv1alpha1.InstallModeTypeAllNamespaces] || modes[operatorsv1alpha1.InstallModeTypeOwnNamespace] {
		t.Errorf("install modes %v: NodeAccess is cluster-scoped, so AllNamespaces only", modes)
	}
	deployments := csv.Spec.InstallStrategy.StrategySpec.DeploymentSpecs
	if len(deployments) != 1 {
		t.Fatalf("want one Deployment, got %d", len(deployments))
	}
	related := map[string]string{}
	for _, ri := range csv.Spec.RelatedImages {
		related[ri.Name] = ri.Image
	}
	c := deployments[0].Spec.Template.Spec.Containers[0]
	var agentImage string
	for _, e := range c.Env {
		if e.Name == "RELATED_IMAGE_AGENT" {
			agentImage = e.Value
		}
	}
	if agentImage == "" || agentImage != related["agent"] || c.Image != related["manager"] {
		t.Errorf("RELATED_IMAGE_AGENT %q and image %q must match relatedImages %v", agentImage, c.Image, related)
	}
	accounts := map[string]bool{}
	for _, p := range csv.Spec.InstallStrategy.StrategySpec.ClusterPermissions {
		accounts[p.ServiceAccountName] = true
	}
	if !accounts["nodeaccess-controller-manager"] || !accounts["nodeaccess-agent"] {
		t.Errorf("cluster permissions for %v; want the manager's and the agents' accounts", accounts)
	}
	if csv.Annotations["operatorframework.io/suggested-namespace"] == "" || !strings.Contains(csv.Annotations["olm.skipRange"], "<"+csv.Spec.Version.String()) {
		t.Error("suggested namespace or skipRange missing")
	}
}

func TestBundleMetadataMatchesTheDockerfile(t *testing.T) {
	root := testenv.RepoRoot()
	data, err := os.ReadFile(filepath.Join(root, "bundle", "metadata", "annotations.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := yaml.Unmarshal(data, &meta); err != nil {
		t.Fatal(err)
	}
	docker, err := os.ReadFile(filepath.Join(root, "bundle.Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{}
	for _, line := range strings.Split(string(docker), "\n") {
		if k, v, ok := strings.Cut(strings.TrimPrefix(line, "LABEL "), "="); ok && strings.HasPrefix(line, "LABEL ") {
			labels[k] = v
		}
	}
	if len(labels) != len(meta.Annotations) {
		t.Fatalf("%d labels, %d annotations", len(labels), len(meta.Annotations))
	}
	for k, v := range meta.Annotations {
		if labels[k] != v {
			t.Errorf("annotation %s=%s, label %q", k, v, labels[k])
		}
	}
	if !strings.HasPrefix(meta.Annotations["operators.operatorframework.io.bundle.channel.default.v1"], "candidate") &&
		!strings.HasPrefix(meta.Annotations["operators.operatorframework.io.bundle.channel.default.v1"], "fast") &&
		!strings.HasPrefix(meta.Annotations["operators.operatorframework.io.bundle.channel.default.v1"], "stable") {
		t.Error("the default channel must be named candidate*, fast* or stable*")
	}

	// Compressed, the bundle stays far under the 1 MiB OLM copies into InstallPlans.
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	files, _ := filepath.Glob(filepath.Join(root, "bundle", "manifests", "*"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		_, _ = zw.Write(data)
	}
	_ = zw.Close()
	if buf.Len() > 1<<20 {
		t.Errorf("compressed bundle is %d bytes", buf.Len())
	}
}

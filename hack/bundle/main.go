// Command bundle writes the OLM bundle (bundle/) from config/: what
// `operator-sdk generate kustomize manifests` and `generate bundle` do, with
// the libraries they use. The hand-written CSV fields stay in
// config/manifests/bases; everything else comes from the kustomize build of
// config/default, config/samples and the flags. The output is deterministic:
// running it twice changes nothing.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/blang/semver/v4"
	"github.com/operator-framework/api/pkg/lib/version"
	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const packageName = "nodeaccess-operator"

type options struct {
	version, channels, defaultChannel, image, replaces, out, dockerfile string
}

func main() {
	var o options
	flag.StringVar(&o.version, "version", "", "Operator version (semver).")
	flag.StringVar(&o.channels, "channels", "candidate", "Comma-separated channels.")
	flag.StringVar(&o.defaultChannel, "default-channel", "candidate", "Default channel.")
	flag.StringVar(&o.image, "image", "", "Operator image (manager and agent).")
	flag.StringVar(&o.replaces, "replaces", "", "CSV name this version replaces, if any.")
	flag.StringVar(&o.out, "out", "bundle", "Output directory.")
	flag.StringVar(&o.dockerfile, "dockerfile", "bundle.Dockerfile", "Where to write the bundle image's Dockerfile.")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bundle:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	v, err := semver.Parse(o.version)
	if err != nil {
		return fmt.Errorf("--version: %w", err)
	}
	if o.image == "" {
		return fmt.Errorf("--image is required")
	}
	objs, err := kustomize("config/default")
	if err != nil {
		return err
	}
	csv, err := readBase()
	if err != nil {
		return err
	}
	manifests, err := fillCSV(csv, objs, o, v)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(o.out, "manifests")); err != nil {
		return err
	}
	for _, dir := range []string{"manifests", "metadata", "tests/scorecard"} {
		if err := os.MkdirAll(filepath.Join(o.out, dir), 0o755); err != nil {
			return err
		}
	}
	csvObj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(csv)
	if err != nil {
		return err
	}
	delete(csvObj, "status")
	unstructured.RemoveNestedField(csvObj, "metadata", "creationTimestamp")
	if err := writeYAML(filepath.Join(o.out, "manifests", packageName+".clusterserviceversion.yaml"), csvObj); err != nil {
		return err
	}
	for _, m := range manifests {
		if err := writeYAML(filepath.Join(o.out, "manifests", fileName(m)), m.Object); err != nil {
			return err
		}
	}
	if err := writeMetadata(o); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(o.out, "tests", "scorecard", "config.yaml"), []byte(scorecardConfig(o.image)), 0o644)
}

// kustomize returns the objects of `kustomize build dir`.
func kustomize(dir string) ([]*unstructured.Unstructured, error) {
	cmd := exec.Command("go", "tool", "kustomize", "build", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w: %s", dir, err, stderr.String())
	}
	return decodeAll(out)
}

func decodeAll(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if err.Error() == "EOF" {
				return objs, nil
			}
			return nil, err
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

func readBase() (*operatorsv1alpha1.ClusterServiceVersion, error) {
	data, err := os.ReadFile("config/manifests/bases/" + packageName + ".clusterserviceversion.yaml")
	if err != nil {
		return nil, err
	}
	csv := &operatorsv1alpha1.ClusterServiceVersion{}
	return csv, yaml.UnmarshalStrict(data, csv)
}

// fillCSV completes the CSV and returns the other objects the bundle carries.
func fillCSV(csv *operatorsv1alpha1.ClusterServiceVersion, objs []*unstructured.Unstructured, o options, v semver.Version) ([]*unstructured.Unstructured, error) {
	csv.Name = fmt.Sprintf("%s.v%s", packageName, v)
	csv.Spec.Version = version.OperatorVersion{Version: v}
	csv.Spec.Replaces = o.replaces
	csv.Annotations["containerImage"] = o.image
	csv.Annotations["olm.skipRange"] = fmt.Sprintf(">=0.0.0 <%s", v)
	csv.Spec.RelatedImages = []operatorsv1alpha1.RelatedImage{{Name: "manager", Image: o.image}, {Name: "agent", Image: o.image}}

	icon, err := os.ReadFile("config/manifests/icon.svg")
	if err != nil {
		return nil, err
	}
	csv.Spec.Icon = []operatorsv1alpha1.Icon{{Data: base64.StdEncoding.EncodeToString(icon), MediaType: "image/svg+xml"}}

	examples, err := samples()
	if err != nil {
		return nil, err
	}
	csv.Annotations["alm-examples"] = examples

	roles := map[string][]rbacv1.PolicyRule{} // "Kind/name" -> rules
	for _, u := range of(objs, "ClusterRole", "Role") {
		var r rbacv1.ClusterRole
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &r); err != nil {
			return nil, err
		}
		roles[u.GetKind()+"/"+u.GetName()] = r.Rules
	}
	bound := map[string]bool{}
	cluster, namespaced := map[string][]rbacv1.PolicyRule{}, map[string][]rbacv1.PolicyRule{}
	for _, u := range of(objs, "ClusterRoleBinding", "RoleBinding") {
		var b rbacv1.RoleBinding
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &b); err != nil {
			return nil, err
		}
		ref := b.RoleRef.Kind + "/" + b.RoleRef.Name
		bound[ref] = true
		for _, s := range b.Subjects {
			if s.Kind != rbacv1.ServiceAccountKind {
				continue
			}
			if u.GetKind() == "ClusterRoleBinding" {
				cluster[s.Name] = append(cluster[s.Name], roles[ref]...)
			} else {
				namespaced[s.Name] = append(namespaced[s.Name], roles[ref]...)
			}
		}
	}
	csv.Spec.InstallStrategy.StrategySpec.ClusterPermissions = permissions(cluster)
	csv.Spec.InstallStrategy.StrategySpec.Permissions = permissions(namespaced)

	deployments := of(objs, "Deployment")
	if len(deployments) != 1 {
		return nil, fmt.Errorf("want one Deployment in config/default, got %d", len(deployments))
	}
	var d appsv1.Deployment
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(deployments[0].Object, &d); err != nil {
		return nil, err
	}
	for i := range d.Spec.Template.Spec.Containers {
		c := &d.Spec.Template.Spec.Containers[i]
		c.Image = o.image
		for j := range c.Env {
			if c.Env[j].Name == "RELATED_IMAGE_AGENT" {
				c.Env[j].Value = o.image
			}
		}
	}
	csv.Spec.InstallStrategy.StrategySpec.DeploymentSpecs = []operatorsv1alpha1.StrategyDeploymentSpec{{
		Name: d.Name, Label: d.Labels, Spec: d.Spec,
	}}

	// What else OLM should create: CRDs, the metrics Service, and the
	// ClusterRoles no operator account is bound to (for teams and monitoring).
	// Accounts, bindings and the Deployment come from the CSV. The agents'
	// ValidatingAdmissionPolicy is not a kind a registry+v1 bundle may carry;
	// README (Install) says how to apply it with OLM.
	var manifests []*unstructured.Unstructured
	for _, u := range objs {
		switch u.GetKind() {
		case "CustomResourceDefinition", "Service":
			manifests = append(manifests, u)
		case "ClusterRole":
			if !bound["ClusterRole/"+u.GetName()] {
				manifests = append(manifests, u)
			}
		}
	}
	for _, m := range manifests {
		unstructured.RemoveNestedField(m.Object, "metadata", "namespace")
		unstructured.RemoveNestedField(m.Object, "metadata", "creationTimestamp")
	}
	return manifests, nil
}

func permissions(bySA map[string][]rbacv1.PolicyRule) []operatorsv1alpha1.StrategyDeploymentPermissions {
	names := make([]string, 0, len(bySA))
	for n := range bySA {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]operatorsv1alpha1.StrategyDeploymentPermissions, 0, len(names))
	for _, n := range names {
		out = append(out, operatorsv1alpha1.StrategyDeploymentPermissions{ServiceAccountName: n, Rules: bySA[n]})
	}
	return out
}

// samples returns the NodeAccess samples (config/samples) and one example of
// each other kind (config/manifests/examples) as the alm-examples JSON.
func samples() (string, error) {
	objs, err := kustomize("config/samples")
	if err != nil {
		return "", err
	}
	files, err := filepath.Glob("config/manifests/examples/*.yaml")
	if err != nil {
		return "", err
	}
	sort.Strings(files)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		more, err := decodeAll(data)
		if err != nil {
			return "", err
		}
		objs = append(objs, more...)
	}
	sort.SliceStable(objs, func(i, j int) bool {
		if objs[i].GetKind() != objs[j].GetKind() {
			return objs[i].GetKind() < objs[j].GetKind()
		}
		return objs[i].GetName() < objs[j].GetName()
	})
	list := make([]map[string]any, 0, len(objs))
	for _, o := range objs {
		list = append(list, o.Object)
	}
	data, err := json.MarshalIndent(list, "", "  ")
	return string(data), err
}

func of(objs []*unstructured.Unstructured, kinds ...string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		for _, k := range kinds {
			if o.GetKind() == k {
				out = append(out, o)
			}
		}
	}
	return out
}

// fileName names a manifest as the Operator SDK does.
func fileName(u *unstructured.Unstructured) string {
	gvk := u.GroupVersionKind()
	if gvk.Kind == "CustomResourceDefinition" {
		parts := strings.SplitN(u.GetName(), ".", 2)
		return parts[1] + "_" + parts[0] + ".yaml"
	}
	group := gvk.Group
	if group != "" {
		group += "_"
	}
	return fmt.Sprintf("%s_%s%s_%s.yaml", u.GetName(), group, gvk.Version, strings.ToLower(gvk.Kind))
}

func writeYAML(path string, obj any) error {
	data, err := yaml.Marshal(obj)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// annotations are the bundle's metadata; bundle.Dockerfile carries the same as labels.
func annotations(o options) [][2]string {
	return [][2]string{
		{"operators.operatorframework.io.bundle.mediatype.v1", "registry+v1"},
		{"operators.operatorframework.io.bundle.manifests.v1", "manifests/"},
		{"operators.operatorframework.io.bundle.metadata.v1", "metadata/"},
		{"operators.operatorframework.io.bundle.package.v1", packageName},
		{"operators.operatorframework.io.bundle.channels.v1", o.channels},
		{"operators.operatorframework.io.bundle.channel.default.v1", o.defaultChannel},
		{"operators.operatorframework.io.test.mediatype.v1", "scorecard+v1"},
		{"operators.operatorframework.io.test.config.v1", "tests/scorecard/"},
	}
}

func writeMetadata(o options) error {
	var meta, docker strings.Builder
	meta.WriteString("annotations:\n")
	docker.WriteString("# Generated by `make bundle`: the bundle image of the OLM bundle in bundle/.\nFROM scratch\n\n")
	for _, a := range annotations(o) {
		fmt.Fprintf(&meta, "  %s: %s\n", a[0], a[1])
		fmt.Fprintf(&docker, "LABEL %s=%s\n", a[0], a[1])
	}
	docker.WriteString("\nCOPY bundle/manifests /manifests/\nCOPY bundle/metadata /metadata/\nCOPY bundle/tests/scorecard /tests/scorecard/\n")
	if err := os.WriteFile(filepath.Join(o.out, "metadata", "annotations.yaml"), []byte(meta.String()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(o.dockerfile, []byte(docker.String()), 0o644)
}

// scorecardConfig runs the built-in basic and OLM suites, then the
// operator's own test from its image (cmd/scorecard): the alm-examples
// become Ready on the cluster and are revoked.
func scorecardConfig(image string) string {
	return `apiVersion: scorecard.operatorframework.io/v1alpha3
kind: Configuration
metadata:
  name: config
stages:
- parallel: true
  tests:
  - entrypoint: [scorecard-test, basic-check-spec]
    image: quay.io/operator-framework/scorecard-test:v1.42.0
    labels: {suite: basic, test: basic-check-spec-test}
  - entrypoint: [scorecard-test, olm-bundle-validation]
    image: quay.io/operator-framework/scorecard-test:v1.42.0
    labels: {suite: olm, test: olm-bundle-validation-test}
  - entrypoint: [scorecard-test, olm-crds-have-validation]
    image: quay.io/operator-framework/scorecard-test:v1.42.0
    labels: {suite: olm, test: olm-crds-have-validation-test}
  - entrypoint: [scorecard-test, olm-crds-have-resources]
    image: quay.io/operator-framework/scorecard-test:v1.42.0
    labels: {suite: olm, test: olm-crds-have-resources-test}
  - entrypoint: [scorecard-test, olm-spec-descriptors]
    image: quay.io/operator-framework/scorecard-test:v1.42.0
    labels: {suite: olm, test: olm-spec-descriptors-test}
  - entrypoint: [scorecard-test, olm-status-descriptors]
    image: quay.io/operator-framework/scorecard-test:v1.42.0
    labels: {suite: olm, test: olm-status-descriptors-test}
- tests:
  - entrypoint: [/nodeaccess-scorecard, examples-become-ready]
    image: ` + image + `
    labels: {suite: nodeaccess, test: examples-become-ready}
`
}

package bundle

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// OLM fails a whole InstallPlan when a bundle object's kind is not served,
// so the bundle carries nothing of the Prometheus operator's: the manager
// installs its alerts and ServiceMonitor itself where their CRDs exist. It
// needs its Role for that, which the CSV grants in the operator's namespace.
func TestBundleCarriesNoMonitoringObjects(t *testing.T) {
	dir := filepath.Join(testenv.RepoRoot(), "bundle", "manifests")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		var obj struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(data, &obj); err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		if strings.HasPrefix(obj.APIVersion, "monitoring.coreos.com/") {
			t.Errorf("%s: a %s of %s in the bundle breaks installs on clusters without the Prometheus operator", e.Name(), obj.Kind, obj.APIVersion)
		}
	}

	csv := load(t).CSV
	granted := map[string][]string{}
	for _, p := range csv.Spec.InstallStrategy.StrategySpec.Permissions {
		for _, r := range p.Rules {
			if slices.Contains(r.APIGroups, "monitoring.coreos.com") {
				for _, res := range r.Resources {
					granted[res] = r.Verbs
				}
			}
		}
	}
	for _, res := range []string{"prometheusrules", "servicemonitors"} {
		for _, verb := range []string{"get", "list", "watch", "create", "patch"} {
			if !slices.Contains(granted[res], verb) {
				t.Errorf("the CSV's namespaced permissions do not grant %s on %s: %v", verb, res, granted[res])
			}
		}
		if slices.Contains(granted[res], "delete") || slices.Contains(granted[res], "*") {
			t.Errorf("%s: more than the manager needs: %v", res, granted[res])
		}
	}
	for _, p := range csv.Spec.InstallStrategy.StrategySpec.ClusterPermissions {
		for _, r := range p.Rules {
			if slices.Contains(r.APIGroups, "monitoring.coreos.com") || slices.Contains(r.Resources, "customresourcedefinitions") {
				t.Errorf("cluster-wide permission %+v for %s: the manager needs it only in its namespace", r, p.ServiceAccountName)
			}
		}
	}
}

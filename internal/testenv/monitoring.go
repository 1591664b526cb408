package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// monitoringTypes is the package of the Prometheus operator's v1 API types,
// a dependency of this module.
const monitoringTypes = "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"

// MonitoringCRDs writes the Prometheus operator's PrometheusRule and
// ServiceMonitor CRDs into dir and returns their paths. They are generated
// by controller-gen (a tool of this module) from the API types of the
// version the manager builds its objects with, in the Go module cache, as
// the Prometheus operator generates its own; its repository's module, which
// ships them ready-made, is not served by the module proxy at that version.
func MonitoringCRDs(dir string) ([]string, error) {
	out := filepath.Join(dir, "all")
	cmd := exec.Command("go", "tool", "controller-gen", "crd", "paths="+monitoringTypes, "output:crd:dir="+out)
	cmd.Dir = RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("generating the monitoring CRDs: %w: %s", err, b)
	}
	var paths []string
	for _, name := range []string{"monitoring.coreos.com_prometheusrules.yaml", "monitoring.coreos.com_servicemonitors.yaml"} {
		p := filepath.Join(out, name)
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("finding the generated CRD: %w", err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// Promtool is the path of promtool in bin/k8s (KUBEBUILDER_ASSETS), which
// `make k8s-bin` builds from Go modules.
func Promtool() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = filepath.Join(RepoRoot(), "bin", "k8s")
	}
	p := filepath.Join(dir, "promtool")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("finding promtool (run `make k8s-bin`): %w", err)
	}
	return p, nil
}

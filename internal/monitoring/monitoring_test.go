package monitoring_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/nodeaccess/nodeaccess-operator/internal/monitoring"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// promtool runs promtool in dir and fails the test with its output.
func promtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	bin, err := testenv.Promtool()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// writeRules writes the manager's rules, as it applies them, into dir.
func writeRules(t *testing.T, dir string) {
	t.Helper()
	rules, err := monitoring.RuleFile()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The alerts behave as testdata/alerts_test.yaml says, on the rules the
// manager applies: promtool checks them, then evaluates them on the series
// that file writes.
func TestAlerts(t *testing.T) {
	dir := t.TempDir()
	writeRules(t, dir)
	spec, err := os.ReadFile(filepath.Join("testdata", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), spec, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Log(promtool(t, dir, "check", "rules", "rules.yaml"))
	t.Log(promtool(t, dir, "test", "rules", "alerts_test.yaml"))
}

// promtoolTests is the part of a promtool test file this test reads.
type promtoolTests struct {
	Tests []struct {
		AlertRuleTest []struct {
			Alertname string `json:"alertname"`
			ExpAlerts []any  `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// Every alert is tested where it must fire and where it must not, has a
// severity, a summary, a description and a runbook that docs/usage.md has.
func TestEveryAlertIsTestedAndDocumented(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var spec promtoolTests
	if err := yaml.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range spec.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				silent[a.Alertname] = true
			}
		}
	}
	usage, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "usage.md"))
	if err != nil {
		t.Fatal(err)
	}
	headings := regexp.MustCompile(`(?m)^#+ (\S+)\s*$`).FindAllStringSubmatch(string(usage), -1)
	severities := []string{monitoring.SeverityInfo, monitoring.SeverityWarning, monitoring.SeverityCritical}
	n := 0
	for _, g := range monitoring.Groups() {
		for _, r := range g.Rules {
			n++
			if !fires[r.Alert] || !silent[r.Alert] {
				t.Errorf("%s: tested firing %v, not firing %v; want both", r.Alert, fires[r.Alert], silent[r.Alert])
			}
			if !slices.Contains(severities, r.Labels["severity"]) {
				t.Errorf("%s: severity %q", r.Alert, r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s", r.Alert, a)
				}
			}
			if want := monitoring.RunbookBase + "#" + strings.ToLower(r.Alert); r.Annotations["runbook_url"] != want {
				t.Errorf("%s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
			}
			if !slices.ContainsFunc(headings, func(h []string) bool { return h[1] == r.Alert }) {
				t.Errorf("%s: docs/usage.md has no heading of that name for the runbook", r.Alert)
			}
		}
	}
	if n < 9 {
		t.Fatalf("%d alerts", n)
	}
}

// The ServiceMonitor scrapes the metrics Service the project ships, on its
// HTTPS port, presenting Prometheus's service account token.
func TestServiceMonitorSelectsTheMetricsService(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "install", "metrics_service.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var svc corev1.Service
	if err := yaml.Unmarshal(data, &svc); err != nil {
		t.Fatal(err)
	}
	sm := monitoring.ServiceMonitor(monitoring.Options{Namespace: "ns", Labels: map[string]string{"release": "x"}})
	for k, v := range sm.Spec.Selector.MatchLabels {
		if svc.Labels[k] != v {
			t.Errorf("the ServiceMonitor selects %s=%s; the Service has %q", k, v, svc.Labels[k])
		}
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("endpoints %+v", sm.Spec.Endpoints)
	}
	ep := sm.Spec.Endpoints[0]
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
		t.Errorf("port %q is not a port of the Service %+v", ep.Port, svc.Spec.Ports)
	}
	if ep.Scheme == nil || ep.Scheme.String() != "https" || ep.BearerTokenFile != monitoring.TokenFile {
		t.Errorf("endpoint %+v: want HTTPS with the service account token", ep)
	}
	if sm.Namespace != "ns" || sm.Labels["release"] != "x" || monitoring.PrometheusRule(monitoring.Options{Labels: map[string]string{"release": "x"}}).Labels["release"] != "x" {
		t.Errorf("options not applied: %+v", sm.ObjectMeta)
	}
}

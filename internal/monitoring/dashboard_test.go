package monitoring_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/nodeaccess/nodeaccess-operator/internal/monitoring"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// dashboardFile is the Grafana dashboard the project ships.
var dashboardFile = filepath.Join(testenv.RepoRoot(), "config", "grafana", "nodeaccess-operator.json")

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int                      `json:"id"`
	Title      string                   `json:"title"`
	Type       string                   `json:"type"`
	Datasource map[string]string        `json:"datasource"`
	GridPos    struct{ X, Y, W, H int } `json:"gridPos"`
	Targets    []struct {
		RefID      string            `json:"refId"`
		Expr       string            `json:"expr"`
		Datasource map[string]string `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s is not a dashboard: %v", dashboardFile, err)
	}
	return d
}

// all is every panel, those inside rows too.
func (d dashboard) all() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// promQL turns a panel's expression into PromQL: Grafana's variables take
// the values they have with every NodeAccess shown.
func promQL(expr string) string {
	return strings.NewReplacer("$__rate_interval", "5m", "${nodeaccess}", ".*", "$nodeaccess", ".*").Replace(expr)
}

// exportedMetrics are the names of the metrics the manager defines, read
// from its source.
func exportedMetrics(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "controllers", "metrics.go"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile(`Name:\s+"(nodeaccess_[a-z_]+)"`).FindAllStringSubmatch(string(src), -1) {
		names = append(names, m[1])
	}
	if len(names) < 10 {
		t.Fatalf("found %d metrics in controllers/metrics.go", len(names))
	}
	return names
}

// usedMetrics are the nodeaccess_ metric names an expression reads, the
// series suffixes of a histogram removed.
func usedMetrics(expr string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`nodeaccess_[a-z_]+`).FindAllString(expr, -1) {
		if !strings.HasSuffix(m, "_total") {
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				m = strings.TrimSuffix(m, suffix)
			}
		}
		out = append(out, m)
	}
	return out
}

// The dashboard is well-formed: unique panel ids, every query on the data
// source variable, panels inside the 24-column grid, every expression
// valid PromQL (promtool checks them), every metric it reads one the
// manager exports, and every metric the manager exports shown.
func TestDashboardIsValidAndShowsEveryMetric(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Fatalf("uid %q, title %q", d.UID, d.Title)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" || vars["nodeaccess"] != "query" {
		t.Fatalf("variables %v, want datasource and nodeaccess", vars)
	}
	exported := exportedMetrics(t)
	shown := map[string]bool{}
	ids := map[int]bool{}
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	for _, p := range d.all() {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource["uid"] != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: data source %v, %d queries", p.Title, p.Datasource, len(p.Targets))
		}
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
		}
		for _, tg := range p.Targets {
			if tg.RefID == "" || tg.Datasource["uid"] != "${datasource}" {
				t.Errorf("panel %q: query %+v", p.Title, tg)
			}
			for _, m := range usedMetrics(tg.Expr) {
				if !slices.Contains(exported, m) {
					t.Errorf("panel %q reads %s, which the manager does not export", p.Title, m)
				}
				shown[m] = true
			}
			rules = append(rules, rule{Record: fmt.Sprintf("dashboard:panel%d:%s", p.ID, strings.ToLower(tg.RefID)), Expr: promQL(tg.Expr)})
		}
	}
	for _, m := range exported {
		if !shown[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
	// The alerts read only exported metrics too.
	for _, g := range monitoring.Groups() {
		for _, r := range g.Rules {
			for _, m := range usedMetrics(r.Expr.String()) {
				if !slices.Contains(exported, m) {
					t.Errorf("alert %s reads %s, which the manager does not export", r.Alert, m)
				}
			}
		}
	}
	data, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard.yaml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	promtool(t, dir, "check", "rules", "dashboard.yaml")
}

// panelExpr is the PromQL of one query of the panel titled title.
func panelExpr(t *testing.T, d dashboard, title, refID string) string {
	t.Helper()
	for _, p := range d.all() {
		if p.Title != title {
			continue
		}
		for _, tg := range p.Targets {
			if tg.RefID == refID {
				return promQL(tg.Expr)
			}
		}
	}
	t.Fatalf("no query %s in a panel %q", refID, title)
	return ""
}

// The panels show what their titles say: promtool evaluates their queries
// on the series of a small cluster, scraped from a manager pod, and the
// results are what a reader of each panel must see.
func TestDashboardPanelsOnSeries(t *testing.T) {
	d := readDashboard(t)
	series := map[string]string{
		`nodeaccess_grants{pod="m-1"}`: "3x20",
		// team-a waits for a node, team-b is suspended (not counted as
		// not Ready), team-c has refused keys.
		`nodeaccess_nodes_selected{nodeaccess="team-a",pod="m-1"}`:                                  "3x20",
		`nodeaccess_nodes_in_sync{nodeaccess="team-a",pod="m-1"}`:                                   "1x20",
		`nodeaccess_nodes_selected{nodeaccess="team-b",pod="m-1"}`:                                  "2x20",
		`nodeaccess_nodes_in_sync{nodeaccess="team-b",pod="m-1"}`:                                   "2x20",
		`nodeaccess_condition{nodeaccess="team-a",type="Ready",reason="WaitingForNodes",pod="m-1"}`: "0x20",
		`nodeaccess_condition{nodeaccess="team-a",type="Degraded",reason="AsExpected",pod="m-1"}`:   "0x20",
		`nodeaccess_condition{nodeaccess="team-b",type="Ready",reason="Suspended",pod="m-1"}`:       "0x20",
		`nodeaccess_condition{nodeaccess="team-b",type="Degraded",reason="AsExpected",pod="m-1"}`:   "0x20",
		`nodeaccess_condition{nodeaccess="team-c",type="Ready",reason="KeysRefused",pod="m-1"}`:     "0x20",
		`nodeaccess_condition{nodeaccess="team-c",type="Degraded",reason="KeysRefused",pod="m-1"}`:  "1x20",
		`nodeaccess_agents_desired{pod="m-1"}`:                                                      "5x20",
		`nodeaccess_agents_ready{pod="m-1"}`:                                                        "4x20",
		`nodeaccess_nodes_without_report{reason="NoReport",pod="m-1"}`:                              "1x20",
		`nodeaccess_nodes_without_report{reason="StaleReport",pod="m-1"}`:                           "2x20",
		`nodeaccess_next_expiry_timestamp_seconds{nodeaccess="team-a",pod="m-1"}`:                   "4200x20",
		`nodeaccess_expiry_timestamp_seconds{nodeaccess="team-a",pod="m-1"}`:                        "90600x20",
		`nodeaccess_revocations_unconfirmed_total{pod="m-1"}`:                                       "0x5 1x15",
		// 60 changes a minute, each propagated in 0.5 to 1 s.
		`nodeaccess_propagation_seconds_bucket{le="0.5",pod="m-1"}`:  "0x20",
		`nodeaccess_propagation_seconds_bucket{le="1",pod="m-1"}`:    "0+60x20",
		`nodeaccess_propagation_seconds_bucket{le="+Inf",pod="m-1"}`: "0+60x20",
	}
	// Evaluated at 10m: time() is 600.
	cases := []struct {
		title, refID string
		want         map[string]float64 // labels of the result -> value
	}{
		{"Grants", "A", map[string]float64{`{}`: 3}},
		{"Not Ready", "A", map[string]float64{`{}`: 2}},
		{"Degraded", "A", map[string]float64{`{}`: 1}},
		{"Agents ready / desired", "A", map[string]float64{`{}`: 4}},
		{"Agents ready / desired", "B", map[string]float64{`{}`: 5}},
		{"Nodes without report", "A", map[string]float64{`{}`: 3}},
		{"Revocations released unconfirmed (24 h)", "A", map[string]float64{`{}`: 1}},
		{"Nodes selected and in sync", "A", map[string]float64{`{nodeaccess="team-a"}`: 3, `{nodeaccess="team-b"}`: 2}},
		{"Nodes selected and in sync", "B", map[string]float64{`{nodeaccess="team-a"}`: 1, `{nodeaccess="team-b"}`: 2}},
		{"Conditions", "A", map[string]float64{
			`{nodeaccess="team-a",reason="WaitingForNodes",type="Ready"}`: 0, `{nodeaccess="team-a",reason="AsExpected",type="Degraded"}`: 0,
			`{nodeaccess="team-b",reason="Suspended",type="Ready"}`: 0, `{nodeaccess="team-b",reason="AsExpected",type="Degraded"}`: 0,
			`{nodeaccess="team-c",reason="KeysRefused",type="Ready"}`: 0, `{nodeaccess="team-c",reason="KeysRefused",type="Degraded"}`: 1,
		}},
		{"Next expiries", "A", map[string]float64{`{nodeaccess="team-a"}`: 3600}},
		{"Next expiries", "B", map[string]float64{`{nodeaccess="team-a"}`: 90000}},
		{"Agents", "C", map[string]float64{`{reason="NoReport"}`: 1, `{reason="StaleReport"}`: 2}},
		{"Propagation latency", "A", map[string]float64{`{}`: 0.75}},
		{"Propagation latency", "B", map[string]float64{`{}`: 0.95}},
		{"Propagation latency", "C", map[string]float64{`{}`: 0.995}},
		{"NodeAccess not Ready and Degraded", "A", map[string]float64{`{nodeaccess="team-a"}`: 0, `{nodeaccess="team-c"}`: 0}},
		{"NodeAccess not Ready and Degraded", "B", map[string]float64{`{nodeaccess="team-c"}`: 1}},
		{"Revocations released unconfirmed", "A", map[string]float64{`{}`: 1}},
	}
	type expSample struct {
		Labels string  `json:"labels"`
		Value  float64 `json:"value"`
	}
	var tests []map[string]any
	for _, c := range cases {
		var exp []expSample
		keys := make([]string, 0, len(c.want))
		for k := range c.want {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			exp = append(exp, expSample{Labels: k, Value: c.want[k]})
		}
		tests = append(tests, map[string]any{"expr": panelExpr(t, d, c.title, c.refID), "eval_time": "10m", "exp_samples": exp})
	}
	var input []map[string]string
	for s, v := range series {
		input = append(input, map[string]string{"series": s, "values": v})
	}
	spec := map[string]any{
		"evaluation_interval": "1m",
		"tests":               []any{map[string]any{"interval": "1m", "input_series": input, "promql_expr_test": tests}},
	}
	data, err := yaml.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "panels_test.yaml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	promtool(t, dir, "test", "rules", "panels_test.yaml")
}

package plugin_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/plugin"
)

// who and status read what the manager rendered and the agents reported:
// which keys reach a node, which nodes a grant selects, which are in sync.
func TestWhoAndStatus(t *testing.T) {
	a := createNode(t, "who-a", map[string]string{"pool": "who"}, "")
	b := createNode(t, "who-b", map[string]string{"pool": "who"}, "")
	c := createNode(t, "who-c", map[string]string{"pool": "other"}, "")
	expires := metav1.NewTime(time.Now().Add(48 * time.Hour).Truncate(time.Second))
	aliceKey, bobKey := key(t, aliceData, "alice@laptop", nil), key(t, bobData, "bob", &expires)
	_, r := createGrant(t, "team-who", map[string]string{"pool": "who"},
		nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{aliceKey}},
		nav1.RenderedUser{Name: "deploy", Keys: []nav1.RenderedKey{bobKey}})
	// who-a applied this version; who-b an older one; who-c, not
	// selected, failed to remove the keys.
	writeReport(t, a, applied(r))
	old := applied(r)
	old.Hash, old.Generation = "older", 0
	writeReport(t, b, old)
	writeReport(t, c, nav1.GrantReport{Name: "team-who", UID: r.Spec.NodeAccessUID, Reason: "RevocationFailed", Message: "keys still held by [alice]"})

	res := mustRun(t, "who", "who-a")
	t.Logf("kubectl nodeaccess who who-a:\n%s", res.stdout)
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NODEACCESS") {
		t.Fatalf("who who-a printed:\n%s", res.stdout)
	}
	for i, want := range [][]string{
		{"team-who", "alice", "alice@laptop", aliceKey.Fingerprint, "never", "True"},
		{"team-who", "deploy", "bob", bobKey.Fingerprint, expires.UTC().Format(time.RFC3339), "True"},
	} {
		if got := strings.Fields(lines[i+1]); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("row %d: %q, want %q", i, got, want)
		}
	}
	if res.stderr != "" {
		t.Errorf("who who-a warned: %s", res.stderr)
	}

	res = mustRun(t, "who", "who-b", "-o", "wide")
	if !strings.Contains(res.stdout, "Pending") || !strings.Contains(res.stdout, plugin.ReasonOlderVersionApplied) || !strings.Contains(res.stdout, "ssh-ed25519") {
		t.Errorf("who who-b -o wide:\n%s", res.stdout)
	}

	// who-c: nothing reaches it, but it still holds the keys.
	res = mustRun(t, "who", "who-c")
	if res.stdout != "" || !strings.Contains(res.stderr, "No NodeAccess grants keys on node who-c.") ||
		!strings.Contains(res.stderr, "Warning: NodeAccess team-who: the node reports RevocationFailed: keys still held by [alice]") {
		t.Errorf("who who-c: stdout %q stderr %q", res.stdout, res.stderr)
	}

	// JSON for scripts.
	res = mustRun(t, "who", "who-a", "-o", "json")
	var who plugin.WhoResult
	must(t, json.Unmarshal([]byte(res.stdout), &who))
	if who.Node != "who-a" || !who.Reported || who.Ready != "True" || len(who.Keys) != 2 || who.Keys[0].Applied != "True" || who.Keys[1].ExpiresAt == nil {
		t.Errorf("who -o json: %+v", who)
	}

	// Errors as kubectl prints them, exit 1.
	res = run(t, "who", "no-such-node")
	if res.code != 1 || strings.TrimSpace(res.stderr) != `Error from server (NotFound): nodes "no-such-node" not found` {
		t.Errorf("who no-such-node: exit %d, stderr %q", res.code, res.stderr)
	}
	if res = run(t, "who"); res.code != 1 || !strings.Contains(res.stderr, "needs NODE") {
		t.Errorf("who without a node: exit %d, stderr %q", res.code, res.stderr)
	}
	if res = run(t, "who", "who-a", "-o", "xml"); res.code != 1 || !strings.Contains(res.stderr, `output format "xml"`) {
		t.Errorf("who -o xml: exit %d, stderr %q", res.code, res.stderr)
	}

	// status: per selected node, in sync or why not; and who-c still holding.
	res = mustRun(t, "status", "team-who")
	t.Logf("kubectl nodeaccess status team-who:\n%s", res.stdout)
	if !strings.Contains(res.stdout, "1 of 2 selected nodes in sync") {
		t.Errorf("status summary:\n%s", res.stdout)
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(res.stdout, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && strings.HasPrefix(f[0], "who-") {
			rows[f[0]] = f
		}
	}
	if r := rows["who-a"]; len(r) < 3 || r[1] != "true" || r[2] != plugin.ReasonApplied {
		t.Errorf("status row of who-a: %v\n%s", r, res.stdout)
	}
	if r := rows["who-b"]; len(r) < 3 || r[1] != "false" || r[2] != plugin.ReasonOlderVersionApplied {
		t.Errorf("status row of who-b: %v\n%s", r, res.stdout)
	}
	if r := rows["who-c"]; len(r) < 3 || r[1] != "false" || r[2] != plugin.ReasonStillHeld || !strings.Contains(strings.Join(r, " "), "RevocationFailed") {
		t.Errorf("status row of who-c: %v\n%s", r, res.stdout)
	}

	res = mustRun(t, "status", "team-who", "-o", "yaml")
	var st plugin.StatusResult
	must(t, yaml.Unmarshal([]byte(res.stdout), &st))
	if st.SelectedNodes != 2 || st.NodesInSync != 1 || len(st.Nodes) != 3 || !st.Nodes[0].InSync || st.Nodes[2].Selected {
		t.Errorf("status -o yaml: %+v", st)
	}
	if res = run(t, "status", "nope"); res.code != 1 || !strings.Contains(res.stderr, `Error from server (NotFound): nodeaccesses.nodeaccess.io "nope" not found`) {
		t.Errorf("status nope: exit %d, stderr %q", res.code, res.stderr)
	}
}

package plugin_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/plugin"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

const finalizer = "nodeaccess.io/revoke-keys"

// revoke --wait returns when the object is gone and no node holds its
// keys, naming the stragglers while it waits; it fails naming them when
// they never confirm.
func TestRevokeWait(t *testing.T) {
	ctx := context.Background()
	a := createNode(t, "revoke-a", map[string]string{"pool": "revoke"}, "")
	b := createNode(t, "revoke-b", map[string]string{"pool": "revoke"}, "")
	na, r := createGrant(t, "team-revoke", map[string]string{"pool": "revoke"}, nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{key(t, aliceData, "alice", nil)}})
	// The manager's finalizer holds the object until the nodes confirm.
	na.Finalizers = []string{finalizer}
	must(t, k8sClient.Update(ctx, na))
	writeReport(t, a, applied(r))
	writeReport(t, b, nav1.GrantReport{Name: "team-revoke", UID: string(na.UID), Reason: "RevocationFailed", Message: "keys still held by [alice]"})

	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- plugin.Run(ctx, []string{"revoke", "team-revoke", "--wait", "--timeout", "1m", "--kubeconfig", kubeconfig},
			genericiooptions.IOStreams{In: strings.NewReader(""), Out: &stdout, ErrOut: &stderr})
	}()
	testenv.Eventually(t, 20*time.Second, "revoke names both stragglers", func() error {
		if !strings.Contains(stderr.String(), "Waiting for 2 nodes to remove the keys: revoke-a; revoke-b (RevocationFailed: keys still held by [alice])") {
			return fmt.Errorf("stderr %q", stderr.String())
		}
		return nil
	})
	if !strings.Contains(stdout.String(), `nodeaccess.nodeaccess.io "team-revoke" deleted`) {
		t.Errorf("stdout %q", stdout.String())
	}
	// revoke-a's agent removes the keys; the other is still waited for.
	writeReport(t, a)
	testenv.Eventually(t, 20*time.Second, "revoke names the last straggler", func() error {
		if !strings.Contains(stderr.String(), "Waiting for 1 nodes to remove the keys: revoke-b (RevocationFailed") {
			return fmt.Errorf("stderr %q", stderr.String())
		}
		return nil
	})
	select {
	case code := <-done:
		t.Fatalf("revoke returned %d while revoke-b still held the keys", code)
	default:
	}
	// revoke-b confirms, then the manager lets the object go.
	writeReport(t, b)
	must(t, k8sClient.Get(ctx, client.ObjectKey{Name: na.Name}, na))
	na.Finalizers = nil
	must(t, k8sClient.Update(ctx, na))
	select {
	case code := <-done:
		if code != 0 || !strings.Contains(stdout.String(), "NodeAccess team-revoke revoked: no node holds its keys") {
			t.Fatalf("revoke exit %d\nstdout %s\nstderr %s", code, stdout.String(), stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("revoke --wait did not return after every node confirmed")
	}

	// A node that never confirms: --wait times out naming it, exit 1.
	na2, _ := createGrant(t, "team-stuck", map[string]string{"pool": "revoke"}, nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{key(t, aliceData, "alice", nil)}})
	writeReport(t, b, nav1.GrantReport{Name: "team-stuck", UID: string(na2.UID), Reason: "RevocationFailed", Message: "keys still held by [alice]"})
	res := run(t, "revoke", "team-stuck", "--wait", "--timeout", "2s")
	if res.code != 1 || !strings.Contains(res.stderr, "error: timed out after 2s: 1 nodes still hold the keys of NodeAccess team-stuck: revoke-b (RevocationFailed") {
		t.Errorf("revoke of a stuck grant: exit %d, stderr %q", res.code, res.stderr)
	}
	if res = run(t, "revoke", "team-none"); res.code != 1 || !strings.Contains(res.stderr, `Error from server (NotFound): nodeaccesses.nodeaccess.io "team-none" not found`) {
		t.Errorf("revoke of nothing: exit %d, stderr %q", res.code, res.stderr)
	}
}

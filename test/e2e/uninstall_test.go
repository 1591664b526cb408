package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// revokeAll runs hack/revoke-all.sh against the cluster, as `make undeploy`
// and the OLM uninstall runbook do, and returns its exit code and output.
func revokeAll(t *testing.T) (int, string) {
	t.Helper()
	k8sBin := os.Getenv("KUBEBUILDER_ASSETS")
	if k8sBin == "" {
		k8sBin = filepath.Join(testenv.RepoRoot(), "bin", "k8s")
	}
	cmd := exec.Command(filepath.Join(testenv.RepoRoot(), "hack", "revoke-all.sh"))
	cmd.Env = append(os.Environ(), "KUBECTL="+filepath.Join(k8sBin, "kubectl"), "KUBECONFIG="+cluster.Kubeconfig, "TIMEOUT=2m")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if exit, ok := err.(*exec.ExitError); ok {
		return exit.ExitCode(), out.String()
	}
	must(t, err)
	return 0, out.String()
}

// Uninstalling begins by revoking every grant, while the operator still
// runs: every NodeAccess is deleted and released only once the nodes proved
// its keys gone. A revocation no node could prove is named, and the script
// fails, rather than the uninstall leaving keys behind unannounced.
func TestRevokeAllBeforeUninstall(t *testing.T) {
	a, b := newKey(t, "a"), newKey(t, "b")
	create(t, nodeAccess("uninstall-a", map[string]string{"pool": "a"}, a))
	create(t, nodeAccess("uninstall-b", map[string]string{"pool": "b"}, b))
	for _, n := range []string{"pool-a-1", "pool-a-2"} {
		testenv.Eventually(t, timeout, "key on "+n, holds(n, a))
	}
	testenv.Eventually(t, timeout, "key on pool-b-1", holds("pool-b-1", b))

	code, out := revokeAll(t)
	if code != 0 || !strings.Contains(out, "every node proved every key removed") {
		t.Fatalf("revoke-all exited %d:\n%s", code, out)
	}
	for n := range hosts {
		must(t, holds(n)())
	}
	var left nav1.NodeAccessList
	must(t, k8s.List(context.Background(), &left))
	if len(left.Items) != 0 {
		t.Fatalf("%d NodeAccess objects left", len(left.Items))
	}

	// One node cannot read alice's file: the revocation is not proven there.
	c := newKey(t, "c")
	create(t, nodeAccess("uninstall-c", map[string]string{"pool": "a"}, c))
	testenv.Eventually(t, timeout, "key on pool-a-1", holds("pool-a-1", c))
	home := filepath.Join(hosts["pool-a-1"].Root, "home", "alice")
	must(t, os.Chmod(home, 0o775))
	t.Cleanup(func() { _ = os.Chmod(home, 0o755) })
	started := time.Now()
	code, out = revokeAll(t)
	if code == 0 || !strings.Contains(out, "uninstall-c") || !strings.Contains(out, "pool-a-1") {
		t.Fatalf("revoke-all must fail naming uninstall-c and pool-a-1; exited %d:\n%s", code, out)
	}
	t.Logf("revoke-all reported the unconfirmed revocation after %s", time.Since(started).Round(time.Second))
	must(t, holds("pool-a-2")())
	must(t, os.Chmod(home, 0o755))
	testenv.Eventually(t, timeout, "the agent removes the key once it can", holds("pool-a-1"))
}

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// The agent's pod mounts the host's /etc/passwd as a single file, which
// keeps the inode it was given: an account useradd creates (it renames a
// new file into place) would never be seen. The agent notices that its file
// was replaced, stops cleanly, and its restart (the kubelet's) reads the new
// one. Here the single-file mount is a real bind mount in a mount namespace
// of the agent's own, as the container runtime makes it, and the test
// restarts the agent as the kubelet would.
func TestAccountAddedByRenameIsServed(t *testing.T) {
	ctx := context.Background()
	const node = "passwd-node"
	obj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{"pool": node},
		Annotations: map[string]string{localcluster.KwokAnnotation: "fake"}}}
	must(t, k8s.Create(ctx, obj))
	t.Cleanup(func() { _ = k8s.Delete(ctx, obj) })
	h := testenv.NewHost(t, alice)
	hosts[node] = h
	t.Cleanup(func() { delete(hosts, node) })
	// The host's own /etc/passwd, and the agent's view of it through a bind mount.
	hostPasswd := filepath.Join(t.TempDir(), "passwd")
	data, err := os.ReadFile(filepath.Join(h.Root, "etc", "passwd"))
	must(t, err)
	must(t, os.WriteFile(hostPasswd, data, 0o644))
	start := func(name string) *localcluster.Process {
		p, err := cluster.StartProcess(filepath.Join(workDir, "logs"), name, "unshare", "--mount", "--propagation", "private",
			"sh", "-c", fmt.Sprintf(`mount --bind "%s" "%s" && exec "$0" "$@"`, hostPasswd, filepath.Join(h.Root, "etc", "passwd")),
			filepath.Join(binDir, "agent"), "--node-name="+node, "--namespace="+namespace, "--host-root="+h.Root,
			"--kubeconfig="+cluster.Kubeconfig, "--resync=5s")
		must(t, err)
		t.Cleanup(func() { p.Stop(syscall.SIGTERM) })
		return p
	}
	first := start("agent-passwd-1")

	k := newKey(t, "carol")
	na := nodeAccess("new-account", map[string]string{"pool": node}, k)
	na.Spec.Users[0].Name = "carol"
	create(t, na)
	testenv.Eventually(t, timeout, "carol not found yet", func() error {
		r := &nav1.NodeAccessReport{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: node}, r); err != nil {
			return err
		}
		for _, e := range r.Status.AccountErrors {
			if e.User == "carol" && e.Reason == nav1.UserNotFoundReason {
				return nil
			}
		}
		return fmt.Errorf("account errors %+v", r.Status.AccountErrors)
	})

	// useradd: carol's home, then a new passwd renamed over the old one.
	home := filepath.Join(h.Root, "home", "carol")
	must(t, os.MkdirAll(home, 0o755))
	must(t, os.Chown(home, 1003, 1003))
	tmp := hostPasswd + ".new"
	must(t, os.WriteFile(tmp, append(data, "carol:x:1003:1003::/home/carol:/bin/sh\n"...), 0o644))
	replaced := time.Now()
	must(t, os.Rename(tmp, hostPasswd))

	testenv.Eventually(t, timeout, "the agent stopping to read the new file", func() error {
		if !first.Exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	stopped := time.Since(replaced)
	log, err := os.ReadFile(filepath.Join(workDir, "logs", "agent-passwd-1.log"))
	must(t, err)
	if !strings.Contains(string(log), "Restarting to read the node's new /etc/passwd") {
		t.Fatalf("the agent did not say why it stopped:\n%s", log)
	}
	start("agent-passwd-2") // the kubelet restarts the container: a new mount of the new file
	testenv.Eventually(t, timeout, "carol's key written", func() error {
		if got := h.ManagedKeys("carol"); len(got) != 1 || got[0] != k.blob {
			return fmt.Errorf("carol holds %v", got)
		}
		return nil
	})
	t.Logf("the agent stopped %s after the rename; carol served %s after it", stopped.Round(time.Millisecond), time.Since(replaced).Round(time.Millisecond))
}

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// login tries one ssh login as alice with the private key, and says
// whether sshd let it in.
func login(sshd *testenv.SSHD, key string) bool {
	cmd := exec.Command("ssh", "-i", key, "-p", strconv.Itoa(sshd.Port), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=5", "alice@127.0.0.1", "true")
	return cmd.Run() == nil
}

// userKey makes a key pair with ssh-keygen and returns the private key's
// path and the public key line.
func userKey(t *testing.T, comment string) (string, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(path + ".pub")
	must(t, err)
	return path, strings.TrimSpace(string(pub))
}

// An expiring key stops working at its instant even with the agent frozen:
// the agent learnt from the node's sshd banner that it understands
// expiry-time in UTC, and wrote it on the key's line, so sshd itself refuses
// the key from that second on. The node's report says so.
func TestSSHDEnforcesExpiryWithTheAgentFrozen(t *testing.T) {
	ctx := context.Background()
	const node = "sshd-expiry"
	obj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{"pool": node},
		Annotations: map[string]string{localcluster.KwokAnnotation: "fake"}}}
	must(t, k8s.Create(ctx, obj))
	t.Cleanup(func() { _ = k8s.Delete(ctx, obj) })
	h := testenv.NewHost(t, alice)
	hosts[node] = h
	t.Cleanup(func() { delete(hosts, node) })
	sshd := testenv.StartSSHD(t, testenv.SSHDOptions{HostRoot: h.Root})
	agent, err := cluster.StartProcess(filepath.Join(workDir, "logs"), "agent-"+node, filepath.Join(binDir, "agent"), "--node-name="+node,
		"--namespace="+namespace, "--host-root="+h.Root, "--kubeconfig="+cluster.Kubeconfig, "--resync=5s",
		"--sshd-host=127.0.0.1", "--sshd-port="+strconv.Itoa(sshd.Port))
	must(t, err)
	t.Cleanup(func() { _ = agent.Signal(syscall.SIGCONT); agent.Stop(syscall.SIGTERM) })
	testenv.Eventually(t, timeout, "the report says sshd enforces expiry", func() error {
		r := &nav1.NodeAccessReport{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: node}, r); err != nil {
			return err
		}
		if r.Status.ExpiryEnforcedBy != nav1.ExpiryBySSHDAndAgent {
			return fmt.Errorf("expiryEnforcedBy %q (sshd %+v)", r.Status.ExpiryEnforcedBy, r.Status.SSHD)
		}
		return nil
	})

	private, public := userKey(t, "alice@laptop")
	end := metav1.NewTime(time.Now().Add(10 * time.Second).Truncate(time.Second))
	na := nodeAccess("sshd-expiry", map[string]string{"pool": node})
	na.Spec.Users[0].Keys = []nav1.AuthorizedKey{{Key: public, ExpiresAt: &end}}
	create(t, na)
	// sshd refuses once the second the option names has passed: the last
	// second before the instant.
	want := `expiry-time="` + end.UTC().Add(-time.Second).Format("20060102150405") + `Z" `
	testenv.Eventually(t, timeout, "the key written with expiry-time", func() error {
		if !strings.Contains(h.Read("alice"), want) {
			return fmt.Errorf("file:\n%s", h.Read("alice"))
		}
		return nil
	})
	if !login(sshd, private) {
		t.Fatalf("the granted key is refused before its expiry; sshd log:\n%s", sshd.Log())
	}

	// Freeze the agent before the instant, and keep logging in across it.
	must(t, agent.Signal(syscall.SIGSTOP))
	var lastAccepted time.Time
	refusedAfter := 0
	for time.Now().Before(end.Add(3 * time.Second)) {
		started := time.Now()
		ok := login(sshd, private)
		switch {
		case ok && !started.Before(end.Time):
			t.Fatalf("a login started %s after the expiry was accepted", started.Sub(end.Time))
		case ok:
			lastAccepted = started
		case !started.Before(end.Time):
			refusedAfter++
		}
		time.Sleep(100 * time.Millisecond)
	}
	if lastAccepted.IsZero() || refusedAfter == 0 {
		t.Fatalf("no login accepted before the instant (%v) or none refused after it (%d)", lastAccepted, refusedAfter)
	}
	if !strings.Contains(h.Read("alice"), want) {
		t.Fatal("the line left the file: the frozen agent cannot have removed it, and sshd must be the one refusing")
	}
	t.Logf("last login accepted %s before the expiry; %d attempts after it refused, with the agent frozen", end.Sub(lastAccepted).Round(time.Millisecond), refusedAfter)
	must(t, agent.Signal(syscall.SIGCONT))
	testenv.Eventually(t, timeout, "the agent removes the expired line once thawed", func() error {
		if strings.Contains(h.Read("alice"), "expiry-time") {
			return fmt.Errorf("still there")
		}
		return nil
	})
}

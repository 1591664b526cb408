package plugin_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/nodeaccess/nodeaccess-operator/controllers"
	"github.com/nodeaccess/nodeaccess-operator/internal/agent"
	"github.com/nodeaccess/nodeaccess-operator/internal/keypolicy"
	"github.com/nodeaccess/nodeaccess-operator/internal/plugin"
	"github.com/nodeaccess/nodeaccess-operator/internal/render"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// The whole path, for real: grant with the plugin, the manager renders it,
// the node's agent writes authorized_keys and publishes its sshd's host
// keys, and ssh with only the files known-hosts and ssh-config wrote logs
// into a real sshd, verifying its host key. After the host key is replaced
// ssh refuses until the report follows; after revoke --wait it is refused.
func TestSSHWithPublishedHostKeys(t *testing.T) {
	ctx := context.Background()
	testenv.EnsureSSH(t)
	h := testenv.NewHost(t, testenv.Account{Name: "alice", ID: 2001})
	sshd := testenv.StartSSHD(t, testenv.SSHDOptions{HostKeyTypes: []string{"ed25519", "ecdsa"}, HostRoot: h.Root})
	node := createNode(t, "ssh-node", map[string]string{"role": "ssh"}, "127.0.0.1")
	startManager(t)
	startAgent := func() func() {
		r, err := agent.NewRunner(env.Config, agent.Config{
			NodeName: node.Name, Namespace: namespace, HostRoot: h.Root,
			Resync: time.Second, Heartbeat: 10 * time.Minute, SSHDAddress: sshd.Addr(),
		}, agent.ServeOptions{ProbeAddr: "0"})
		must(t, err)
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Start(runCtx) }()
		var stopped bool
		stop := func() {
			if !stopped {
				stopped = true
				cancel()
				must(t, <-done)
			}
		}
		t.Cleanup(stop)
		return stop
	}
	stopAgent := startAgent()

	dir := t.TempDir()
	userKey := filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f", userKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	mustRun(t, "grant", "ssh-access", "-l", "role=ssh", "--user", "alice", "--key-file", userKey+".pub", "--ttl", "1h")
	testenv.Eventually(t, 30*time.Second, "the node in sync", func() error {
		res := run(t, "status", "ssh-access")
		if !strings.Contains(res.stdout, "1 of 1 selected nodes in sync") {
			return fmt.Errorf("%s%s", res.stdout, res.stderr)
		}
		return nil
	})
	res := mustRun(t, "who", "ssh-node")
	if !strings.Contains(res.stdout, "ssh-access") || !strings.Contains(res.stdout, "alice") || !strings.Contains(res.stdout, fingerprint(t, userKey+".pub")) {
		t.Errorf("who ssh-node:\n%s", res.stdout)
	}

	knownHosts, config := filepath.Join(dir, "known_hosts"), filepath.Join(dir, "ssh_config")
	writeFiles := func() (string, string) {
		t.Helper()
		kh := mustRun(t, "known-hosts", "-l", "role=ssh", "--file", knownHosts)
		cfg := mustRun(t, "ssh-config", "-l", "role=ssh", "--user", "alice", "--known-hosts-file", knownHosts)
		must(t, os.WriteFile(config, []byte(cfg.stdout), 0o600))
		return kh.stderr, cfg.stdout
	}
	ssh := func() (string, error) {
		cmd := exec.Command("ssh", "-F", config, "-i", userKey, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
			"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile="+knownHosts, "-o", "ConnectTimeout=10", "ssh-node", "id", "-un")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	testenv.Eventually(t, 30*time.Second, "the report lists the host keys", func() error {
		res := run(t, "known-hosts", "-l", "role=ssh")
		if res.code != 0 {
			return fmt.Errorf("%s", res.stderr)
		}
		return nil
	})
	// The manager installs the report policy itself: known-hosts does not warn.
	var cfg string
	testenv.Eventually(t, 30*time.Second, "known-hosts without a warning, the manager having installed the policy", func() error {
		var warnings string
		warnings, cfg = writeFiles()
		if strings.Contains(warnings, "ValidatingAdmissionPolicy") {
			return fmt.Errorf("%s", warnings)
		}
		return nil
	})
	port := strconv.Itoa(sshd.Port)
	for _, want := range []string{"Host ssh-node\n", "    HostName 127.0.0.1\n", "    Port " + port + "\n", "    User alice\n",
		"    HostKeyAlias ssh-node\n", "    UserKnownHostsFile " + knownHosts + "\n", "    StrictHostKeyChecking yes\n"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("ssh-config lacks %q:\n%s", want, cfg)
		}
	}
	kh, err := os.ReadFile(knownHosts)
	must(t, err)
	for _, typ := range []string{"ed25519", "ecdsa"} {
		pub, _ := sshd.HostKey(t, typ)
		f := strings.Fields(pub)
		if !strings.Contains(string(kh), "ssh-node,[127.0.0.1]:"+port+" "+f[0]+" "+f[1]+"\n") {
			t.Errorf("known_hosts lacks the %s host key:\n%s", typ, kh)
		}
	}
	t.Logf("known-hosts wrote:\n%s\nssh-config wrote:\n%s", kh, cfg)
	if out, err := ssh(); err != nil || strings.TrimSpace(out) != "alice" {
		t.Fatalf("ssh with the generated files: %v\n%s\nknown_hosts:\n%s\nsshd log:\n%s", err, out, kh, sshd.Log())
	}

	// The node is re-provisioned: new host keys. While the report still
	// names the old ones (its agent is down), ssh refuses, even with
	// freshly written files.
	stopAgent()
	sshd.ReplaceHostKeys(t)
	if out, err := ssh(); err == nil || !strings.Contains(out, "REMOTE HOST IDENTIFICATION HAS CHANGED") {
		t.Fatalf("ssh accepted a replaced host key: %v\n%s", err, out)
	}
	writeFiles()
	if out, err := ssh(); err == nil || !strings.Contains(out, "Host key verification failed") {
		t.Fatalf("ssh accepted a host key the report does not name: %v\n%s", err, out)
	}
	// The agent is back: its probe follows the new keys, and the old ones
	// are not kept.
	startAgent()
	newPub, _ := sshd.HostKey(t, "ed25519")
	testenv.Eventually(t, 30*time.Second, "the report follows the new host key", func() error {
		res := run(t, "known-hosts", "-l", "role=ssh")
		if !strings.Contains(res.stdout, strings.Fields(newPub)[1]) {
			return fmt.Errorf("known-hosts:\n%s", res.stdout)
		}
		return nil
	})
	writeFiles()
	kh2, err := os.ReadFile(knownHosts)
	must(t, err)
	for _, line := range strings.Split(string(kh), "\n") {
		if f := strings.Fields(line); len(f) == 3 && strings.Contains(string(kh2), f[2]) {
			t.Errorf("a replaced host key is still trusted:\n%s", kh2)
		}
	}
	if out, err := ssh(); err != nil || strings.TrimSpace(out) != "alice" {
		t.Fatalf("ssh after the report followed: %v\n%s", err, out)
	}

	// Revoked, and confirmed by the node: ssh is refused.
	res = mustRun(t, "revoke", "ssh-access", "--wait", "--timeout", "1m")
	if !strings.Contains(res.stdout, "NodeAccess ssh-access revoked: no node holds its keys") {
		t.Errorf("revoke --wait: %s", res.stdout)
	}
	if out, err := ssh(); err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("ssh after revoke: %v\n%s", err, out)
	}
}

// startManager runs the manager in-process, as main.go builds it, until
// the test ends.
func startManager(t *testing.T) {
	t.Helper()
	ctrl.SetLogger(logr.Discard())
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, Cache: controllers.CacheOptions(namespace),
	})
	must(t, err)
	must(t, controllers.Setup(mgr, controllers.Options{
		Namespace: namespace, Render: render.Options{Policy: keypolicy.DefaultPolicy()},
		RevocationTimeout: time.Minute, StatusDelay: 200 * time.Millisecond,
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		must(t, <-done)
	})
}

// Without the policy that binds each agent to its own node's report (a
// manager that cannot create it, or an administrator who deleted it while
// no manager runs), known-hosts warns that host keys are only as
// trustworthy as every agent.
func TestKnownHostsWarnsWithoutTheReportPolicy(t *testing.T) {
	ctx := context.Background()
	_ = k8sClient.Delete(ctx, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: plugin.ReportPolicyName}})
	_ = k8sClient.Delete(ctx, &admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: plugin.ReportPolicyName}})
	res := run(t, "known-hosts")
	if !strings.Contains(res.stderr, "Warning: the ValidatingAdmissionPolicy nodeaccess-agent-own-report is not installed") {
		t.Errorf("known-hosts did not warn about the missing policy: %q", res.stderr)
	}
}

// fingerprint is ssh-keygen's SHA256 fingerprint of a public key file.
func fingerprint(t *testing.T, pub string) string {
	t.Helper()
	out, err := exec.Command("ssh-keygen", "-l", "-E", "sha256", "-f", pub).Output()
	must(t, err)
	return strings.Fields(string(out))[1]
}

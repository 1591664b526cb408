// Command demo runs the product on a local control plane: etcd and
// kube-apiserver from bin/k8s, the manager and one agent per simulated node
// as real processes (each node a directory under _demo/nodes/ with its own
// etc/passwd and homes), the sample NodeAccess objects, and what a user then
// sees: kubectl's view and each node's authorized_keys. It stops everything
// it started before it exits.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

const namespace = "nodeaccess-system"

// node is a simulated node: its labels and its accounts' hand-written keys.
type node struct {
	name   string
	labels map[string]string
	// handWritten maps an account to the authorized_keys it already has.
	handWritten map[string]string
}

var nodes = []node{
	{"payments-1", map[string]string{"node.example.com/pool": "payments", "node-role.kubernetes.io/worker": ""},
		map[string]string{"deploy": "# deploy's own key, written by hand\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGw5e0bmPa9oWfVhuMo4N2m0bYkGv2kAxc0Fq1yO0dNL ops-break-glass\n"}},
	{"payments-2", map[string]string{"node.example.com/pool": "payments", "node-role.kubernetes.io/worker": ""}, nil},
	{"gpu-1", map[string]string{"node.example.com/pool": "gpu", "node-role.kubernetes.io/worker": ""},
		map[string]string{"analyst": "# analyst's laptop\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFp1b3ZpbmdSaWdodEFsb25nTm90aGluZ1RvU2VlSGVyZTEy laptop\n"}},
	{"batch-1", map[string]string{"node.example.com/pool": "batch", "node-role.kubernetes.io/worker": ""}, nil},
}

var accounts = []string{"deploy", "analyst", "alice"}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	root := testenv.RepoRoot()
	dir := filepath.Join(root, "_demo")
	kubectlBin := envOr("KUBECTL", filepath.Join(root, "bin", "k8s", "kubectl"))
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return err
	}

	step("Starting a local control plane (etcd, kube-apiserver) with the CRDs")
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	var procs []*exec.Cmd
	defer func() {
		step("Stopping the manager, the agents and the control plane")
		for _, p := range procs {
			_ = p.Process.Signal(os.Interrupt)
			_ = p.Wait()
		}
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo: stopping control plane:", err)
		}
	}()
	kubeconfig, err := env.KubeconfigFile(dir)
	if err != nil {
		return err
	}
	c, err := newClient(env)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		return err
	}

	step("Simulating four nodes: Node objects, and a host root each under _demo/nodes/")
	for _, n := range nodes {
		if err := c.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: n.labels}}); err != nil {
			return err
		}
		if err := makeHost(filepath.Join(dir, "nodes", n.name), n); err != nil {
			return err
		}
		fmt.Printf("  %-11s %s\n", n.name, n.labels["node.example.com/pool"])
	}

	step("Starting the manager and one agent per node, as processes (logs in _demo/logs/)")
	start := func(name string, args ...string) error {
		logf, err := os.Create(filepath.Join(dir, "logs", filepath.Base(name)+".log"))
		if err != nil {
			return err
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			return err
		}
		procs = append(procs, cmd)
		return nil
	}
	bin := filepath.Join(root, "bin")
	if err := start("manager", filepath.Join(bin, "manager"), "--namespace="+namespace,
		"--metrics-bind-address=0", "--health-probe-bind-address=0",
		"--agent-image=quay.io/nodeaccess/nodeaccess-operator:0.1.0"); err != nil {
		return err
	}
	for _, n := range nodes {
		if err := start("agent-"+n.name, filepath.Join(bin, "agent"), "--node-name="+n.name, "--namespace="+namespace,
			"--host-root="+filepath.Join(dir, "nodes", n.name), "--kubeconfig="+kubeconfig); err != nil {
			return err
		}
	}

	kubectl := func(args ...string) error {
		fmt.Printf("$ kubectl %s\n", strings.Join(args, " "))
		cmd := exec.Command(kubectlBin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
		return cmd.Run()
	}
	step("Applying the samples: two teams, two node pools, a contractor key that expires")
	if err := kubectl("apply", "-k", filepath.Join(root, "config", "samples")); err != nil {
		return err
	}
	began := time.Now()
	if err := waitReady(ctx, c, "team-payments", "team-data"); err != nil {
		return err
	}
	fmt.Printf("(every selected node in sync %.1fs after the apply)\n", time.Since(began).Seconds())

	step("What a user sees")
	for _, args := range [][]string{
		{"get", "nodeaccess", "-o", "wide"},
		{"get", "nodeaccessreports"},
		{"get", "daemonset", "-n", namespace},
	} {
		if err := kubectl(args...); err != nil {
			return err
		}
		fmt.Println()
	}

	step("Each node's authorized_keys: the managed block on top, hand-written lines kept")
	for _, n := range nodes {
		for _, acct := range accounts {
			path := filepath.Join(dir, "nodes", n.name, "home", acct, ".ssh", "authorized_keys")
			data, err := os.ReadFile(path)
			if err != nil {
				continue
			}
			fmt.Printf("--- %s: /home/%s/.ssh/authorized_keys\n%s", n.name, acct, data)
		}
	}

	step("Invalid input is refused by the API server, before any node sees it")
	bad := exec.Command(kubectlBin, "--kubeconfig", kubeconfig, "apply", "-f", "-")
	bad.Stdin = strings.NewReader(`apiVersion: nodeaccess.io/v1alpha1
kind: NodeAccess
metadata:
  name: smuggled-options
spec:
  nodeSelector: {}
  users:
  - name: deploy
    keys:
    - key: 'command="/bin/sh" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHQcKBUJvZCUI4cabRgJQrFMYA/uPYHs+vLi/MryWsmq'
`)
	bad.Stdout, bad.Stderr = os.Stdout, os.Stdout
	if err := bad.Run(); err == nil {
		return fmt.Errorf("the API server accepted a key with an options prefix")
	}

	step("Revoking: deleting team-data removes its keys from every node")
	if err := kubectl("delete", "nodeaccess", "team-data"); err != nil {
		return err
	}
	path := filepath.Join(dir, "nodes", "gpu-1", "home", "analyst", ".ssh", "authorized_keys")
	data, _ := os.ReadFile(path)
	fmt.Printf("--- gpu-1: /home/analyst/.ssh/authorized_keys\n%s", data)
	return nil
}

// makeHost writes a simulated node's etc/passwd, homes and hand-written keys.
// Running as root, each account owns its home; otherwise the accounts take
// the current user's uid so the agent (running as that user) may write.
func makeHost(hostRoot string, n node) error {
	var passwd strings.Builder
	passwd.WriteString("root:x:0:0:root:/root:/bin/bash\n")
	for i, acct := range accounts {
		id := 2001 + i
		if os.Geteuid() != 0 {
			id = os.Geteuid()
		}
		fmt.Fprintf(&passwd, "%s:x:%d:%d::/home/%s:/bin/bash\n", acct, id, id, acct)
		home := filepath.Join(hostRoot, "home", acct)
		if err := os.MkdirAll(home, 0o755); err != nil {
			return err
		}
		if keys, ok := n.handWritten[acct]; ok {
			if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(home, ".ssh", "authorized_keys"), []byte(keys), 0o600); err != nil {
				return err
			}
		}
		if err := filepath.Walk(home, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, id, id)
		}); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(hostRoot, "etc"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(hostRoot, "etc", "passwd"), []byte(passwd.String()), 0o644)
}

func waitReady(ctx context.Context, c client.Client, names ...string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ready := 0
		for _, name := range names {
			na := &nav1.NodeAccess{}
			if err := c.Get(ctx, client.ObjectKey{Name: name}, na); err == nil && meta.IsStatusConditionTrue(na.Status.Conditions, nav1.ReadyCondition) {
				ready++
			}
		}
		if ready == len(names) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the samples were not Ready after 30s; see _demo/logs/")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func newClient(env *testenv.Env) (client.Client, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := nav1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return client.New(env.Config, client.Options{Scheme: scheme})
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func step(msg string) { fmt.Printf("\n==> %s\n", msg) }

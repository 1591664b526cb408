// Command demo runs the product on a local cluster and leaves it running:
//
//	demo        bring everything up (after stopping an earlier demo), apply
//	            the samples and show what a user sees, then return
//	demo up     the process that owns the cluster (run detached by demo)
//	demo down   stop the demo and every process it started
//
// The cluster is etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and kwok from bin/k8s, on 127.0.0.1 only, with four fake
// nodes. The manager and one agent per node run as real processes; each
// node's agent writes under _demo/nodes/<node>/, which holds that node's
// etc/passwd, homes and some hand-written keys.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
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

var (
	root     = testenv.RepoRoot()
	dir      = filepath.Join(root, "_demo")
	pidFile  = filepath.Join(dir, "demo.pid")
	readyMsg = filepath.Join(dir, "ready")
)

func main() {
	var err error
	switch cmd := strings.Join(os.Args[1:], " "); cmd {
	case "":
		err = run()
	case "up":
		err = up()
	case "down":
		err = down()
	default:
		err = fmt.Errorf("unknown command %q: want no argument, up or down", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// run stops an earlier demo, starts `demo up` detached, waits until it is
// ready, applies the samples and shows the result.
func run() error {
	if err := down(); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil { // a fresh cluster, every time
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return err
	}
	step("Starting a local cluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok with four fake nodes),")
	fmt.Println("    the manager, and one agent per node writing under _demo/nodes/<node>/ (logs in _demo/logs/)")
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, "logs", "demo-up.log"))
	if err != nil {
		return err
	}
	daemon := exec.Command(self, "up")
	daemon.Stdout, daemon.Stderr = logf, logf
	daemon.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := daemon.Start(); err != nil {
		return err
	}
	logf.Close()
	exited := make(chan error, 1)
	go func() { exited <- daemon.Wait() }()
	began := time.Now()
	for {
		if _, err := os.Stat(readyMsg); err == nil {
			break
		}
		select {
		case err := <-exited:
			return fmt.Errorf("the cluster did not come up (%v); see _demo/logs/demo-up.log", err)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Since(began) > 3*time.Minute {
			_ = down()
			return errors.New("the cluster did not come up in 3 minutes; see _demo/logs/")
		}
	}
	fmt.Printf("    (up in %.1fs)\n", time.Since(began).Seconds())

	kubeconfig := filepath.Join(dir, "cluster", "kubeconfig")
	kubectlBin := envOr("KUBECTL", filepath.Join(root, "bin", "k8s", "kubectl"))
	kubectl := func(args ...string) error {
		fmt.Printf("$ kubectl %s\n", strings.Join(args, " "))
		cmd := exec.Command(kubectlBin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
		return cmd.Run()
	}
	c, err := newClient(kubeconfig)
	if err != nil {
		return err
	}
	ctx := context.Background()

	step("The nodes, and the agent DaemonSet the manager created (kwok runs its pods)")
	if err := kubectl("get", "nodes", "-L", "node.example.com/pool"); err != nil {
		return err
	}
	if err := waitDaemonSet(ctx, c, kubectl); err != nil {
		return err
	}

	step("Applying the samples: two teams, two node pools, a contractor key that expires")
	if err := kubectl("apply", "-k", filepath.Join(root, "config", "samples")); err != nil {
		return err
	}
	applied := time.Now()
	if err := waitReady(ctx, c, "team-payments", "team-data"); err != nil {
		return err
	}
	fmt.Printf("(every selected node in sync %.1fs after the apply)\n", time.Since(applied).Seconds())

	step("What a user sees")
	for _, args := range [][]string{{"get", "nodeaccess", "-o", "wide"}, {"get", "nodeaccessreports"}} {
		if err := kubectl(args...); err != nil {
			return err
		}
		fmt.Println()
	}

	step("Each node's authorized_keys: the managed block on top, hand-written lines kept")
	for _, n := range nodes {
		for _, acct := range accounts {
			data, err := os.ReadFile(filepath.Join(dir, "nodes", n.name, "home", acct, ".ssh", "authorized_keys"))
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
		return errors.New("the API server accepted a key with an options prefix")
	}

	step("The demo keeps running. Try it:")
	fmt.Printf(`    export KUBECONFIG=%s
    kubectl get nodeaccess,nodeaccessreports
    kubectl delete nodeaccess team-data      # then: cat _demo/nodes/gpu-1/home/analyst/.ssh/authorized_keys
    kubectl edit nodeaccess team-payments    # add a key; it reaches _demo/nodes/payments-*/home/deploy/.ssh/ within a second
Stop everything with: make demo-down
`, kubeconfig)
	return nil
}

// up owns the cluster and the product's processes until SIGTERM or SIGINT.
func up() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile)
	defer os.Remove(readyMsg)

	stages := filepath.Join(dir, "kwok.yaml")
	if err := localcluster.WriteKwokStages(root, stages); err != nil {
		return err
	}
	var lnodes []localcluster.Node
	for _, n := range nodes {
		lnodes = append(lnodes, localcluster.Node{Name: n.name, Labels: n.labels})
	}
	cluster, err := localcluster.Start(ctx, localcluster.Options{
		Dir: filepath.Join(dir, "cluster"), BinDir: envOr("KUBEBUILDER_ASSETS", filepath.Join(root, "bin", "k8s")),
		KwokStages: stages, Nodes: lnodes,
	})
	if err != nil {
		return err
	}
	defer cluster.Stop()
	c, err := newClient(cluster.Kubeconfig)
	if err != nil {
		return err
	}
	if err := localcluster.ApplyManifests(ctx, c, root); err != nil {
		return err
	}
	logs := filepath.Join(dir, "logs")
	bin := filepath.Join(root, "bin")
	var procs []*localcluster.Process
	defer func() {
		for _, p := range procs {
			p.Stop(syscall.SIGTERM)
		}
	}()
	mgr, err := cluster.StartProcess(logs, "manager", filepath.Join(bin, "manager"), "--namespace="+namespace,
		"--metrics-bind-address=0", "--health-probe-bind-address=0", "--operator-deployment=",
		"--agent-image=quay.io/nodeaccess/nodeaccess-operator:0.2.0")
	if err != nil {
		return err
	}
	procs = append(procs, mgr)
	for _, n := range nodes {
		hostRoot := filepath.Join(dir, "nodes", n.name)
		if err := makeHost(hostRoot, n); err != nil {
			return err
		}
		a, err := cluster.StartProcess(logs, "agent-"+n.name, filepath.Join(bin, "agent"), "--node-name="+n.name,
			"--namespace="+namespace, "--host-root="+hostRoot, "--kubeconfig="+cluster.Kubeconfig)
		if err != nil {
			return err
		}
		procs = append(procs, a)
	}
	if err := os.WriteFile(readyMsg, nil, 0o644); err != nil {
		return err
	}
	fmt.Println("demo: up; stop with `make demo-down`")
	<-ctx.Done()
	fmt.Println("demo: stopping")
	return nil
}

// down stops a running demo, if any, and waits for it to go.
func down() error {
	data, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return os.Remove(pidFile)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return os.Remove(pidFile) // not running any more
	}
	for range 300 {
		if syscall.Kill(pid, 0) != nil {
			fmt.Println("demo: stopped")
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return nil
}

// waitDaemonSet waits until the manager's agent DaemonSet has a Ready
// (kwok) pod on every node, and shows it.
func waitDaemonSet(ctx context.Context, c client.Client, kubectl func(...string) error) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		ds := &appsv1.DaemonSet{}
		err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "nodeaccess-agent"}, ds)
		if err == nil && ds.Status.NumberReady == int32(len(nodes)) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the agent DaemonSet has no Ready pod on every node after 90s (%v); see _demo/logs/", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return kubectl("get", "daemonset,pods", "-n", namespace, "-o", "wide")
}

func newClient(kubeconfig string) (client.Client, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := nav1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: scheme})
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func step(msg string) { fmt.Printf("\n==> %s\n", msg) }

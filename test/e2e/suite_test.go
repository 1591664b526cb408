// Package e2e runs the product on a local cluster (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kwok), with the manager and one
// agent per fake node as real processes, each agent writing under its own
// host root. Every process the suite starts is stopped at the end, even on
// failure (and dies with the test binary, through its parent-death signal).
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

const namespace = "nodeaccess-system"

var (
	cluster *localcluster.Cluster
	k8s     client.Client
	workDir string
	binDir  string
	nodes   = []localcluster.Node{
		{Name: "pool-a-1", Labels: map[string]string{"pool": "a"}},
		{Name: "pool-a-2", Labels: map[string]string{"pool": "a"}},
		{Name: "pool-b-1", Labels: map[string]string{"pool": "b"}},
	}
	hosts   = map[string]*testenv.Host{}
	agents  = map[string]*process{}
	manager *process
)

var alice = testenv.Account{Name: "alice", ID: 1001}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) (code int) {
	// E2E_DIR keeps the cluster's files and every process's log for a look after the run.
	workDir = os.Getenv("E2E_DIR")
	if workDir == "" {
		tmp, err := os.MkdirTemp("", "nodeaccess-e2e")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(tmp)
		workDir = tmp
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		return 1
	}
	root := testenv.RepoRoot()
	binDir = filepath.Join(workDir, "bin")
	for _, b := range []struct{ out, pkg string }{{"manager", "."}, {"agent", "./cmd/agent"}} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, b.out), b.pkg)
		cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fail(fmt.Errorf("building %s: %w", b.out, err))
		}
	}
	if err := os.MkdirAll(filepath.Join(workDir, "logs"), 0o700); err != nil {
		return fail(err)
	}
	stages := filepath.Join(workDir, "kwok.yaml")
	if err := localcluster.WriteKwokStages(root, stages); err != nil {
		return fail(err)
	}
	k8sBin := os.Getenv("KUBEBUILDER_ASSETS")
	if k8sBin == "" {
		k8sBin = filepath.Join(root, "bin", "k8s")
	}
	var err error
	cluster, err = localcluster.Start(context.Background(), localcluster.Options{
		Dir: filepath.Join(workDir, "cluster"), BinDir: k8sBin, KwokStages: stages, Nodes: nodes,
	})
	if err != nil {
		return fail(err)
	}
	defer cluster.Stop()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = nav1.AddToScheme(scheme)
	if k8s, err = client.New(cluster.Config, client.Options{Scheme: scheme}); err != nil {
		return fail(err)
	}
	if err := installShipped(root); err != nil {
		return fail(err)
	}
	defer stopAll()
	if manager, err = startManager(); err != nil {
		return fail(err)
	}
	for _, n := range nodes {
		hosts[n.Name] = testenv.NewHost(tb{}, alice)
		if agents[n.Name], err = startAgent(n.Name); err != nil {
			return fail(err)
		}
	}
	return m.Run()
}

// process is a manager or agent process of the suite.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func start(name string, args ...string) (*process, error) {
	logf, err := os.OpenFile(filepath.Join(workDir, "logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "KUBECONFIG="+cluster.Kubeconfig)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// stop sends sig and waits for the process to exit.
func (p *process) stop(sig syscall.Signal) {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func startManager() (*process, error) {
	return start("manager", filepath.Join(binDir, "manager"), "--namespace="+namespace,
		"--agent-image=example.com/nodeaccess-operator:e2e", "--operator-deployment=",
		"--metrics-bind-address=0", "--health-probe-bind-address=0",
		"--status-delay=200ms", "--revocation-timeout=30s")
}

func startAgent(node string) (*process, error) {
	return start("agent-"+node, filepath.Join(binDir, "agent"), "--node-name="+node, "--namespace="+namespace,
		"--host-root="+hosts[node].Root, "--kubeconfig="+cluster.Kubeconfig, "--resync=5s")
}

func stopAll() {
	for _, a := range agents {
		a.stop(syscall.SIGTERM)
	}
	manager.stop(syscall.SIGTERM)
}

// installShipped applies what `make deploy` would (kustomize build
// config/default: CRDs, namespace, accounts, RBAC, the agent policy) except
// the manager's Deployment and Service: the manager runs as a process here.
func installShipped(root string) error {
	cmd := exec.Command("go", "tool", "kustomize", "build", "config/default")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("kustomize build: %w", err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(string(out)), 4096)
	ctx := context.Background()
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			break
		}
		if len(u.Object) == 0 || u.GetKind() == "Deployment" || u.GetKind() == "Service" {
			continue
		}
		if err := k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("e2e"), client.ForceOwnership); err != nil {
			return fmt.Errorf("applying %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
	// Wait until the API serves the kinds.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := k8s.List(ctx, &nav1.NodeAccessList{})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tb lets setup code that takes a testing.TB run in TestMain.
type tb struct{ testing.TB }

func (tb) Helper()                           {}
func (tb) TempDir() string                   { d, _ := os.MkdirTemp(workDir, "host"); return d }
func (tb) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (tb) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

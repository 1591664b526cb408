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
	"syscall"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
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
	agents  = map[string]*localcluster.Process{}
	manager *localcluster.Process
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
	for _, b := range []struct{ out, pkg string }{{"manager", "."}, {"agent", "./cmd/agent"}, {"nodeaccess-scorecard", "./cmd/scorecard"}} {
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
	if err := localcluster.ApplyManifests(context.Background(), k8s, root); err != nil {
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

func startManager() (*localcluster.Process, error) {
	return cluster.StartProcess(filepath.Join(workDir, "logs"), "manager", filepath.Join(binDir, "manager"), "--namespace="+namespace,
		"--agent-image=example.com/nodeaccess-operator:e2e", "--operator-deployment=",
		"--metrics-bind-address=0", "--health-probe-bind-address=0",
		"--status-delay=200ms", "--revocation-timeout=30s")
}

func startAgent(node string) (*localcluster.Process, error) {
	return cluster.StartProcess(filepath.Join(workDir, "logs"), "agent-"+node, filepath.Join(binDir, "agent"), "--node-name="+node, "--namespace="+namespace,
		"--host-root="+hosts[node].Root, "--kubeconfig="+cluster.Kubeconfig, "--resync=5s")
}

func stopAll() {
	for _, a := range agents {
		a.Stop(syscall.SIGTERM)
	}
	manager.Stop(syscall.SIGTERM)
}

// tb lets setup code that takes a testing.TB run in TestMain.
type tb struct{ testing.TB }

func (tb) Helper()                           {}
func (tb) TempDir() string                   { d, _ := os.MkdirTemp(workDir, "host"); return d }
func (tb) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (tb) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

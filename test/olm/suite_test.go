// Package olm installs the operator through real OLM and upgrades it through
// a Subscription. OLM's olm and catalog operators run as processes against
// the local cluster, and opm serves the file-based catalog over loopback with
// every bundle's manifests inline, so nothing is unpacked from an image. OLM
// and opm listen on every interface at fixed ports, so the whole suite runs
// in a private network namespace of its own (this needs root, as the other
// suites do). kwok makes the operator's pod Ready, but its container never
// runs: the manager and an agent run as local processes beside OLM, with the
// environment OLM gives the operator, so that what the operator tells OLM
// is real.
package olm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	operatorsv1 "github.com/operator-framework/api/pkg/operators/v1"
	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	operatorsv2 "github.com/operator-framework/api/pkg/operators/v2"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

const (
	olmNamespace = localcluster.OLMNamespace
	// installNamespace holds the global OperatorGroup, as on OperatorHub clusters.
	installNamespace = localcluster.OperatorsNamespace
	timeout          = 90 * time.Second
)

var (
	cluster *localcluster.Cluster
	olm     *localcluster.OLM
	k8s     client.Client
	workDir string
	binDir  string
	// releaseDir holds the released 0.1.0's manager and agent.
	releaseDir string
	k8sBin     string
	logDir     string
	nodes      = []localcluster.Node{
		{Name: "pool-a-1", Labels: map[string]string{"pool": "a"}},
		{Name: "pool-b-1", Labels: map[string]string{"pool": "b"}},
	}
)

// workDirEnv carries the work directory from the test binary into its copy
// in the private network namespace; releaseDirEnv the released binaries.
const (
	workDirEnv    = "OLM_E2E_DIR"
	releaseDirEnv = "OLM_E2E_RELEASE_BIN"
)

func TestMain(m *testing.M) {
	if code, ok := localcluster.PrivateNamespaceInit(); ok {
		os.Exit(code)
	}
	if !localcluster.InPrivateNamespaces() {
		os.Exit(outside())
	}
	os.Exit(inside(m))
}

// outside builds what the suite runs (go may need the module proxy, which
// the private network cannot reach), then runs the suite again inside
// private namespaces.
func outside() int {
	dir := os.Getenv(workDirEnv)
	if dir == "" {
		tmp, err := os.MkdirTemp("", "nodeaccess-olm")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(tmp)
		dir = tmp
		os.Setenv(workDirEnv, dir)
	}
	root := testenv.RepoRoot()
	// The released 0.1.0 the suite upgrades from, built from its commit.
	rel, err := testenv.ReleaseBinaries("0.1.0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "olm e2e:", err)
		return 1
	}
	os.Setenv(releaseDirEnv, rel)
	for _, b := range []struct{ out, pkg string }{{"manager", "."}, {"agent", "./cmd/agent"}, {"bundle", "./hack/bundle"}} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "bin", b.out), b.pkg)
		cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "olm e2e: building %s: %v\n", b.out, err)
			return 1
		}
	}
	if _, err := testenv.MonitoringCRDs(filepath.Join(dir, "monitoring-crds")); err != nil {
		fmt.Fprintln(os.Stderr, "olm e2e:", err)
		return 1
	}
	nsDir := filepath.Join(dir, "namespaces")
	if err := os.MkdirAll(nsDir, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, "olm e2e:", err)
		return 1
	}
	code, err := localcluster.RunInPrivateNamespaces(localcluster.PrivateOptions{Dir: nsDir, Keep: []string{root, dir}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "olm e2e:", err)
	}
	return code
}

func inside(m *testing.M) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "olm e2e setup:", err)
		return 1
	}
	workDir = os.Getenv(workDirEnv)
	binDir = filepath.Join(workDir, "bin")
	releaseDir = os.Getenv(releaseDirEnv)
	logDir = filepath.Join(workDir, "logs")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return fail(err)
	}
	root := testenv.RepoRoot()
	if k8sBin = os.Getenv("KUBEBUILDER_ASSETS"); k8sBin == "" {
		k8sBin = filepath.Join(root, "bin", "k8s")
	}
	for _, b := range []string{"olm", "catalog", "opm"} {
		if _, err := os.Stat(filepath.Join(k8sBin, b)); err != nil {
			return fail(fmt.Errorf("%s is not built (run `make k8s-bin`): %w", b, err))
		}
	}
	stages := filepath.Join(workDir, "kwok.yaml")
	if err := localcluster.WriteKwokStages(root, stages); err != nil {
		return fail(err)
	}
	ctx := context.Background()
	var err error
	cluster, err = localcluster.Start(ctx, localcluster.Options{
		Dir: filepath.Join(workDir, "cluster"), BinDir: k8sBin, KwokStages: stages, Nodes: nodes,
	})
	if err != nil {
		return fail(err)
	}
	defer cluster.Stop()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = apiextensionsv1.AddToScheme(scheme)
	_ = nav1.AddToScheme(scheme)
	_ = operatorsv1alpha1.AddToScheme(scheme)
	_ = operatorsv1.AddToScheme(scheme)
	_ = operatorsv2.AddToScheme(scheme)
	if k8s, err = client.New(cluster.Config, client.Options{Scheme: scheme}); err != nil {
		return fail(err)
	}
	crds, err := testenv.OLMCRDs()
	if err != nil {
		return fail(err)
	}
	if olm, err = cluster.StartOLM(ctx, k8s, localcluster.OLMOptions{BinDir: k8sBin, CRDDir: crds, LogDir: logDir}); err != nil {
		return fail(err)
	}
	defer olm.Stop()
	return m.Run()
}

// serveCatalog serves dir with opm until the test ends and returns the
// address for the CatalogSource.
func serveCatalog(t *testing.T, dir string) string {
	t.Helper()
	s, err := olm.ServeCatalog(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s.Address
}

func poll(ctx context.Context, timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

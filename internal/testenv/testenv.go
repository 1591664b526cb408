// Package testenv starts a real control plane (etcd and kube-apiserver from
// bin/k8s) with the project's CRDs installed, for tests that must run against
// a real API server.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// modulePath is the project's Go module, named by its go.mod.
const modulePath = "github.com/nodeaccess/nodeaccess-operator"

// RepoRoot is the repository's top directory: found from this file's
// location, or (built with -trimpath, which drops it) from the working
// directory upwards, the directory whose go.mod is the project's. Tests run
// in their package's directory, programs from the repository's.
func RepoRoot() string {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		return filepath.Join(filepath.Dir(file), "..", "..")
	}
	dir, err := os.Getwd()
	if err != nil {
		panic(fmt.Sprintf("finding the repository: %v", err))
	}
	for d := dir; ; d = filepath.Dir(d) {
		if data, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && moduleOf(data) == modulePath {
			return d
		}
		if filepath.Dir(d) == d {
			panic(fmt.Sprintf("finding the repository: no go.mod of %s in %s or above", modulePath, dir))
		}
	}
}

// moduleOf is the module path a go.mod declares.
func moduleOf(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// Env is a running control plane.
type Env struct {
	*envtest.Environment
	// Config reaches the API server as a cluster administrator.
	Config *rest.Config
}

// Start starts etcd and kube-apiserver and installs the CRDs of config/crd/bases.
// The binaries come from KUBEBUILDER_ASSETS, or bin/k8s when it is unset
// (`make envtest` builds them).
func Start() (*Env, error) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(RepoRoot(), "bin", "k8s")
	}
	// OLM's OperatorCondition too, which the manager writes when OLM installed it.
	olmCRDs, err := OLMCRDs()
	if err != nil {
		return nil, err
	}
	crds := []string{
		filepath.Join(RepoRoot(), "config", "crd", "bases"),
		filepath.Join(olmCRDs, "operators.coreos.com_operatorconditions.yaml"),
	}
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(assets, name)); err != nil {
			return nil, fmt.Errorf("finding control-plane binaries (run `make envtest`): %w", err)
		}
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        crds,
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 60 * time.Second,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting control plane: %w", errors.Join(err, env.Stop()))
	}
	return &Env{Environment: env, Config: cfg}, nil
}

// OLMCRDs is the folder of OLM's CRDs, as github.com/operator-framework/api
// (a dependency of this module) ships them.
func OLMCRDs() (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/operator-framework/api")
	cmd.Dir = RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("locating github.com/operator-framework/api: %w", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "crds"), nil
}

// KubeconfigFile writes an administrator kubeconfig for the environment into
// dir and returns its path, for running kubectl or the agent against it.
func (e *Env) KubeconfigFile(dir string) (string, error) {
	user, err := e.ControlPlane.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", fmt.Errorf("adding admin user: %w", err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		return "", fmt.Errorf("rendering kubeconfig: %w", err)
	}
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return "", fmt.Errorf("writing kubeconfig: %w", err)
	}
	return path, nil
}

package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// Process is a manager or agent started against the cluster. It dies with
// the process that started it.
type Process struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartProcess runs args with KUBECONFIG pointing at the cluster and its
// output in logDir/name.log.
func (c *Cluster) StartProcess(logDir, name string, args ...string) (*Process, error) {
	return c.StartProcessEnv(logDir, name, nil, args...)
}

// StartProcessEnv is StartProcess with env added to the environment (CI
// removed: OLM's operators panic on some creates when it is set).
func (c *Cluster) StartProcessEnv(logDir, name string, env []string, args ...string) (*Process, error) {
	logf, err := os.OpenFile(filepath.Join(logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(append(withoutCI(os.Environ()), "KUBECONFIG="+c.Kubeconfig), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// Pid is the process's ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig (SIGSTOP, SIGCONT) without waiting.
func (p *Process) Signal(sig syscall.Signal) error {
	return p.cmd.Process.Signal(sig)
}

// Exited says whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends sig and waits for the process to exit (SIGKILL after 15 s).
func (p *Process) Stop(sig syscall.Signal) {
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

// ApplyManifests applies what `make deploy` would (kustomize build
// config/default: CRDs, namespace, accounts, RBAC, the agent policy) except
// the manager's Deployment and Service, and waits until NodeAccess is served.
func ApplyManifests(ctx context.Context, c client.Client, repoRoot string) error {
	cmd := exec.Command("go", "tool", "kustomize", "build", "config/default")
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("kustomize build: %w", err)
	}
	if err := ApplyYAML(ctx, c, out, func(u *unstructured.Unstructured) bool {
		return u.GetKind() != "Deployment" && u.GetKind() != "Service"
	}); err != nil {
		return err
	}
	return waitFor(ctx, 30*time.Second, "NodeAccess served", func() error {
		return c.List(ctx, &nav1.NodeAccessList{})
	})
}

// ApplyYAML applies, server-side, every object of a multi-document YAML
// stream that keep accepts (nil keeps all).
func ApplyYAML(ctx context.Context, c client.Client, data []byte, keep func(*unstructured.Unstructured) bool) error {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("decoding manifests: %w", err)
		}
		if len(u.Object) == 0 || (keep != nil && !keep(u)) {
			continue
		}
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("localcluster"), client.ForceOwnership); err != nil {
			return fmt.Errorf("applying %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
}

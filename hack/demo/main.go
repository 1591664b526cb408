// Command demo shows the NodeAccess API on a local control plane: it starts
// etcd and kube-apiserver from bin/k8s, installs the CRD, applies the samples
// and shows what a user sees with kubectl, then stops what it started.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	kubectlBin := os.Getenv("KUBECTL")
	if kubectlBin == "" {
		kubectlBin = filepath.Join(testenv.RepoRoot(), "bin", "k8s", "kubectl")
	}
	dir := filepath.Join(testenv.RepoRoot(), "_demo")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}

	step("Starting a local control plane (etcd, kube-apiserver) with the NodeAccess CRD")
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() {
		step("Stopping the local control plane")
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo: stopping control plane:", err)
		}
	}()
	kubeconfig, err := env.KubeconfigFile(dir)
	if err != nil {
		return err
	}
	kubectl := func(args ...string) error {
		fmt.Printf("$ kubectl %s\n", strings.Join(args, " "))
		cmd := exec.Command(kubectlBin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		return cmd.Run()
	}

	step("Applying the samples: two teams, two node pools, one expiring key")
	if err := kubectl("apply", "-k", filepath.Join(testenv.RepoRoot(), "config", "samples")); err != nil {
		return err
	}
	step("What the cluster holds")
	if err := kubectl("get", "nodeaccess", "-o", "wide"); err != nil {
		return err
	}
	step("The API documents itself")
	if err := kubectl("explain", "nodeaccess.spec"); err != nil {
		return err
	}
	step("Invalid input is refused by the API server, before any node sees it")
	fmt.Println("(a key with an options prefix smuggled into it)")
	bad := exec.Command(kubectlBin, "--kubeconfig", kubeconfig, "apply", "-f", "-")
	bad.Stdin = strings.NewReader(`apiVersion: nodeaccess.io/v1alpha1
kind: NodeAccess
metadata:
  name: smuggled-options
spec:
  nodeSelector: {}
  users:
  - name: root
    keys:
    - key: 'command="/bin/sh" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHQcKBUJvZCUI4cabRgJQrFMYA/uPYHs+vLi/MryWsmq'
`)
	bad.Stdout, bad.Stderr = os.Stdout, os.Stdout
	if err := bad.Run(); err == nil {
		return fmt.Errorf("the API server accepted a key with an options prefix")
	}
	return nil
}

func step(msg string) { fmt.Printf("\n==> %s\n", msg) }

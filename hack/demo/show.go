package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
)

// shell runs command lines as the user would type them: in the
// repository's directory, after `export PATH=<the wrappers>:$PATH` (the
// first hint the demo prints). Every command the demo shows runs this
// way, so what it shows is what works.
type shell struct{ c config }

func (s shell) command(line string) *exec.Cmd {
	cmd := exec.Command("/bin/sh", "-c", line)
	cmd.Dir = s.c.root
	cmd.Env = append(os.Environ(), "PATH="+s.c.wrappers()+":"+os.Getenv("PATH"))
	return cmd
}

// run shows a line and its output; it fails when the line fails.
func (s shell) run(line string) error {
	fmt.Printf("$ %s\n", line)
	cmd := s.command(line)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("running %s: %w", line, err)
	}
	return nil
}

// output runs a line and returns what it wrote, showing nothing.
func (s shell) output(line string) (string, error) {
	var out bytes.Buffer
	cmd := s.command(line)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return "", fmt.Errorf("running %s: %w: %s", line, err, oneLine(out.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// waitUntil retries cond until it holds or timeout passes.
func waitUntil(timeout time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting %s for %s: %w", timeout, what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func step(msg string) { fmt.Printf("\n==> %s\n", msg) }

// show shows the product at work, then prints how to go on.
func show(c config, withNode bool) error {
	sh := shell{c}
	nodes := len(fakeNodes)
	if withNode {
		nodes++
		step("The nodes: four fake ones (kwok) and " + realNodeName + ", a real kubelet with containerd")
	} else {
		step("The nodes (kwok's)")
	}
	if err := sh.run("kubectl get nodes -o wide -L node.example.com/pool"); err != nil {
		return err
	}

	if withNode {
		step("The agent DaemonSet the manager created: kwok fakes its pods on the fake nodes, " + realNodeName + "'s kubelet runs a real one")
	} else {
		step("The agent DaemonSet the manager created (kwok runs its pods)")
	}
	if err := waitUntil(3*time.Minute, "an agent pod Ready on every node", func() error {
		ready, err := sh.output("kubectl get daemonset nodeaccess-agent -n " + namespace + " -o jsonpath={.status.numberReady}")
		if err != nil {
			return err
		}
		if ready != strconv.Itoa(nodes) {
			return fmt.Errorf("%q of %d ready", ready, nodes)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("%w; see %s", err, display(c, c.logs()))
	}
	if err := sh.run("kubectl get daemonset,pods -n " + namespace + " -o wide"); err != nil {
		return err
	}

	step("Applying the samples: two teams, two node pools, a contractor key that expires")
	if err := sh.run("kubectl apply -k config/samples"); err != nil {
		return err
	}
	applied := time.Now()
	if _, err := sh.output("kubectl wait --for=condition=Ready nodeaccess/team-payments nodeaccess/team-data --timeout=60s"); err != nil {
		return fmt.Errorf("the samples were not Ready: %w; see %s", err, display(c, c.logs()))
	}
	fmt.Printf("(every selected node in sync %.1fs after the apply)\n", time.Since(applied).Seconds())

	step("What a user sees")
	for _, line := range []string{"kubectl get nodeaccess -o wide", "kubectl get nodeaccessreports"} {
		if err := sh.run(line); err != nil {
			return err
		}
		fmt.Println()
	}

	step("Each fake node's authorized_keys: the managed block on top, hand-written lines kept")
	for _, n := range fakeNodes {
		for _, acct := range accounts {
			data, err := os.ReadFile(c.path("nodes", n.name, "home", acct, ".ssh", "authorized_keys"))
			if err != nil {
				continue
			}
			fmt.Printf("--- %s: /home/%s/.ssh/authorized_keys\n%s", n.name, acct, data)
		}
	}

	step("Invalid input is refused by the API server, before any node sees it")
	if err := sh.run(`kubectl apply -f - <<'EOF'
apiVersion: nodeaccess.io/v1alpha1
kind: NodeAccess
metadata:
  name: smuggled-options
spec:
  nodeSelector: {}
  users:
  - name: deploy
    keys:
    - key: 'command="/bin/sh" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHQcKBUJvZCUI4cabRgJQrFMYA/uPYHs+vLi/MryWsmq'
EOF`); err == nil {
		return errors.New("the API server accepted a key with an options prefix")
	}

	if withNode {
		if err := showRealNode(c, sh); err != nil {
			return err
		}
	}
	printHints(c, withNode)
	return nil
}

// showRealNode grants a key of the demo's own to deploy on the real node,
// shows what the plugin says about it, and logs in with it.
func showRealNode(c config, sh shell) error {
	if err := os.MkdirAll(c.sshDir(), 0o700); err != nil {
		return err
	}
	key := filepath.Join(c.sshDir(), "demo_ed25519")
	if _, err := localcluster.WriteKeyPair(key, "demo@nodeaccess"); err != nil {
		return fmt.Errorf("making the demo's key: %w", err)
	}
	sel := "kubernetes.io/hostname=" + realNodeName
	step("The real node " + realNodeName + ": containerd, kubelet, kube-proxy and sshd in namespaces of their own;" +
		" the agent runs there as the DaemonSet's pod, from the operator's image archive")
	if err := sh.run("kubectl get pods -n " + namespace + " -o wide --field-selector spec.nodeName=" + realNodeName); err != nil {
		return err
	}

	step("Granting the demo's key to deploy on " + realNodeName + ", as anyone grants theirs")
	if err := sh.run("kubectl nodeaccess grant demo-login -l " + sel + " --user deploy --key-file " + display(c, key+".pub") + " --ttl 24h"); err != nil {
		return err
	}
	if _, err := sh.output("kubectl wait --for=condition=Ready nodeaccess/demo-login --timeout=60s"); err != nil {
		return fmt.Errorf("the grant was not Ready: %w; see %s", err, display(c, c.logs()))
	}
	for _, line := range []string{"kubectl nodeaccess status demo-login", "kubectl nodeaccess who " + realNodeName} {
		if err := sh.run(line); err != nil {
			return err
		}
	}

	step("Its sshd's host keys, as its agent learnt them in an SSH handshake and published them: no key is trusted on first use")
	if err := waitUntil(60*time.Second, "the real node's host keys in its report", func() error {
		types, err := sh.output("kubectl get nodeaccessreport " + realNodeName + " -o jsonpath={.status.sshd.hostKeys[*].type}")
		if err == nil && types == "" {
			err = errors.New("none yet")
		}
		return err
	}); err != nil {
		return err
	}
	knownHosts, sshConfig := filepath.Join(c.sshDir(), "known_hosts"), filepath.Join(c.sshDir(), "config")
	for _, line := range []string{
		"kubectl nodeaccess known-hosts -l " + sel + " --file " + display(c, knownHosts) + " && cat " + display(c, knownHosts),
		"kubectl nodeaccess ssh-config -l " + sel + " --user deploy --known-hosts-file " + absolute(c, knownHosts) +
			" > " + display(c, sshConfig) + " && cat " + display(c, sshConfig),
	} {
		if err := sh.run(line); err != nil {
			return err
		}
	}

	step("An ssh login into " + realNodeName + " as deploy with the demo's key: the managed block on top, deploy's own line kept")
	return sh.run("node-ssh -i " + display(c, key) + " " + realNodeName + " 'id; cat ~/.ssh/authorized_keys'")
}

// absolute is a shell word for p as an absolute path: "$PWD"/p inside the
// repository (the commands run there), p itself otherwise.
func absolute(c config, p string) string {
	if rel, err := filepath.Rel(c.root, p); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
		return `"$PWD"/` + shq(rel)
	}
	return shq(p)
}

// hint is a command line the demo prints for the user to try, and what it does.
type hint struct{ line, note string }

// hints are what the demo prints after it showed everything: the first
// puts the wrappers on PATH, the others use them. They must work as
// printed in the repository's directory, with no kubectl on PATH (the
// demo's test runs each of them so).
func hints(c config, withNode bool) (try, ownKey []hint) {
	wrapped := "kubectl and its plugin for the demo"
	if withNode {
		wrapped += ", and node-ssh"
	}
	try = []hint{
		{"export PATH=" + absolute(c, c.wrappers()) + `:"$PATH"`, wrapped},
		{"kubectl get nodeaccess,nodeaccessreports", ""},
	}
	if withNode {
		try = append(try,
			hint{"kubectl nodeaccess who " + realNodeName, ""},
			hint{"node-ssh -i " + display(c, filepath.Join(c.sshDir(), "demo_ed25519")) + " " + realNodeName, "a shell on the real node, as deploy"})
		ownKey = []hint{
			{"kubectl nodeaccess grant mine -l kubernetes.io/hostname=" + realNodeName + " --user deploy --key-file ~/.ssh/id_ed25519.pub --ttl 1h", ""},
			{"kubectl wait --for=condition=Ready nodeaccess/mine", "its key is on the node"},
			{"node-ssh -i ~/.ssh/id_ed25519 " + realNodeName, ""},
		}
	} else {
		try = append(try, hint{"kubectl nodeaccess who payments-1", ""})
	}
	try = append(try,
		hint{"kubectl delete nodeaccess team-data", "then: cat " + display(c, c.path("nodes", "gpu-1", "home", "analyst", ".ssh", "authorized_keys"))},
		hint{"kubectl edit nodeaccess team-payments", "add a key: within a second it is in every payments node's /home/deploy/.ssh/authorized_keys"})
	return try, ownKey
}

func printHints(c config, withNode bool) {
	try, ownKey := hints(c, withNode)
	print := func(hs []hint) {
		for _, h := range hs {
			if h.note == "" {
				fmt.Printf("    %s\n", h.line)
				continue
			}
			fmt.Printf("    %-44s # %s\n", h.line, h.note)
		}
	}
	step("The demo keeps running. Try it, in this directory; nothing else is needed on PATH:")
	print(try)
	if len(ownKey) > 0 {
		fmt.Println("  Log in with your own key (ssh-keygen -t ed25519 makes one):")
		print(ownKey)
	}
	stop := "make demo-down"
	if c.dir != filepath.Join(c.root, "_demo") {
		self, _ := os.Executable()
		stop = shq(self) + " -dir=" + shq(c.dir) + " down"
	}
	logs := display(c, c.logs()) + "/"
	if withNode {
		logs += ", the real node's in " + display(c, c.path("real-node", "logs")) + "/ and sshd's in " + display(c, c.path("namespaces", "var", "log", "auth.log"))
	}
	fmt.Printf("Stop everything with: %s (logs in %s)\n", stop, logs)
}

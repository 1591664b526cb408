// Command demo runs the product on a local cluster and leaves it running:
//
//	demo [flags]            bring everything up (after stopping an earlier demo),
//	                        apply the samples, show what a user sees, print how
//	                        to go on, and return
//	demo [flags] up         the process that owns the cluster (run detached by demo)
//	demo [flags] down       stop the demo and every process it started
//	demo [flags] preflight  say in one line why no real node can run here and
//	                        exit 1, or say nothing (builds excepted: the Makefile
//	                        asks before it builds the kubelet and the images)
//
// The cluster is etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and kwok from bin/k8s, with four fake nodes. The manager and
// one agent per fake node run as processes; each fake node's agent writes
// under _demo/nodes/<node>/, which holds that node's etc/passwd, homes and
// some hand-written keys (fakenodes.go).
//
// Where the machine allows it (root; the Debian packages of
// hack/node-packages.sh; kubelet and kube-proxy in bin/k8s; the operator and
// pause image archives in bin/image), the demo adds a real node, real-1:
// Debian's containerd and runc, the kubelet, kube-proxy and OpenSSH's sshd,
// inside private network, mount and PID namespaces that the detached
// `demo up` owns (realnode.go). The whole cluster then runs in them, its API
// server on the node network's IP, so the real node's pods reach it through
// the kubernetes Service; the agent runs on the real node as the pod of the
// DaemonSet the manager renders, from the operator's image archive, and the
// demo ends with an ssh login into the node with a key it granted. Where no
// real node can run, the demo says why in one line and runs the fake nodes
// alone.
//
// _demo/bin holds wrappers that reach the cluster from the user's shell
// (wrappers.go): kubectl, kubectl-nodeaccess, node-ssh and demo-exec.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

const namespace = "nodeaccess-system"

// config says where the demo's inputs and state are.
type config struct {
	// root is the repository: the samples and manifests are read from it,
	// and the commands the demo shows run in it.
	root string
	// dir holds the demo's state: the cluster, logs, nodes, wrappers.
	dir string
	// bin holds manager, agent and kubectl-nodeaccess (make build).
	bin string
	// k8sBin holds the cluster's binaries (hack/tools/build.sh).
	k8sBin string
	// images holds the operator and pause image archives (make image pause-image).
	images string
	// realNode is auto (a real node where the machine allows one), true
	// (fail where it does not) or false (fake nodes only).
	realNode string
}

func (c config) path(elem ...string) string {
	return filepath.Join(append([]string{c.dir}, elem...)...)
}

// The demo's files, under config.dir.
func (c config) pidFile() string    { return c.path("demo.pid") }
func (c config) readyFile() string  { return c.path("ready.json") }
func (c config) logs() string       { return c.path("logs") }
func (c config) kubeconfig() string { return c.path("cluster", "kubeconfig") }
func (c config) wrappers() string   { return c.path("bin") }
func (c config) sshDir() string     { return c.path("ssh") }

// nsDir holds the private namespaces' own files; init.pid in it names
// their first process, whose namespaces the wrappers enter.
func (c config) nsDir() string { return c.path("namespaces") }

// args are the flags that give another demo process this configuration.
func (c config) args() []string {
	return []string{"-dir=" + c.dir, "-bin=" + c.bin, "-images=" + c.images, "-real-node=" + c.realNode}
}

// cgroupName is the real node's cgroup, named after the demo's directory
// so that demos in two checkouts, and the tests, never share one.
func (c config) cgroupName() string {
	sum := sha256.Sum256([]byte(c.dir))
	return "nodeaccess-demo-" + hex.EncodeToString(sum[:4])
}

// state is what `demo up` tells `demo` once everything runs (ready.json).
type state struct {
	// RealNode is the real node's name, when one runs.
	RealNode string `json:"realNode,omitempty"`
	// NoRealNode says why the real node did not start, when it was tried.
	NoRealNode string `json:"noRealNode,omitempty"`
}

func main() {
	if code, ok := localcluster.PrivateNamespaceInit(); ok {
		os.Exit(code)
	}
	root := testenv.RepoRoot()
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	c := config{root: root, k8sBin: envOr("KUBEBUILDER_ASSETS", filepath.Join(root, "bin", "k8s"))}
	fs.StringVar(&c.dir, "dir", filepath.Join(root, "_demo"), "the demo's directory: cluster state, logs, fake nodes, wrappers")
	fs.StringVar(&c.bin, "bin", filepath.Join(root, "bin"), "the directory of manager, agent and kubectl-nodeaccess (make build)")
	fs.StringVar(&c.images, "images", filepath.Join(root, "bin", "image"), "the directory of nodeaccess-operator.tar and pause.tar (make image pause-image)")
	fs.StringVar(&c.realNode, "real-node", "auto", "auto: add a real node where the machine allows it; true: fail where it does not; false: fake nodes only")
	_ = fs.Parse(os.Args[1:])
	var err error
	for _, p := range []*string{&c.dir, &c.bin, &c.images, &c.k8sBin} {
		if *p, err = filepath.Abs(*p); err != nil {
			fail(err)
		}
	}
	switch c.realNode {
	case "auto", "true", "false":
	default:
		fail(fmt.Errorf("-real-node=%q: want auto, true or false", c.realNode))
	}
	switch cmd := strings.Join(fs.Args(), " "); cmd {
	case "":
		err = run(c)
	case "up":
		err = up(c)
	case "down":
		err = down(c)
	case "preflight":
		if why := blocker(gatherFacts(c, false)); why != "" {
			fmt.Println(why)
			os.Exit(1)
		}
	default:
		err = fmt.Errorf("unknown command %q: want no argument, up, down or preflight", cmd)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "demo:", err)
	os.Exit(1)
}

// run stops an earlier demo, starts `demo up` detached (with a real node
// where one can run), waits until it is ready, writes the wrappers and
// shows the product at work.
func run(c config) error {
	if err := down(c); err != nil {
		return err
	}
	if err := clearDemoDir(c); err != nil { // a fresh cluster, every time
		return err
	}
	if err := os.MkdirAll(c.logs(), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(c.path(demoMarker), nil, 0o644); err != nil {
		return err
	}
	if err := prepare(c); err != nil {
		return err
	}
	withNode := false
	switch why := blocker(gatherFacts(c, true)); {
	case why == "":
		withNode = true
	case c.realNode == "true":
		return fmt.Errorf("no real node: %s", why)
	default:
		noRealNode(why)
	}
	if withNode {
		step("Starting a local cluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok with four fake nodes)")
		fmt.Println("    and a real node (containerd, kubelet, kube-proxy, sshd) in private namespaces, the manager, and one agent")
		fmt.Println("    per fake node writing under " + display(c, c.path("nodes")) + "/<node>/ (logs in " + display(c, c.logs()) + "/)")
	} else {
		step("Starting a local cluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok with four fake nodes),")
		fmt.Println("    the manager, and one agent per node writing under " + display(c, c.path("nodes")) + "/<node>/ (logs in " + display(c, c.logs()) + "/)")
	}
	began := time.Now()
	st, err := startDaemon(c, withNode)
	if err != nil && withNode && c.realNode == "auto" {
		// The real node is what is new here: without it the demo still runs.
		noRealNode(fmt.Sprintf("the namespaces did not come up (%s; see %s)", oneLine(err.Error()), display(c, filepath.Join(c.logs(), "demo-up.log"))))
		if err := reset(c); err != nil {
			return err
		}
		withNode = false
		st, err = startDaemon(c, false)
	}
	if err != nil {
		return err
	}
	// Once in the namespaces, the cluster stays there with or without its real node.
	inNamespaces := withNode
	if withNode && st.RealNode == "" {
		noRealNode(fmt.Sprintf("it did not start (%s; logs in %s)", oneLine(st.NoRealNode), display(c, c.path("real-node", "logs"))))
		withNode = false
	}
	fmt.Printf("    (up in %.1fs)\n", time.Since(began).Seconds())
	if err := writeWrappers(c, inNamespaces, withNode); err != nil {
		return err
	}
	return show(c, withNode)
}

// noRealNode says, in one line, why the demo runs without a real node.
func noRealNode(why string) {
	fmt.Printf("No real node: %s; the demo runs with its fake nodes only.\n", why)
}

// prepare does before the namespaces what cannot be done inside them,
// where nothing can be downloaded: it builds kustomize (which renders the
// manifests) and writes kwok's configuration from the kwok module.
func prepare(c config) error {
	cmd := exec.Command("go", "tool", "kustomize", "version")
	cmd.Dir = c.root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building kustomize: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if err := localcluster.WriteKwokStages(c.root, c.path("kwok.yaml")); err != nil {
		return fmt.Errorf("writing kwok's configuration: %w", err)
	}
	return nil
}

// reset removes what a failed `demo up` left, keeping the logs.
func reset(c config) error {
	if err := down(c); err != nil {
		return err
	}
	return clearDemoDir(c, "cluster", "nodes", "namespaces", "real-node", "sshd")
}

// startDaemon starts `demo up` in a session of its own (so that it
// outlives this command) and waits until it is ready.
func startDaemon(c config, withNode bool) (state, error) {
	self, err := os.Executable()
	if err != nil {
		return state{}, err
	}
	logFile := filepath.Join(c.logs(), "demo-up.log")
	logf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return state{}, err
	}
	dc := c
	if !withNode {
		dc.realNode = "false"
	}
	daemon := exec.Command(self, append(dc.args(), "up")...)
	daemon.Dir = c.root
	daemon.Stdout, daemon.Stderr = logf, logf
	daemon.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = daemon.Start()
	logf.Close()
	if err != nil {
		return state{}, fmt.Errorf("starting demo up: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- daemon.Wait() }()
	timeout := 3 * time.Minute
	if withNode {
		timeout = 5 * time.Minute
	}
	deadline := time.Now().Add(timeout)
	for {
		if data, err := os.ReadFile(c.readyFile()); err == nil {
			var st state
			if err := json.Unmarshal(data, &st); err != nil {
				return state{}, fmt.Errorf("reading %s: %w", c.readyFile(), err)
			}
			return st, nil
		}
		select {
		case err := <-exited:
			return state{}, fmt.Errorf("the cluster did not come up (demo up: %v, %s)", err, lastLine(logFile))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = down(c)
			return state{}, fmt.Errorf("the cluster did not come up in %s; see %s", timeout, display(c, c.logs()))
		}
	}
}

// down stops a running demo, if any, waits for it to go, and removes the
// cgroups a killed real node left. In a directory that is not a demo's
// (checkDemoDir) it touches nothing.
func down(c config) error {
	if exists, err := checkDemoDir(c); err != nil || !exists {
		return err
	}
	defer removeLeftCgroups(c)
	data, err := os.ReadFile(c.pidFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || !isDemoUp(pid) {
		return os.Remove(c.pidFile()) // not running any more
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("the demo (process %d) belongs to another user: stop it as that user", pid)
	} else if err != nil {
		return os.Remove(c.pidFile())
	}
	// The real node deletes its pods through the API and stops its
	// programs one by one: that takes a while.
	deadline := time.Now().Add(3 * time.Minute)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			fmt.Println("demo: still running after 3 minutes; killing it")
			_ = syscall.Kill(pid, syscall.SIGKILL)
			for syscall.Kill(pid, 0) == nil && isDemoUp(pid) {
				time.Sleep(100 * time.Millisecond)
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = os.Remove(c.pidFile())
	fmt.Println("demo: stopped")
	return nil
}

// isDemoUp says whether pid is a `demo up` process (and not another that
// took the number of a demo gone without removing its PID file).
func isDemoUp(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
	return len(args) > 1 && args[len(args)-1] == "up"
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// lastLine is the last non-empty line of a log file.
func lastLine(file string) string {
	data, _ := os.ReadFile(file)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return oneLine(lines[len(lines)-1])
}

// oneLine squeezes a message into one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

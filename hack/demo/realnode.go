package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
)

// The real node.
const (
	realNodeName = "real-1"
	// The image archives it imports, in config.images.
	operatorArchive = "nodeaccess-operator.tar"
	pauseArchive    = "pause.tar"
)

// realNodeLabels put the real node in the payments pool, beside two fake nodes.
var realNodeLabels = map[string]string{"node.example.com/pool": "payments", "node-role.kubernetes.io/worker": ""}

// facts are what decides whether a real node can run here.
type facts struct {
	// mode is -real-node: auto, true or false.
	mode string
	root bool
	// namespaces is why private network, mount and PID namespaces cannot be made.
	namespaces error
	// cgroups is why the node cannot make its cgroups.
	cgroups error
	// packages is hack/node-packages.sh --check's complaint.
	packages string
	// missing are the built files the node needs that are not there, or
	// cannot be read.
	missing []string
}

// blocker is why no real node can run, in one line, or "".
func blocker(f facts) string {
	switch {
	case f.mode == "false":
		return "turned off (DEMO_REAL_NODE=false)"
	case !f.root:
		return "it needs root (as root, make demo adds a kubelet, containerd and sshd in private namespaces)"
	case f.namespaces != nil:
		return "private network, mount and PID namespaces cannot be made here (" + oneLine(f.namespaces.Error()) + ")"
	case f.cgroups != nil:
		return "cgroups are unusable here (" + oneLine(f.cgroups.Error()) + ")"
	case f.packages != "":
		return oneLine(f.packages)
	case len(f.missing) > 0:
		return "no " + strings.Join(f.missing, ", ") + " (make demo builds them as root; they failed to build above)"
	}
	return ""
}

// gatherFacts looks at the machine; with built, also at the files that
// make demo builds only when a real node can run (kubelet, kube-proxy,
// the image archives).
func gatherFacts(c config, built bool) facts {
	f := facts{mode: c.realNode, root: os.Geteuid() == 0}
	if f.mode == "false" || !f.root {
		return f
	}
	f.namespaces = tryNamespaces()
	f.cgroups = localcluster.CheckCgroups()
	check := exec.Command(filepath.Join(c.root, "hack", "node-packages.sh"), "--check")
	if out, err := check.CombinedOutput(); err != nil {
		f.packages = strings.TrimPrefix(strings.TrimSpace(string(out)), "node-packages.sh: ")
		if f.packages == "" {
			f.packages = "hack/node-packages.sh --check: " + err.Error()
		}
	}
	if !built {
		return f
	}
	for _, b := range []string{"kubelet", "kube-proxy"} {
		if _, err := os.Stat(filepath.Join(c.k8sBin, b)); err != nil {
			f.missing = append(f.missing, display(c, filepath.Join(c.k8sBin, b)))
		}
	}
	for _, a := range []string{operatorArchive, pauseArchive} {
		if _, err := imageRef(filepath.Join(c.images, a)); err != nil {
			f.missing = append(f.missing, display(c, filepath.Join(c.images, a)))
		}
	}
	return f
}

// tryNamespaces runs true in new network, mount and PID namespaces.
func tryNamespaces() error {
	bin, err := exec.LookPath("true")
	if err != nil {
		return err
	}
	cmd := exec.Command(bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID}
	return cmd.Run()
}

// imageRef is the tag of an image archive (internal/image writes a
// docker-save manifest.json beside the OCI layout). It reads that file
// alone: containerd checks the blobs when the node imports the archive.
func imageRef(archive string) (string, error) {
	f, err := os.Open(archive)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", fmt.Errorf("reading %s: no manifest.json", archive)
		}
		if err != nil {
			return "", fmt.Errorf("reading %s: %w", archive, err)
		}
		if h.Name != "manifest.json" {
			continue
		}
		var manifest []struct{ RepoTags []string }
		if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&manifest); err != nil {
			return "", fmt.Errorf("reading %s: manifest.json: %w", archive, err)
		}
		if len(manifest) != 1 || len(manifest[0].RepoTags) == 0 {
			return "", fmt.Errorf("reading %s: manifest.json names no single tagged image", archive)
		}
		return manifest[0].RepoTags[0], nil
	}
}

// upInNamespaces runs `demo up` again inside private network, mount and
// PID namespaces, whose first process's PID the wrappers find in
// config.nsDir()/init.pid, and passes SIGTERM and SIGINT on to it. When
// the namespaces are gone, so is everything that ran in them; only their
// cgroups could outlive a killed run, and those are removed.
func upInNamespaces(c config) error {
	if err := writePidFile(c); err != nil {
		return err
	}
	defer os.Remove(c.pidFile())
	defer os.Remove(c.readyFile())
	defer removeLeftCgroups(c)
	if err := os.MkdirAll(c.nsDir(), 0o700); err != nil {
		return err
	}
	done := make(chan struct{})
	defer close(done)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go forwardSignals(c, signals, done)
	var ids []localcluster.Account
	for i, a := range accounts {
		ids = append(ids, localcluster.Account{Name: a, UID: accountID(i)})
	}
	code, err := localcluster.RunInPrivateNamespaces(localcluster.PrivateOptions{
		Dir: c.nsDir(), Accounts: ids, Keep: []string{c.root, c.dir, c.bin, c.images, c.k8sBin},
	})
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("demo up in the private namespaces exited with status %d", code)
	}
	return nil
}

// forwardSignals passes each signal on to the namespaces' first process,
// which passes it to `demo up` inside; it sends it again every 10 s until
// done (a signal that came before the namespaces' init had its handler is
// lost: an init ignores what it does not handle).
func forwardSignals(c config, signals <-chan os.Signal, done <-chan struct{}) {
	var sig os.Signal
	for {
		var tick <-chan time.Time
		if sig != nil {
			tick = time.After(10 * time.Second)
		}
		select {
		case <-done:
			return
		case sig = <-signals:
		case <-tick:
		}
		if data, err := os.ReadFile(filepath.Join(c.nsDir(), "init.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil {
				_ = syscall.Kill(pid, sig.(syscall.Signal))
			}
		}
	}
}

// removeLeftCgroups removes the real node's cgroups when a killed run left
// them (a node that stops removes its own).
func removeLeftCgroups(c config) {
	if os.Geteuid() != 0 {
		return
	}
	if err := localcluster.RemoveCgroups(c.cgroupName()); err != nil {
		fmt.Fprintln(os.Stderr, "demo: removing the real node's cgroups:", err)
	}
}

// realNode is the running real node and its sshd.
type realNode struct {
	node *localcluster.RealNode
	sshd *localcluster.SSHD
}

func (r *realNode) name() string { return r.node.Name() }

// startRealNode starts, inside the namespaces, the node's sshd (first, so
// that the agent finds it when it first probes for host keys) and the
// node itself, which imports the image archives and registers; deploy's
// hand-written key is already in its authorized_keys.
func startRealNode(ctx context.Context, c config, cluster *localcluster.Cluster) (*realNode, error) {
	pauseRef, err := imageRef(filepath.Join(c.images, pauseArchive))
	if err != nil {
		return nil, err
	}
	if err := writeHandWritten("deploy", accountID(0), deploysOwnKey); err != nil {
		return nil, fmt.Errorf("writing deploy's own key on the real node: %w", err)
	}
	sshd, err := localcluster.StartSSHD(ctx, localcluster.SSHDOptions{Dir: c.path("sshd"), Address: localcluster.DefaultNodeIP})
	if err != nil {
		return nil, fmt.Errorf("starting the real node's sshd: %w", err)
	}
	node, err := cluster.AddRealNode(ctx, localcluster.RealNodeOptions{
		Name: realNodeName, Dir: c.path("real-node"), BinDir: c.k8sBin, SandboxImage: pauseRef,
		Images: []string{filepath.Join(c.images, pauseArchive), filepath.Join(c.images, operatorArchive)},
		Labels: realNodeLabels, CgroupName: c.cgroupName(),
	})
	if err != nil {
		sshd.Stop()
		return nil, fmt.Errorf("starting the real node: %w", err)
	}
	return &realNode{node: node, sshd: sshd}, nil
}

// stop stops sshd and the node, which deletes its pods through the API
// first and says what it could not remove.
func (r *realNode) stop() {
	if r == nil {
		return
	}
	r.sshd.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := r.node.Stop(ctx); err != nil {
		fmt.Println("demo: stopping the real node:", err)
	}
}

// writeHandWritten writes an account's authorized_keys in the namespaces'
// /home as sshd's StrictModes wants it: .ssh 0700, the file 0600, both the
// account's.
func writeHandWritten(account string, id int, content string) error {
	if !localcluster.InPrivateNamespaces() {
		return errors.New("the real node's homes exist only in its namespaces")
	}
	dir := filepath.Join("/home", account, ".ssh")
	file := filepath.Join(dir, "authorized_keys")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chown(dir, id, id); err != nil {
		return err
	}
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		return err
	}
	return os.Chown(file, id, id)
}

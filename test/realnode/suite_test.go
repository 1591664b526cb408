// Package realnode proves the local cluster's real node: a kubelet, a
// kube-proxy, Debian's containerd and runc and the CNI plugins, with a real
// OpenSSH sshd, all inside private network, mount and PID namespaces the
// suite makes (localcluster.RunInPrivateNamespaces). Pods run from image
// archives built without a daemon or a registry (hack/image), reach the API
// server through the kubernetes Service as on any cluster, and the agent
// DaemonSet runs exactly as the manager renders it. After the node stops,
// nothing of it is left, inside the namespaces or on the machine.
//
// It needs root, the Debian packages of hack/node-packages.sh, and kubelet
// and kube-proxy in bin/k8s (make k8s-bin); make test-realnode does all that.
package realnode

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

const (
	nodeName = "realnode-1"
	// namespace is the operator's, as config/default installs it.
	namespace = "nodeaccess-system"
	// operatorRef and probeRef tag the images built for the suite.
	operatorRef = "quay.io/nodeaccess/nodeaccess-operator:realnode-test"
	probeRef    = "localhost/nodeaccess-probe:test"
	pauseRef    = "localhost/nodeaccess-pause:local"
	// workDirEnv carries the work directory into the namespaces.
	workDirEnv = "REALNODE_DIR"
)

// accounts exist only in the namespaces' copy of /etc.
var (
	alice    = localcluster.Account{Name: "alice", UID: 2001}
	bob      = localcluster.Account{Name: "bob", UID: 2002}
	accounts = []localcluster.Account{alice, bob}
)

var (
	workDir   string
	cluster   *localcluster.Cluster
	node      *localcluster.RealNode
	network   *localcluster.NodeNetwork
	sshd      *localcluster.SSHD
	k8s       client.Client
	clientset kubernetes.Interface
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

// outside builds the images (go may need the module proxy, which the
// namespaces cannot reach), runs the suite in private namespaces, and then
// checks that the machine's mount table and cgroups are as before.
func outside() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "realnode:", err)
		return 1
	}
	dir := os.Getenv(workDirEnv)
	if dir == "" {
		tmp, err := os.MkdirTemp("", "nodeaccess-realnode")
		if err != nil {
			return fail(err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
		os.Setenv(workDirEnv, dir)
	}
	root := testenv.RepoRoot()
	if out, err := exec.Command(filepath.Join(root, "hack", "node-packages.sh"), "--check").CombinedOutput(); err != nil {
		return fail(fmt.Errorf("%s", strings.TrimSpace(string(out))))
	}
	// The manifests are rendered inside by `go tool kustomize`, which
	// cannot download anything there: build it here.
	if err := run(root, "go", "tool", "kustomize", "version"); err != nil {
		return fail(err)
	}
	imageTool := filepath.Join(dir, "bin", "image")
	if err := run(root, "go", "build", "-o", imageTool, "./hack/image"); err != nil {
		return fail(err)
	}
	for _, args := range [][]string{
		{"operator", "-tag", operatorRef, "-o", filepath.Join(dir, "images", "operator.tar")},
		{"pause", "-tag", pauseRef, "-o", filepath.Join(dir, "images", "pause.tar")},
		{"build", "-tag", probeRef, "-o", filepath.Join(dir, "images", "probe.tar"), "./test/realnode/probe"},
	} {
		if err := run(root, imageTool, args...); err != nil {
			return fail(err)
		}
	}
	nsDir := filepath.Join(dir, "namespaces")
	if err := os.MkdirAll(nsDir, 0o700); err != nil {
		return fail(err)
	}
	mountsBefore, cgroupsBefore, err := machineState()
	if err != nil {
		return fail(err)
	}
	code, err := localcluster.RunInPrivateNamespaces(localcluster.PrivateOptions{Dir: nsDir, Accounts: accounts, Keep: []string{root, dir}})
	if err != nil {
		return fail(err)
	}
	// What the node did must have stayed in the namespaces: the machine's
	// mounts, cgroups, account database and the node's directories are as
	// they were.
	mountsAfter, cgroupsAfter, err := machineState()
	if err != nil {
		return fail(err)
	}
	if added, removed := diff(mountsBefore, mountsAfter); len(added)+len(removed) > 0 {
		fmt.Fprintf(os.Stderr, "realnode: the machine's mount table or files changed: now %v, was %v\n", added, removed)
		code = 1
	}
	if added := ownCgroups(diff(cgroupsBefore, cgroupsAfter)); len(added) > 0 {
		fmt.Fprintf(os.Stderr, "realnode: cgroups left on the machine: %v\n", added)
		code = 1
	}
	return code
}

// machinePaths are the machine's files and directories the node's
// programs write to inside the namespaces: the account database, and the
// directories that kubelet, containerd, CNI and sshd hard-code.
var machinePaths = []string{
	"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/cni", "/var/lib/kubelet", "/var/lib/containerd", "/var/lib/cni",
	"/var/log/auth.log", "/var/log/pods", "/var/log/containers", "/usr/libexec/kubernetes", "/run/containerd", "/run/netns", "/run/sshd",
}

// machineState is the machine's mount points (with type and source), the
// first level of its cgroup hierarchies, and whether each of machinePaths
// exists and with what content, as this process sees them (it runs in the
// machine's namespaces).
func machineState() (mounts, cgroups []string, err error) {
	for _, p := range machinePaths {
		state := p + " absent"
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return nil, nil, err
			}
			state = fmt.Sprintf("%s file %x", p, sha256.Sum256(data))
		} else if err == nil {
			state = p + " " + fi.Mode().Type().String()
		}
		mounts = append(mounts, state)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	var hierarchies []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, _ := strings.Cut(sc.Text(), " - ")
		fields, rest := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(rest) < 2 {
			continue
		}
		mounts = append(mounts, fields[4]+" "+rest[0]+" "+rest[1])
		if rest[0] == "cgroup" || rest[0] == "cgroup2" {
			hierarchies = append(hierarchies, fields[4])
		}
	}
	for _, h := range hierarchies {
		entries, err := os.ReadDir(h)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range entries {
			if e.IsDir() {
				cgroups = append(cgroups, filepath.Join(h, e.Name()))
			}
		}
	}
	slices.Sort(mounts)
	slices.Sort(cgroups)
	return mounts, cgroups, sc.Err()
}

// ownCgroups drops from added the cgroup roots of other real nodes (a
// demo left running, say), which come and go on their own.
func ownCgroups(added, _ []string) []string {
	var own []string
	for _, c := range added {
		if !localcluster.IsRealNodeCgroup(c) || filepath.Base(c) == localcluster.CgroupName(nodeName) {
			own = append(own, c)
		}
	}
	return own
}

// diff says what b has that a lacks, and what a has that b lacks.
func diff(a, b []string) (added, removed []string) {
	for _, x := range b {
		if !slices.Contains(a, x) {
			added = append(added, x)
		}
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			removed = append(removed, x)
		}
	}
	return added, removed
}

func run(dir, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", filepath.Base(name), strings.Join(args, " "), err)
	}
	return nil
}

// inside brings up the node network, the cluster (API server on the node
// IP, so pods reach it through the kubernetes Service), the operator's
// manifests, the real node and its sshd, then runs the tests.
func inside(m *testing.M) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "realnode setup:", err)
		return 1
	}
	ctx := context.Background()
	workDir = os.Getenv(workDirEnv)
	root := testenv.RepoRoot()
	k8sBin := os.Getenv("KUBEBUILDER_ASSETS")
	if k8sBin == "" {
		k8sBin = filepath.Join(root, "bin", "k8s")
	}
	var err error
	if network, err = localcluster.CreateNodeNetwork(""); err != nil {
		return fail(err)
	}
	defer network.Delete()
	if cluster, err = localcluster.Start(ctx, localcluster.Options{
		Dir: filepath.Join(workDir, "cluster"), BinDir: k8sBin, Address: network.IP,
	}); err != nil {
		return fail(err)
	}
	defer cluster.Stop()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = nav1.AddToScheme(scheme)
	if k8s, err = client.New(cluster.Config, client.Options{Scheme: scheme}); err != nil {
		return fail(err)
	}
	if clientset, err = kubernetes.NewForConfig(cluster.Config); err != nil {
		return fail(err)
	}
	if err := localcluster.ApplyManifests(ctx, k8s, root); err != nil {
		return fail(err)
	}
	images := filepath.Join(workDir, "images")
	node, err = cluster.AddRealNode(ctx, localcluster.RealNodeOptions{
		Name: nodeName, Dir: filepath.Join(workDir, "node"), BinDir: k8sBin, SandboxImage: pauseRef,
		Images: []string{filepath.Join(images, "pause.tar"), filepath.Join(images, "operator.tar"), filepath.Join(images, "probe.tar")},
		Labels: map[string]string{"pool": "real"},
	})
	defer func() {
		if err := node.Stop(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "realnode teardown:", err)
		}
	}()
	if err != nil {
		return fail(err)
	}
	if sshd, err = localcluster.StartSSHD(ctx, localcluster.SSHDOptions{Dir: filepath.Join(workDir, "sshd"), Address: node.IP()}); err != nil {
		return fail(err)
	}
	defer sshd.Stop()
	return m.Run()
}

// Package realnode proves the product on a real node: a kubelet, a
// kube-proxy, Debian's containerd and runc and the CNI plugins, with a real
// OpenSSH sshd, all inside private network, mount and PID namespaces the
// suite makes (localcluster.RunInPrivateNamespaces).
//
// The operator is installed as a user installs it: real OLM (its olm and
// catalog operators as processes) from the committed catalog/, served by
// opm, through a CatalogSource and a Subscription, with the operator image
// built as an archive (no daemon, no registry) tagged exactly as the CSV
// names it and imported into the node's containerd: first the released
// 0.1.0, from a catalog holding only it, with its image built from its
// recorded commit; then, a grant logging in back to back, the upgrade to
// this version through the Subscription (install_upgrade_test.go), so that every
// test runs on an upgraded install. The CSV's Deployment
// then runs the manager as a real pod on the real node, reaching the API
// server through the kubernetes Service; the manager creates the agent
// DaemonSet, whose pod writes the node's authorized_keys; and real ssh
// logins, checked against the host keys the plugin publishes, prove every
// grant and every revocation. After the node stops, nothing of it is left,
// inside the namespaces or on the machine.
//
// It needs root, the Debian packages of hack/node-packages.sh, and kubelet,
// kube-proxy, olm, catalog and opm in bin/k8s (make k8s-bin); make
// test-realnode does all that.
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
	"time"

	operatorsv1 "github.com/operator-framework/api/pkg/operators/v1"
	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

const (
	nodeName = "realnode-1"
	// namespace is where OLM installs the operator: OperatorHub's
	// namespace with the global OperatorGroup.
	namespace = localcluster.OperatorsNamespace
	// packageName, catalogName and channel are what the Subscription names.
	packageName = "nodeaccess-operator"
	catalogName = "nodeaccess-catalog"
	channel     = "stable"
	// managerDeployment is the CSV's Deployment.
	managerDeployment = "nodeaccess-controller-manager"
	pauseRef          = "localhost/nodeaccess-pause:local"
	// workDirEnv carries the work directory into the namespaces, crdsEnv
	// the folder of OLM's CRDs (found with go, outside).
	workDirEnv = "REALNODE_DIR"
	crdsEnv    = "REALNODE_OLM_CRDS"
	// extraHomeRoot is the home root beyond /home the suite configures
	// through the Subscription; it is a directory of the namespaces' own.
	extraHomeRoot = "/var/home"
)

// accounts exist only in the namespaces' copy of /etc; more are added by
// the tests with useradd.
var (
	alice    = localcluster.Account{Name: "alice", UID: 2001}
	bob      = localcluster.Account{Name: "bob", UID: 2002}
	accounts = []localcluster.Account{alice, bob}
)

// podSecurityLabels are the install namespace's Pod Security Admission
// labels: the agents need host paths, so the namespace enforces
// privileged (as config/manager's namespace does) and warns at baseline;
// the manager's pod itself is checked against restricted.
var podSecurityLabels = map[string]string{
	"pod-security.kubernetes.io/enforce":         "privileged",
	"pod-security.kubernetes.io/enforce-version": "latest",
	"pod-security.kubernetes.io/warn":            "baseline",
	"pod-security.kubernetes.io/warn-version":    "latest",
}

var (
	workDir    string
	k8sBin     string
	cluster    *localcluster.Cluster
	olm        *localcluster.OLM
	node       *localcluster.RealNode
	network    *localcluster.NodeNetwork
	sshd       *localcluster.SSHD
	k8s        client.Client
	clientset  kubernetes.Interface
	imageRef   string
	pluginBin  string
	sshConfig  string
	handKey    string // alice's own private key, in her hand-written lines
	handLines  []byte // alice's authorized_keys as she wrote it
	installed  time.Duration
	nodeIsDown bool
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

// csvImage is the operator image the committed bundle's CSV runs.
func csvImage(root string) (string, error) {
	data, err := os.ReadFile(filepath.Join(root, "bundle", "manifests", packageName+".clusterserviceversion.yaml"))
	if err != nil {
		return "", err
	}
	csv := &operatorsv1alpha1.ClusterServiceVersion{}
	if err := yaml.Unmarshal(data, csv); err != nil {
		return "", fmt.Errorf("reading the CSV: %w", err)
	}
	for _, d := range csv.Spec.InstallStrategy.StrategySpec.DeploymentSpecs {
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name == "manager" {
				return c.Image, nil
			}
		}
	}
	return "", fmt.Errorf("the CSV %s runs no manager container", csv.Name)
}

// outside builds the images and the plugin (go may need the module proxy,
// which the namespaces cannot reach), runs the suite in private
// namespaces, and then checks that the machine's mount table and cgroups
// are as before.
func outside() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "realnode:", err)
		return 1
	}
	start := time.Now()
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
	ref, err := csvImage(root)
	if err != nil {
		return fail(err)
	}
	crds, err := testenv.OLMCRDs()
	if err != nil {
		return fail(err)
	}
	os.Setenv(crdsEnv, crds)
	imageTool := filepath.Join(dir, "bin", "image")
	for _, b := range []struct{ out, pkg string }{{imageTool, "./hack/image"}, {filepath.Join(dir, "bin", "kubectl-nodeaccess"), "./cmd/kubectl-nodeaccess"}} {
		if err := run(root, "go", "build", "-o", b.out, b.pkg); err != nil {
			return fail(err)
		}
	}
	// The operator image as OLM will run it: the CSV's tag, which the
	// kubelet finds in containerd (pull policy IfNotPresent) without a registry.
	for _, args := range [][]string{
		{"operator", "-tag", ref, "-o", filepath.Join(dir, "images", "operator.tar")},
		{"pause", "-tag", pauseRef, "-o", filepath.Join(dir, "images", "pause.tar")},
	} {
		if err := run(root, imageTool, args...); err != nil {
			return fail(err)
		}
	}
	fmt.Fprintf(os.Stderr, "realnode: images and plugin built in %s\n", time.Since(start).Round(100*time.Millisecond))
	if err := buildReleasedImage(root, dir); err != nil {
		return fail(err)
	}
	nsDir := filepath.Join(dir, "namespaces")
	if err := os.MkdirAll(nsDir, 0o700); err != nil {
		return fail(err)
	}
	mountsBefore, cgroupsBefore, err := machineState()
	if err != nil {
		return fail(err)
	}
	code, err := localcluster.RunInPrivateNamespaces(localcluster.PrivateOptions{
		Dir: nsDir, Accounts: accounts, Dirs: []string{extraHomeRoot, "/var/mail"}, Keep: []string{root, dir, crds},
	})
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
	// Other real nodes of this machine (another run, the demo) make and
	// remove cgroups of their own meanwhile: not this run's.
	if added := ownCgroups(diff(cgroupsBefore, cgroupsAfter)); len(added) > 0 {
		fmt.Fprintf(os.Stderr, "realnode: cgroups left on the machine: %v\n", added)
		code = 1
	}
	return code
}

// machinePaths are the machine's files and directories the node's
// programs and the tests write to inside the namespaces: the account
// database (useradd), the extra home root, and the directories that
// kubelet, containerd, CNI and sshd hard-code.
var machinePaths = []string{
	"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/cni", "/var/lib/kubelet", "/var/lib/containerd", "/var/lib/cni",
	"/var/log/auth.log", "/var/log/pods", "/var/log/containers", "/usr/libexec/kubernetes", "/run/containerd", "/run/netns", "/run/sshd",
	extraHomeRoot, "/var/mail", "/root/.ssh",
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
// IP, so pods reach it through the kubernetes Service), OLM, the real node
// and its sshd, writes alice's own authorized_keys, installs the operator
// through OLM, writes the ssh configuration the plugin makes, then runs
// the tests.
func inside(m *testing.M) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "realnode setup:", err)
		return 1
	}
	ctx := context.Background()
	start := time.Now()
	workDir = os.Getenv(workDirEnv)
	root := testenv.RepoRoot()
	if k8sBin = os.Getenv("KUBEBUILDER_ASSETS"); k8sBin == "" {
		k8sBin = filepath.Join(root, "bin", "k8s")
	}
	pluginBin = filepath.Join(workDir, "bin", "kubectl-nodeaccess")
	var err error
	if imageRef, err = csvImage(root); err != nil {
		return fail(err)
	}
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
	_ = operatorsv1alpha1.AddToScheme(scheme)
	_ = operatorsv1.AddToScheme(scheme)
	if k8s, err = client.New(cluster.Config, client.Options{Scheme: scheme}); err != nil {
		return fail(err)
	}
	if clientset, err = kubernetes.NewForConfig(cluster.Config); err != nil {
		return fail(err)
	}
	if olm, err = cluster.StartOLM(ctx, k8s, localcluster.OLMOptions{
		BinDir: k8sBin, CRDDir: os.Getenv(crdsEnv), LogDir: filepath.Join(workDir, "olm"), OperatorsNamespaceLabels: podSecurityLabels,
	}); err != nil {
		return fail(err)
	}
	defer olm.Stop()
	images := filepath.Join(workDir, "images")
	node, err = cluster.AddRealNode(ctx, localcluster.RealNodeOptions{
		Name: nodeName, Dir: filepath.Join(workDir, "node"), BinDir: k8sBin, SandboxImage: pauseRef,
		Images: []string{filepath.Join(images, "pause.tar"), filepath.Join(images, "operator.tar"), releasedImageArchive(workDir)},
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
	// sshd runs before the agents start, so that their first probe
	// publishes its host keys. Root may log in with a key: whether root
	// gets one is the operator's decision (--allow-root-user). It logs as
	// on a Debian node with systemd: to journald, which forwards to
	// rsyslogd, which writes /var/log/auth.log.
	if sshd, err = localcluster.StartSSHD(ctx, localcluster.SSHDOptions{Dir: filepath.Join(workDir, "sshd"), Address: node.IP(), RootKeyLogins: true, Journald: true}); err != nil {
		return fail(err)
	}
	defer sshd.Stop()
	if err := writeHandWrittenKeys(); err != nil {
		return fail(err)
	}
	fmt.Fprintf(os.Stderr, "realnode: cluster, OLM, node and sshd up in %s\n", time.Since(start).Round(100*time.Millisecond))
	// The released version first, then the upgrade to this one: every
	// test runs on an upgraded install.
	stopCatalogs, err := installAndUpgrade(ctx, root)
	defer stopCatalogs()
	if err != nil {
		return fail(err)
	}
	return m.Run()
}

// writeHandWrittenKeys writes alice's authorized_keys as she would, before
// any agent runs: a comment line, a blank line, her own key with an odd
// comment, and no final newline. Every test checks these bytes stay.
func writeHandWrittenKeys() error {
	handKey = filepath.Join(workDir, "alice-own")
	pub, err := localcluster.WriteKeyPair(handKey, "alice@old-laptop")
	if err != nil {
		return err
	}
	// An odd comment: tabs, quotes, a '#', non-ASCII.
	handLines = []byte("# my own key, added by hand: keep it\n\n" + pub + "\t \"mine\" # über \t\n# trailing comment, no newline")
	dir := filepath.Join("/home", alice.Name, ".ssh")
	for _, err := range []error{
		os.MkdirAll(dir, 0o700), os.Chown(dir, alice.UID, alice.UID),
		os.WriteFile(filepath.Join(dir, "authorized_keys"), handLines, 0o600),
		os.Chown(filepath.Join(dir, "authorized_keys"), alice.UID, alice.UID),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

package localcluster

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// The machine's programs a real node runs (Debian's packages; see
// hack/node-packages.sh).
const (
	containerdBin = "/usr/bin/containerd"
	ctrBin        = "/usr/bin/ctr"
	runcBin       = "/usr/sbin/runc"
	cniBinDir     = "/usr/lib/cni"
	// containerdSocket is containerd's default socket, in the namespaces' /run.
	containerdSocket = "/run/containerd/containerd.sock"
)

// RealNodeOptions say what the real node runs.
type RealNodeOptions struct {
	// Name is the node's name (its kubelet's client certificate says
	// system:node:<Name>).
	Name string
	// Dir holds the node's configuration, certificates and logs (logs/).
	Dir string
	// BinDir holds kubelet and kube-proxy.
	BinDir string
	// Images are image archives (internal/image) imported into containerd
	// before the kubelet starts; pods use them with no registry.
	Images []string
	// SandboxImage is the pause image's tag, among Images.
	SandboxImage string
	// Labels are set on the Node once it registered.
	Labels map[string]string
	// CgroupName is the cgroup, in every hierarchy of the machine, under
	// which the kubelet puts the node's pods (CgroupName(Name) when
	// empty). It must start with "nodeaccess-" and be the node's alone:
	// give it a name of its own when another real node of the same name
	// may run on the machine at the same time (a demo and a test, say).
	CgroupName string
}

// RealNode is a real Kubernetes node of the local cluster: Debian's
// containerd and runc, the CNI bridge, host-local and portmap plugins, a
// kubelet and a kube-proxy built from Go modules, all inside the private
// namespaces (RunInPrivateNamespaces), with the namespaces' /etc, homes
// and state directories.
type RealNode struct {
	opts    RealNodeOptions
	cluster *Cluster
	ip      string
	procs   map[string]*proc
	// What existed before the node started: Stop removes what is new.
	baseMounts  map[string]bool
	baseLinks   []string
	cgroupRoots []string
	clientset   kubernetes.Interface
}

// AddRealNode starts a real node and waits until it is Ready, untainted,
// and kube-proxy serves the cluster's Services. The cluster must have
// been started with Options.Address set to the node network's IP, inside
// private namespaces; the node uses the cluster's CA for its certificates.
func (c *Cluster) AddRealNode(ctx context.Context, opts RealNodeOptions) (_ *RealNode, err error) {
	if !InPrivateNamespaces() {
		return nil, errors.New("a real node runs only inside private namespaces (RunInPrivateNamespaces): it writes where the kubelet and containerd hard-code")
	}
	if opts.Name == "" || opts.Dir == "" || opts.BinDir == "" || opts.SandboxImage == "" {
		return nil, errors.New("a real node needs a name, a directory, a binary directory and a sandbox image")
	}
	if opts.CgroupName == "" {
		opts.CgroupName = CgroupName(opts.Name)
	}
	if !IsRealNodeCgroup(opts.CgroupName) || strings.ContainsRune(opts.CgroupName, '/') {
		return nil, fmt.Errorf("cgroup name %q: a real node's cgroup is one name starting with %q", opts.CgroupName, cgroupPrefix)
	}
	ip := net.ParseIP(c.opts.Address)
	if ip == nil || ip.IsLoopback() {
		return nil, fmt.Errorf("the cluster's API server binds %s: a real node's pods cannot reach it (start the cluster with the node network's IP as Address)", c.opts.Address)
	}
	if err := checkNodePrograms(opts.BinDir); err != nil {
		return nil, err
	}
	if err := checkInotify(); err != nil {
		return nil, err
	}
	clientset, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	n := &RealNode{opts: opts, cluster: c, ip: ip.String(), procs: map[string]*proc{}, clientset: clientset}
	if n.baseMounts, err = mountIDs(); err != nil {
		return nil, err
	}
	if n.baseLinks, err = links(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			n.Stop(context.Background())
		}
	}()
	for _, d := range []string{"logs", "pki", "cni/net.d"} {
		if err := os.MkdirAll(filepath.Join(opts.Dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	if err := n.writeConfig(); err != nil {
		return nil, err
	}
	if n.cgroupRoots, err = makeCgroupRoot(opts.CgroupName); err != nil {
		return nil, err
	}
	if err := n.StartContainerd(ctx); err != nil {
		return nil, err
	}
	for _, archive := range opts.Images {
		if err := n.ctr("images", "import", archive); err != nil {
			return nil, fmt.Errorf("importing %s: %w", archive, err)
		}
	}
	if err := n.StartKubelet(ctx); err != nil {
		return nil, err
	}
	if err := n.start("kube-proxy", filepath.Join(opts.BinDir, "kube-proxy"), "--config="+n.path("kube-proxy.yaml"), "--v=1"); err != nil {
		return nil, err
	}
	if err := n.waitReady(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// IP is the node's InternalIP.
func (n *RealNode) IP() string { return n.ip }

// Name is the node's name.
func (n *RealNode) Name() string { return n.opts.Name }

// LogFile is the log of one of the node's programs (containerd, kubelet, kube-proxy).
func (n *RealNode) LogFile(name string) string { return filepath.Join(n.opts.Dir, "logs", name+".log") }

func (n *RealNode) path(name string) string { return filepath.Join(n.opts.Dir, name) }

// checkNodePrograms names what is missing to run a node.
func checkNodePrograms(binDir string) error {
	var missing []string
	for _, p := range []string{containerdBin, ctrBin, runcBin, filepath.Join(cniBinDir, "bridge"), filepath.Join(cniBinDir, "host-local"),
		filepath.Join(cniBinDir, "loopback"), filepath.Join(cniBinDir, "portmap")} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	for _, p := range []string{"iptables", "iptables-restore", "ip"} {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("a real node needs %s (hack/node-packages.sh installs them)", strings.Join(missing, ", "))
	}
	for _, b := range []string{"kubelet", "kube-proxy"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			return fmt.Errorf("%s is not built (make k8s-bin): %w", b, err)
		}
	}
	return nil
}

// inotifyNeeded is how many inotify instances the node's programs take
// at start (the kubelet's cAdvisor and file watchers, containerd's CNI
// watch), with a margin.
const inotifyNeeded = 8

// checkInotify makes sure the user may still open the inotify instances
// the kubelet needs: the limit (fs.inotify.max_user_instances, 128 by
// default) counts every process of the user on the machine, and a kubelet
// that gets none exits at once ("inotify_init: too many open files").
func checkInotify() error {
	var fds []int
	defer func() {
		for _, fd := range fds {
			_ = syscall.Close(fd)
		}
	}()
	for range inotifyNeeded {
		fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC)
		if err != nil {
			return fmt.Errorf("a real node needs %d inotify instances and only %d are free for this user (fs.inotify.max_user_instances counts every process of the machine): %w", inotifyNeeded, len(fds), err)
		}
		fds = append(fds, fd)
	}
	return nil
}

// writeConfig writes the certificates, kubeconfigs and configuration
// files of containerd, CNI, the kubelet and kube-proxy.
func (n *RealNode) writeConfig() error {
	o, ip := n.opts, net.ParseIP(n.ip)
	pki := &pki{dir: n.path("pki"), ca: n.cluster.pki.ca, key: n.cluster.pki.key}
	if err := pki.issue("kubelet", "system:node:"+o.Name, []string{"system:nodes"}, x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
		return err
	}
	if err := pki.issue("kubelet-serving", "system:node:"+o.Name, []string{"system:nodes"}, x509.ExtKeyUsageServerAuth, []net.IP{ip}, []string{o.Name}); err != nil {
		return err
	}
	if err := pki.issue("kube-proxy", "system:kube-proxy", nil, x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
		return err
	}
	ca := n.cluster.pki.path("ca.crt")
	for _, user := range []string{"kubelet", "kube-proxy"} {
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: n.cluster.server(), CertificateAuthority: ca}
		cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificate: pki.path(user + ".crt"), ClientKey: pki.path(user + ".key")}
		cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: user}
		cfg.CurrentContext = "local"
		if err := clientcmd.WriteToFile(*cfg, n.path(user+".kubeconfig")); err != nil {
			return err
		}
	}
	files := map[string]string{
		"containerd.toml":                  containerdConfig(o.SandboxImage, n.path("cni/net.d")),
		"cni/net.d/10-nodeaccess.conflist": cniConfig(),
		"kubelet.yaml":                     kubeletConfig(n.ip, "/"+o.CgroupName, ca, pki.path("kubelet-serving.crt"), pki.path("kubelet-serving.key")),
		"kube-proxy.yaml":                  kubeProxyConfig(o.Name, n.ip, n.path("kube-proxy.kubeconfig")),
	}
	for name, content := range files {
		if err := os.WriteFile(n.path(name), []byte(content), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// containerdConfig is Debian containerd 1.6's configuration for the node:
// its default root and state (test directories in the namespaces), the
// local pause image as sandbox, the CNI configuration of the node, and
// restrict_oom_score_adj, without which no sandbox starts where processes
// may not lower their OOM score (no CAP_SYS_RESOURCE).
func containerdConfig(sandboxImage, cniConfDir string) string {
	return `version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
oom_score = 0

[grpc]
  address = "` + containerdSocket + `"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "` + sandboxImage + `"
  restrict_oom_score_adj = true
  enable_unprivileged_ports = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "` + runcBin + `"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "` + cniBinDir + `"
    conf_dir = "` + cniConfDir + `"
    max_conf_num = 1
`
}

// cniConfig links pods to a bridge whose address is their gateway.
func cniConfig() string {
	return `{
  "cniVersion": "1.0.0",
  "name": "nodeaccess",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "` + cniBridge + `",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "` + PodCIDR + `", "gateway": "` + PodGateway + `"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`
}

// kubeletConfig is the kubelet's configuration: cgroupfs under a cgroup
// root of its own, failCgroupV1 false (cgroup v1 machines), x509 and
// webhook authentication, webhook authorization, no eviction and no image
// garbage collection (the images were imported by hand and cannot be
// pulled again).
func kubeletConfig(ip, cgroupRoot, ca, cert, key string) string {
	return `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: ` + cgroupRoot + `
cgroupsPerQOS: true
enforceNodeAllocatable: []
failSwapOn: false
containerRuntimeEndpoint: unix://` + containerdSocket + `
address: ` + ip + `
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: ` + cert + `
tlsPrivateKeyFile: ` + key + `
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ` + ca + `}
authorization:
  mode: Webhook
rotateCertificates: false
serverTLSBootstrap: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
evictionHard: {"memory.available": "0%", "nodefs.available": "0%", "imagefs.available": "0%", "nodefs.inodesFree": "0%"}
mergeDefaultEvictionSettings: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: false
protectKernelDefaults: false
makeIPTablesUtilChains: false
serializeImagePulls: false
maxPods: 32
podPidsLimit: -1
nodeStatusReportFrequency: 10s
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
fileCheckFrequency: 10s
`
}

// kubeProxyConfig runs kube-proxy in iptables mode; it leaves the machine-wide
// conntrack settings alone (a network namespace may not change them).
func kubeProxyConfig(name, ip, kubeconfig string) string {
	return `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ` + kubeconfig + `
hostnameOverride: ` + name + `
bindAddress: ` + ip + `
mode: iptables
clusterCIDR: ` + PodCIDR + `
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["` + ip + `/32"]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`
}

// StartContainerd starts containerd (again, after a stop) and waits until it answers.
func (n *RealNode) StartContainerd(ctx context.Context) error {
	if err := n.start("containerd", containerdBin, "--config="+n.path("containerd.toml")); err != nil {
		return err
	}
	return waitFor(ctx, 30*time.Second, "containerd", func() error {
		if err := n.exited("containerd"); err != nil {
			return err
		}
		return n.ctr("version")
	})
}

// StopContainerd stops containerd; the containers it runs keep running
// (their shims outlive it), as on a real node.
func (n *RealNode) StopContainerd() { n.stop("containerd") }

// StartKubelet starts the kubelet (again, after StopKubelet).
func (n *RealNode) StartKubelet(ctx context.Context) error {
	return n.start("kubelet", filepath.Join(n.opts.BinDir, "kubelet"), "--config="+n.path("kubelet.yaml"),
		"--kubeconfig="+n.path("kubelet.kubeconfig"), "--hostname-override="+n.opts.Name, "--node-ip="+n.ip, "--v=1")
}

// StopKubelet stops the kubelet; its pods keep running, as on a real node.
func (n *RealNode) StopKubelet() { n.stop("kubelet") }

// start runs a program of the node with its log in Dir/logs.
func (n *RealNode) start(name, bin string, args ...string) error {
	logf, err := os.OpenFile(n.LogFile(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = withoutCI(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	n.procs[name] = p
	return nil
}

func (n *RealNode) exited(name string) error {
	p, ok := n.procs[name]
	if !ok {
		return fmt.Errorf("%s is not running", name)
	}
	select {
	case <-p.done:
		return fmt.Errorf("%s %w (see %s)", name, errExited, n.LogFile(name))
	default:
		return nil
	}
}

// stop sends SIGTERM to a program's process group, SIGKILL after 20 s.
func (n *RealNode) stop(name string) {
	p, ok := n.procs[name]
	if !ok {
		return
	}
	p.stopGroup(20 * time.Second)
	delete(n.procs, name)
}

// ctr runs Debian's ctr against the node's containerd, in the CRI's namespace.
func (n *RealNode) ctr(args ...string) error {
	cmd := exec.Command(ctrBin, append([]string{"--address", containerdSocket, "--namespace", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (n *RealNode) ctrList(args ...string) []string {
	out, err := exec.Command(ctrBin, append([]string{"--address", containerdSocket, "--namespace", "k8s.io"}, args...)...).Output()
	if err != nil {
		return nil
	}
	return strings.Fields(string(out))
}

// waitReady waits for the node to be Ready and untainted, labels it, and
// waits for kube-proxy to serve.
func (n *RealNode) waitReady(ctx context.Context) error {
	var node *corev1.Node
	if err := waitFor(ctx, 120*time.Second, "node "+n.opts.Name+" Ready", func() error {
		for _, name := range []string{"containerd", "kubelet", "kube-proxy"} {
			if err := n.exited(name); err != nil {
				return err
			}
		}
		var err error
		if node, err = n.clientset.CoreV1().Nodes().Get(ctx, n.opts.Name, metav1.GetOptions{}); err != nil {
			return err
		}
		if !nodeReady(node) {
			return errors.New("not Ready")
		}
		for _, t := range node.Spec.Taints {
			if t.Key == corev1.TaintNodeNotReady {
				return errors.New("still tainted not-ready")
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if len(n.opts.Labels) > 0 {
		patch := `{"metadata":{"labels":{`
		first := true
		for k, v := range n.opts.Labels {
			if !first {
				patch += ","
			}
			first = false
			patch += strconv.Quote(k) + ":" + strconv.Quote(v)
		}
		patch += "}}}"
		if _, err := n.clientset.CoreV1().Nodes().Patch(ctx, n.opts.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("labelling node %s: %w", n.opts.Name, err)
		}
	}
	return waitFor(ctx, 60*time.Second, "kube-proxy", func() error {
		if err := n.exited("kube-proxy"); err != nil {
			return err
		}
		resp, err := http.Get("http://127.0.0.1:10256/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("kube-proxy healthz %d", resp.StatusCode)
		}
		return nil
	})
}

func nodeReady(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Stop tears the node down and leaves nothing behind: it deletes the pods
// bound to the node through the API (so the kubelet stops them, unmounts
// their volumes and releases their network) and waits for them to go,
// stops the kubelet, kills and removes what containerd still runs, stops
// kube-proxy (removing its rules) and containerd, unmounts what they
// mounted, deletes the links they made and the cgroups, and checks that
// none of it is left. It returns what it could not remove.
func (n *RealNode) Stop(ctx context.Context) error {
	if n == nil {
		return nil
	}
	if _, ok := n.procs["kubelet"]; ok && n.cluster.Healthy() == nil {
		n.deletePods(ctx)
	}
	n.stop("kubelet")
	if _, ok := n.procs["containerd"]; ok {
		for _, t := range n.ctrList("tasks", "ls", "--quiet") {
			_ = n.ctr("tasks", "kill", "--signal", "SIGKILL", t)
		}
		_ = waitFor(ctx, 10*time.Second, "containers stopped", func() error {
			for _, t := range n.ctrList("tasks", "ls", "--quiet") {
				if err := n.ctr("tasks", "delete", t); err != nil {
					return err
				}
			}
			return nil
		})
		for _, c := range n.ctrList("containers", "ls", "--quiet") {
			_ = n.ctr("containers", "delete", c)
		}
	}
	n.stop("kube-proxy")
	if _, err := os.Stat(filepath.Join(n.opts.BinDir, "kube-proxy")); err == nil {
		// Removes the rules kube-proxy made; the namespace's tables are its own anyway.
		_ = exec.Command(filepath.Join(n.opts.BinDir, "kube-proxy"), "--cleanup", "--config="+n.path("kube-proxy.yaml")).Run()
	}
	n.stop("containerd")
	var problems []string
	// Processes still in the node's cgroups, and shims whose containerd is
	// gone: the PID namespace is the test's own, so all of them are the node's.
	killNodeProcesses(n.cgroupRoots)
	if err := n.unmountNew(); err != nil {
		problems = append(problems, err.Error())
	}
	if err := n.deleteNewLinks(); err != nil {
		problems = append(problems, err.Error())
	}
	if err := removeCgroupRoots(n.cgroupRoots); err != nil {
		problems = append(problems, err.Error())
	}
	if left := n.Leftovers(); len(left) > 0 {
		return fmt.Errorf("the real node left %s", strings.Join(left, "; "))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// deletePods deletes every pod bound to the node and waits (at most a
// minute) until those pods are gone. Controllers may put new pods on the
// node meanwhile; Stop removes those by force.
func (n *RealNode) deletePods(ctx context.Context) {
	selector := "spec.nodeName=" + n.opts.Name
	pods, err := n.clientset.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: selector})
	if err != nil {
		return
	}
	for _, p := range pods.Items {
		_ = n.clientset.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID}})
	}
	_ = waitFor(ctx, 60*time.Second, "pods deleted", func() error {
		for _, p := range pods.Items {
			got, err := n.clientset.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) || (err == nil && got.UID != p.UID) {
				continue
			}
			return fmt.Errorf("pod %s/%s still there", p.Namespace, p.Name)
		}
		return nil
	})
}

// Leftovers lists what of the node still exists: its programs, processes
// in its cgroups or shims, mounts and links it made, its cgroups.
func (n *RealNode) Leftovers() []string {
	var left []string
	for name := range n.procs {
		left = append(left, "process "+name)
	}
	for _, pid := range nodeProcesses(n.cgroupRoots) {
		left = append(left, fmt.Sprintf("process %d (%s)", pid, comm(pid)))
	}
	if ids, err := mountIDs(); err == nil {
		for id, mnt := range mountPoints() {
			if ids[id] && !n.baseMounts[id] {
				left = append(left, "mount "+mnt)
			}
		}
	}
	if now, err := links(); err == nil {
		for _, l := range now {
			if !slices.Contains(n.baseLinks, l) {
				left = append(left, "link "+l)
			}
		}
	}
	for _, root := range n.cgroupRoots {
		if _, err := os.Stat(root); err == nil {
			left = append(left, "cgroup "+root)
		}
	}
	slices.Sort(left)
	return left
}

// unmountNew unmounts every mount made since the node started (container
// root file systems, pod volumes, network namespaces, the kubelet's own
// bind mount of its root), the most recent first.
func (n *RealNode) unmountNew() error {
	var failed []string
	for attempt := 0; attempt < 3; attempt++ {
		failed = nil
		lines, err := mountInfo()
		if err != nil {
			return err
		}
		for i := len(lines) - 1; i >= 0; i-- {
			if n.baseMounts[lines[i].id] {
				continue
			}
			if err := syscall.Unmount(lines[i].point, 0); err != nil {
				if err := syscall.Unmount(lines[i].point, syscall.MNT_DETACH); err != nil {
					failed = append(failed, lines[i].point)
				}
			}
		}
		if len(failed) == 0 {
			break
		}
	}
	// The network namespace files CNI made are bind mounts, gone now.
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			_ = os.Remove(filepath.Join("/run/netns", e.Name()))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("could not unmount %s", strings.Join(failed, ", "))
	}
	return nil
}

func (n *RealNode) deleteNewLinks() error {
	now, err := links()
	if err != nil {
		return err
	}
	var failed []string
	for _, l := range now {
		if !slices.Contains(n.baseLinks, l) {
			if err := ipCommand("link", "del", l); err != nil && linkExists(l) {
				// A pod's veth goes by itself when its network namespace
				// does; only one still there is a failure.
				failed = append(failed, l)
			}
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("could not delete links %s", strings.Join(failed, ", "))
	}
	return nil
}

// linkExists says whether a network link of that name exists now.
func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// mountLine is one line of /proc/self/mountinfo.
type mountLine struct{ id, point string }

func mountInfo() ([]mountLine, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lines []mountLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			lines = append(lines, mountLine{id: fields[0], point: unescapeMount(fields[4])})
		}
	}
	return lines, sc.Err()
}

func mountIDs() (map[string]bool, error) {
	lines, err := mountInfo()
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, l := range lines {
		ids[l.id] = true
	}
	return ids, nil
}

func mountPoints() map[string]string {
	lines, _ := mountInfo()
	points := map[string]string{}
	for _, l := range lines {
		points[l.id] = l.point
	}
	return points
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func comm(pid int) string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(data))
}

// Processes are the node's running programs and the containerd shims, by
// PID, with their names.
func (n *RealNode) Processes() map[int]string {
	out := map[int]string{}
	for name, p := range n.procs {
		out[p.cmd.Process.Pid] = name
	}
	for _, pid := range shimProcesses() {
		out[pid] = "containerd-shim-runc-v2"
	}
	return out
}

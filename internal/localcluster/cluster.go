// Package localcluster runs a local Kubernetes control plane from the
// binaries in bin/k8s (built from Go modules): etcd, kube-apiserver,
// kube-controller-manager (so DaemonSets, ReplicaSets and garbage collection
// really run), kube-scheduler, and kwok, which makes fake nodes and the pods
// on them look alive. Everything listens on 127.0.0.1 only; every process is
// started with a parent-death signal, so none outlives the process that
// started it.
package localcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Version is the Kubernetes version the binaries are built at.
const Version = "v1.37.2"

// KwokAnnotation marks the nodes kwok manages.
const KwokAnnotation = "kwok.x-k8s.io/node"

// ServiceCIDR is the cluster's Service IP range; the kubernetes Service
// has its first address, KubernetesServiceIP.
const (
	ServiceCIDR         = "10.96.0.0/16"
	KubernetesServiceIP = "10.96.0.1"
)

// Node is a fake node to create.
type Node struct {
	Name   string
	Labels map[string]string
}

// Options say where the cluster lives and what it holds.
type Options struct {
	// Dir holds the certificates, etcd's data, the kubeconfig and the logs.
	Dir string
	// BinDir holds etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler and kwok.
	BinDir string
	// KwokStages is a kwok configuration file with its Stage definitions.
	KwokStages string
	// Nodes are created and handed to kwok.
	Nodes []Node
	// ControlPlaneOnly starts etcd and kube-apiserver alone: no controllers,
	// scheduler or kwok (Nodes are ignored), for benchmarks that create
	// their own Node objects and want nothing else loading the API server.
	ControlPlaneOnly bool
	// APIServerArgs are added to kube-apiserver's flags (an audit log, say).
	APIServerArgs []string
	// Address is the IP the API server binds and advertises (127.0.0.1 when
	// empty). A real node's pods reach the API server through the
	// kubernetes Service, whose endpoint is this address, so a cluster with
	// a real node binds an address of the node's network (see
	// CreateNodeNetwork) rather than loopback.
	Address string
}

// proc is a started process and a channel closed when it exits.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// stopGroup sends SIGTERM to the process's group and SIGKILL after grace,
// and returns once the process has exited.
func (p *proc) stopGroup(grace time.Duration) {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Cluster is a running local cluster.
type Cluster struct {
	opts       Options
	pki        *pki
	etcdPort   int
	peerPort   int
	apiPort    int
	procs      map[string]*proc
	order      []string
	Kubeconfig string
	Config     *rest.Config
}

// Start brings the cluster up and waits until the API server is ready and
// every node is Ready.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.Address == "" {
		opts.Address = "127.0.0.1"
	}
	c := &Cluster{opts: opts, procs: map[string]*proc{}}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	for _, d := range []string{"logs", "etcd"} {
		if err := os.MkdirAll(filepath.Join(opts.Dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	if c.pki, err = newPKI(filepath.Join(opts.Dir, "pki"), net.ParseIP(opts.Address)); err != nil {
		return nil, fmt.Errorf("making certificates: %w", err)
	}
	ports, err := freePortsOn(opts.Address, 3)
	if err != nil {
		return nil, err
	}
	c.etcdPort, c.apiPort, c.peerPort = ports[0], ports[1], ports[2]
	if err := c.writeKubeconfig(); err != nil {
		return nil, err
	}

	if err := c.StartEtcd(ctx); err != nil {
		return nil, err
	}
	if err := c.StartAPIServer(ctx); err != nil {
		return nil, err
	}
	if opts.ControlPlaneOnly {
		return c, c.Healthy()
	}
	p := c.pki.path
	if err := c.start("kube-controller-manager", "--kubeconfig="+c.Kubeconfig, "--leader-elect=false", "--secure-port=0",
		"--service-account-private-key-file="+p("sa.key"), "--root-ca-file="+p("ca.crt"),
		"--use-service-account-credentials=false"); err != nil {
		return nil, err
	}
	if err := c.start("kube-scheduler", "--kubeconfig="+c.Kubeconfig, "--leader-elect=false", "--secure-port=0"); err != nil {
		return nil, err
	}
	if len(opts.Nodes) == 0 {
		return c, c.Healthy()
	}
	if err := c.start("kwok", "--kubeconfig="+c.Kubeconfig, "--config="+opts.KwokStages,
		"--manage-nodes-with-annotation-selector="+KwokAnnotation+"=fake", "--node-port=0", "--server-address=",
		// Without leases kwok's heartbeat stage renews a node's status about
		// once a minute, and the node lifecycle controller marks the nodes
		// and their pods NotReady in between.
		"--node-lease-duration-seconds=40"); err != nil {
		return nil, err
	}
	if err := c.createNodes(ctx); err != nil {
		return nil, err
	}
	return c, c.Healthy()
}

// Healthy returns an error naming any component that has exited.
func (c *Cluster) Healthy() error {
	var dead []string
	for _, name := range c.order {
		p, ok := c.procs[name]
		if !ok {
			continue
		}
		select {
		case <-p.done:
			dead = append(dead, fmt.Sprintf("%s (see %s)", name, filepath.Join(c.opts.Dir, "logs", name+".log")))
		default:
		}
	}
	if len(dead) > 0 {
		return fmt.Errorf("local cluster components exited: %s", strings.Join(dead, ", "))
	}
	return nil
}

// start runs one binary of BinDir with its log in Dir/logs.
func (c *Cluster) start(name string, args ...string) error {
	logf, err := os.OpenFile(filepath.Join(c.opts.Dir, "logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(c.opts.BinDir, name), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = withoutCI(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	if _, ok := c.procs[name]; !ok && !contains(c.order, name) {
		c.order = append(c.order, name)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	c.procs[name] = p
	return nil
}

// withoutCI drops CI from the environment: some Kubernetes components
// change their behaviour when it is set.
func withoutCI(env []string) []string {
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, "CI=") {
			out = append(out, e)
		}
	}
	return out
}

// StartEtcd starts etcd (again, after StopEtcd) on the same data and port,
// and waits until it is healthy.
func (c *Cluster) StartEtcd(ctx context.Context) error {
	client := fmt.Sprintf("http://127.0.0.1:%d", c.etcdPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", c.peerPort)
	if err := c.start("etcd", "--data-dir="+filepath.Join(c.opts.Dir, "etcd"), "--name=local",
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer, "--initial-cluster=local="+peer,
		"--listen-metrics-urls=", "--quota-backend-bytes=8589934592", "--unsafe-no-fsync"); err != nil {
		return err
	}
	return waitFor(ctx, 30*time.Second, "etcd", func() error {
		resp, err := http.Get(client + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd health %d", resp.StatusCode)
		}
		return nil
	})
}

// StartAPIServer starts kube-apiserver (again, after StopAPIServer) and
// waits until it is ready. Nodes are authorized as on a real cluster (the
// Node authorizer and NodeRestriction), and the API server reaches kubelets
// at their InternalIP with a client certificate of its own.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	p := c.pki.path
	// The kubernetes Service's endpoint is the advertised address; an
	// Endpoints object may not hold a loopback address, so on loopback
	// there is none.
	reconciler := "lease"
	if ip := net.ParseIP(c.opts.Address); ip == nil || ip.IsLoopback() {
		reconciler = "none"
	}
	if err := c.start("kube-apiserver", append([]string{
		"--bind-address=" + c.opts.Address, "--advertise-address=" + c.opts.Address, "--secure-port=" + strconv.Itoa(c.apiPort),
		"--etcd-servers=" + fmt.Sprintf("http://127.0.0.1:%d", c.etcdPort),
		"--tls-cert-file=" + p("apiserver.crt"), "--tls-private-key-file=" + p("apiserver.key"),
		"--client-ca-file=" + p("ca.crt"),
		"--service-account-issuer=" + c.server(),
		"--service-account-key-file=" + p("sa.pub"), "--service-account-signing-key-file=" + p("sa.key"),
		"--service-cluster-ip-range=" + ServiceCIDR, "--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--kubelet-client-certificate=" + p("apiserver-kubelet-client.crt"), "--kubelet-client-key=" + p("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP",
		"--endpoint-reconciler-type=" + reconciler, "--allow-privileged=true",
		"--enable-priority-and-fairness=false", "--profiling=false"}, c.opts.APIServerArgs...)...); err != nil {
		return err
	}
	clientset, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	return waitFor(ctx, 60*time.Second, "kube-apiserver", func() error {
		body, err := clientset.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("%w: %s", err, body)
		}
		return nil
	})
}

// Pid returns the process ID of a running component ("etcd",
// "kube-apiserver", ...), or 0 when it is not running.
func (c *Cluster) Pid(name string) int {
	p, ok := c.procs[name]
	if !ok {
		return 0
	}
	select {
	case <-p.done:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

// StopAPIServer stops kube-apiserver, as a crash or an upgrade would.
func (c *Cluster) StopAPIServer() { c.stop("kube-apiserver") }

// StopEtcd stops etcd; StartEtcd brings it back with its data.
func (c *Cluster) StopEtcd() { c.stop("etcd") }

func (c *Cluster) stop(name string) {
	p, ok := c.procs[name]
	if !ok {
		return
	}
	p.stopGroup(10 * time.Second)
	delete(c.procs, name)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Stop stops every process, in the reverse order of their start.
func (c *Cluster) Stop() {
	for i := len(c.order) - 1; i >= 0; i-- {
		c.stop(c.order[i])
	}
}

// server is the API server's URL.
func (c *Cluster) server() string {
	return "https://" + net.JoinHostPort(c.opts.Address, strconv.Itoa(c.apiPort))
}

func (c *Cluster) writeKubeconfig() error {
	server := c.server()
	p := c.pki.path
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: p("ca.crt")}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificate: p("admin.crt"), ClientKey: p("admin.key")}
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "admin"}
	cfg.CurrentContext = "local"
	c.Kubeconfig = filepath.Join(c.opts.Dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, c.Kubeconfig); err != nil {
		return err
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return err
	}
	restCfg.QPS, restCfg.Burst = 200, 400
	c.Config = restCfg
	return nil
}

func (c *Cluster) createNodes(ctx context.Context) error {
	clientset, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	for _, n := range c.opts.Nodes {
		labels := map[string]string{"kubernetes.io/os": "linux", "kubernetes.io/hostname": n.Name, "type": "kwok"}
		for k, v := range n.Labels {
			labels[k] = v
		}
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name: n.Name, Labels: labels, Annotations: map[string]string{KwokAnnotation: "fake"},
		}}
		if _, err := clientset.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating node %s: %w", n.Name, err)
		}
	}
	return waitFor(ctx, 60*time.Second, "nodes Ready", func() error {
		for _, n := range c.opts.Nodes {
			node, err := clientset.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			ready := false
			for _, cond := range node.Status.Conditions {
				ready = ready || (cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue)
			}
			if !ready {
				return fmt.Errorf("node %s not Ready", n.Name)
			}
		}
		return nil
	})
}

// FreePort asks the kernel for a free port on 127.0.0.1.
func FreePort() (int, error) {
	ports, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// freePorts asks the kernel for n free ports on 127.0.0.1.
func freePorts(n int) ([]int, error) { return freePortsOn("127.0.0.1", n) }

// freePortsOn asks the kernel for n free ports on addr.
func freePortsOn(addr string, n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// errExited marks a condition that can never hold: a process it needs has exited.
var errExited = errors.New("exited")

// waitFor retries cond until it returns nil, the timeout passes, or it
// returns an error that wraps errExited.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if errors.Is(err, errExited) || time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

package main

import (
	"context"
	"crypto/ed25519"
	cryptorand "crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/agent"
	"github.com/nodeaccess/nodeaccess-operator/internal/agentdaemonset"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
)

// benchScheme holds the kinds the bench reads and writes.
var benchScheme = func() *kruntime.Scheme {
	s := kruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := nav1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

// bench is one node count's cluster, manager and agents.
type bench struct {
	o       options
	n       int
	dir     string
	cluster *localcluster.Cluster
	// agentBase is the cluster's admin configuration with its
	// credentials in memory, for the agents and the floor's watchers.
	agentBase *rest.Config
	k8s       client.Client
	manager   *localcluster.Process
	procs     []*localcluster.Process
	tracker   *tracker
	audit     string
	stopping  []func()
	// pools is how many pools the nodes are split into (NodeAccess i of
	// the churn selects pool i%pools); hosts holds the nodes' host roots.
	pools int
	hosts string
	// bytes counts what the in-process agents read from the API server.
	bytes *byteCounter
	// arrivals times when the in-process agents read each change.
	arrivals *arrivals

	// managerPprof is the manager's profiler address, "0" unless profiling.
	managerPprof string
	// sshdAddr is the SSH server the process agents probe.
	sshdAddr string
	stopSSHD func()

	namesOnce sync.Once
	names     map[string][]string // by pool; "" is every node
}

func (b *bench) start() error {
	if err := os.MkdirAll(filepath.Join(b.dir, "logs"), 0o700); err != nil {
		return err
	}
	b.managerPprof = "0"
	if b.o.profileDir != "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		b.managerPprof = ln.Addr().String()
		_ = ln.Close()
	}
	policy := filepath.Join(b.dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n- level: Metadata\n"), 0o600); err != nil {
		return err
	}
	b.audit = filepath.Join(b.dir, "audit.log")
	var err error
	b.cluster, err = localcluster.Start(context.Background(), localcluster.Options{
		Dir: filepath.Join(b.dir, "cluster"), BinDir: b.o.k8sBin, ControlPlaneOnly: true,
		APIServerArgs: []string{"--audit-policy-file=" + policy, "--audit-log-path=" + b.audit, "--audit-log-maxsize=0",
			"--max-requests-inflight=2000", "--max-mutating-requests-inflight=1000", "--profiling=" + strconv.FormatBool(b.o.profileDir != "")},
	})
	if err != nil {
		return err
	}
	if b.agentBase, err = credentialsInMemory(b.cluster.Config); err != nil {
		return err
	}
	cfg := rest.CopyConfig(b.cluster.Config)
	cfg.UserAgent = "bench-driver"
	cfg.QPS, cfg.Burst = 500, 1000
	if b.k8s, err = client.New(cfg, client.Options{Scheme: benchScheme}); err != nil {
		return err
	}
	ctx := context.Background()
	if err := localcluster.ApplyManifests(ctx, b.k8s, b.o.root); err != nil {
		return err
	}
	names := make([]string, 0, b.n+procAgents)
	for i := range b.n + procAgents {
		names = append(names, fmt.Sprintf("node-%05d", i))
	}
	if err := parallel(names, 50, func(name string) error {
		i, _ := strconv.Atoi(strings.TrimPrefix(name, "node-"))
		return b.k8s.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			"kubernetes.io/os": "linux", "bench": "yes", "pool": b.poolOf(i),
		}}})
	}); err != nil {
		return fmt.Errorf("creating nodes: %w", err)
	}
	managerArgs := append([]string{filepath.Join(b.o.work, "bin", "manager"), "--namespace=" + namespace, "--agent-image=", "--metrics-bind-address=0", "--health-probe-bind-address=0",
		"--status-delay=1s", "--pprof-bind-address=" + b.managerPprof}, b.managerFlags()...)
	b.manager, err = b.cluster.StartProcess(filepath.Join(b.dir, "logs"), "manager", managerArgs...)
	if err != nil {
		return err
	}
	// Agents as separate processes (the last procAgents nodes): their memory is per agent.
	if b.sshdAddr, b.stopSSHD, err = startSSHD(); err != nil {
		return err
	}
	for _, name := range names[b.n:] {
		root, err := b.newHost(name)
		if err != nil {
			return err
		}
		p, err := b.startProcAgent(name, root)
		if err != nil {
			return err
		}
		b.procs = append(b.procs, p)
	}
	// Agents in this process: each its own client, connection, cache and host root.
	if err := parallel(names[:b.n], 20, b.startAgent); err != nil {
		return err
	}
	// Every agent is up when it has reported its node; then it has synced its caches.
	// Their first reports are written at once: at 5,000 nodes that is
	// minutes of the API server's CPU on two cores.
	if err := waitFor(max(5*time.Minute, time.Duration(len(names))*100*time.Millisecond), "every agent reporting", func() error {
		reports := &nav1.NodeAccessReportList{}
		if err := b.k8s.List(ctx, reports); err != nil {
			return err
		}
		if len(reports.Items) < len(names) {
			return fmt.Errorf("%d of %d agents reported", len(reports.Items), len(names))
		}
		return nil
	}); err != nil {
		return err
	}
	// The process agents follow their sshd log: one login each, of a key
	// no grant gives, which they count as unmanaged.
	for _, name := range names[b.n:] {
		if err := b.login(ctx, name, []string{account}, newKey("unmanaged")); err != nil {
			return err
		}
	}
	return nil
}

// sshdLog is the host path of the process agents' sshd log.
const sshdLog = "/var/log/auth.log"

// startProcAgent runs bin/agent for a node, with every agent feature on:
// health probes, the host-key probe of an SSH server (startSSHD), login
// tracking in the host root's sshd log, and ending revoked sessions (it
// looks for them in this host's /proc).
func (b *bench) startProcAgent(name, root string) (*localcluster.Process, error) {
	if err := os.MkdirAll(filepath.Join(root, filepath.Dir(sshdLog)), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(root, sshdLog), nil, 0o640); err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(b.sshdAddr)
	// The environment the agent DaemonSet gives the container.
	var env []string
	for _, v := range agentdaemonset.RuntimeEnv() {
		env = append(env, v.Name+"="+v.Value)
	}
	return b.cluster.StartProcessEnv(filepath.Join(b.dir, "logs"), "agent-"+name, env, filepath.Join(b.o.work, "bin", "agent"),
		"--node-name="+name, "--namespace="+namespace, "--host-root="+root, "--kubeconfig="+b.cluster.Kubeconfig,
		"--health-probe-bind-address=127.0.0.1:0", "--sshd-host="+host, "--sshd-port="+port,
		"--sshd-logs="+sshdLog, "--end-sessions-on-revoke")
}

// reportWait bounds the wait for a report to show what an agent found:
// the manager's report pacing can hold a node's next report for its
// interval (100 s at 1,000 nodes and 10 writes a second).
const reportWait = 5 * time.Minute

// login waits until a process agent's report shows its sshd's host key
// and its sshd log open, appends a login line for each user with key to
// the log, and waits until the report shows them.
func (b *bench) login(ctx context.Context, node string, users []string, k sshKey) error {
	if err := waitFor(reportWait, node+" reporting its sshd's host key and its sshd log", func() error {
		return b.featuresReported(ctx, node, 0)
	}); err != nil {
		return err
	}
	for _, u := range users {
		if err := appendLogin(filepath.Join(b.hosts, node), u, k); err != nil {
			return err
		}
	}
	return waitFor(reportWait, node+" reporting the logins", func() error {
		return b.featuresReported(ctx, node, len(users))
	})
}

// featuresReported says whether a process agent's report shows its sshd's
// host key and at least logins lines read from its sshd log.
func (b *bench) featuresReported(ctx context.Context, node string, logins int) error {
	r := &nav1.NodeAccessReport{}
	if err := b.k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: node}, r); err != nil {
		return err
	}
	st := r.Status
	switch {
	case st.SSHD == nil || len(st.SSHD.HostKeys) == 0:
		return fmt.Errorf("%s reports no sshd host key", node)
	case st.LoginTracking == nil || len(st.LoginTracking.Files) == 0:
		return fmt.Errorf("%s follows no sshd log", node)
	case int(st.LoginTracking.UnmanagedLogins)+len(st.Logins) < logins:
		return fmt.Errorf("%s reports %d of %d logins", node, int(st.LoginTracking.UnmanagedLogins)+len(st.Logins), logins)
	}
	return nil
}

// appendLogin appends to a host root's sshd log the line sshd writes for
// a key login of user. It names the bench's own PID, which is no sshd
// session: the agent attributes the login but does not trust it.
func appendLogin(root, user string, k sshKey) error {
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k.line))
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(root, sshdLog), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%s node sshd[%d]: Accepted publickey for %s from 192.0.2.10 port 50022 ssh2: ED25519 %s\n",
		time.Now().Format(time.RFC3339Nano), os.Getpid(), user, ssh.FingerprintSHA256(pub))
	return errors.Join(err, f.Close())
}

// startSSHD serves SSH key exchanges on a loopback port with an ed25519
// host key, for the process agents' host-key probe (no client ever
// authenticates).
func startSSHD() (addr string, stop func(), err error) {
	_, priv, err := ed25519.GenerateKey(cryptorand.Reader)
	if err != nil {
		return "", nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return "", nil, err
	}
	cfg := &ssh.ServerConfig{
		ServerVersion: "SSH-2.0-bench",
		PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) {
			return nil, errors.New("no login here")
		},
	}
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				_, _, _, _ = ssh.NewServerConn(c, cfg)
			}()
		}
	}()
	return ln.Addr().String(), func() { _ = ln.Close() }, nil
}

// startAgent runs one in-process agent, built as cmd/agent builds it, its
// client counting the bytes it reads.
func (b *bench) startAgent(name string) error {
	root, err := b.newHost(name)
	if err != nil {
		return err
	}
	cfg := agentConfig(b.agentBase, name)
	cfg.Wrap(b.bytes.wrapFor(b.arrivals.node(name)))
	runner, err := agent.NewRunner(cfg, agent.Config{
		NodeName: name, Namespace: namespace, HostRoot: root,
		Resync: time.Minute, Heartbeat: 10 * time.Minute, ReportDelay: agent.DefaultReportDelay, ReportInterval: agent.DefaultReportInterval,
	}, agent.ServeOptions{ProbeAddr: "0"})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = runner.Start(ctx); close(done) }()
	b.stopping = append(b.stopping, func() { cancel(); <-done })
	return nil
}

// agentConfig is one agent's API client configuration: the agent binary's
// defaults, and a transport of its own (a Proxy function makes client-go
// build one instead of sharing a cached one), so that each agent has its own
// connection to the API server, as separate agents do.
func agentConfig(base *rest.Config, node string) *rest.Config {
	cfg := rest.CopyConfig(base)
	cfg.UserAgent = agentUA + "/" + node
	cfg.QPS, cfg.Burst = 5, 10
	cfg.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	return cfg
}

// credentialsInMemory is base with its client certificate and key read
// into the configuration. Read from files, they make client-go watch the
// files for rotation in every transport built from the configuration: a
// work queue per agent, whose metrics goroutine wakes twice a second in a
// process that registers work-queue metrics. A node's agent authenticates
// with its service account token and has none of that, and 1,000 of them
// were 5% of the bench process's CPU during the single changes.
func credentialsInMemory(base *rest.Config) (*rest.Config, error) {
	cfg := rest.CopyConfig(base)
	var err error
	if cfg.CertFile != "" {
		if cfg.CertData, err = os.ReadFile(cfg.CertFile); err != nil {
			return nil, err
		}
		cfg.CertFile = ""
	}
	if cfg.KeyFile != "" {
		if cfg.KeyData, err = os.ReadFile(cfg.KeyFile); err != nil {
			return nil, err
		}
		cfg.KeyFile = ""
	}
	return cfg, nil
}

var stopMu sync.Mutex

func (b *bench) stop() {
	stopMu.Lock()
	defer stopMu.Unlock()
	var wg sync.WaitGroup
	for _, s := range b.stopping {
		wg.Add(1)
		go func() { defer wg.Done(); s() }()
	}
	wg.Wait()
	for _, p := range b.procs {
		p.Stop(syscall.SIGTERM)
	}
	b.manager.Stop(syscall.SIGTERM)
	if b.stopSSHD != nil {
		b.stopSSHD()
	}
	if b.cluster != nil {
		b.cluster.Stop()
	}
	b.tracker.close()
	_ = os.RemoveAll(b.hosts)
}

// newHost makes a node's host root with the account alice (newHostOf),
// tracked under the node's name.
func (b *bench) newHost(node string) (string, error) {
	return b.newHostOf(node, []hostAccount{{name: account, track: node}})
}

// hostAccount is an account of a host root, and the name the tracker
// knows its authorized_keys by.
type hostAccount struct{ name, track string }

// newHostOf makes a node's host root, with /etc/passwd naming the accounts
// and their homes (each with an empty .ssh, which the tracker watches),
// owned by the user running the bench, so that it works with or without root.
func (b *bench) newHostOf(node string, accounts []hostAccount) (string, error) {
	root := filepath.Join(b.hosts, node)
	passwd := "root:x:0:0:root:/root:/bin/sh\n"
	for i, a := range accounts {
		uid, gid := os.Getuid(), os.Getgid()
		if uid == 0 {
			uid, gid = 1001+i, 1001+i
		}
		passwd += fmt.Sprintf("%s:x:%d:%d::/home/%s:/bin/sh\n", a.name, uid, gid, a.name)
		home := filepath.Join(root, "home", a.name)
		sshDir := filepath.Join(home, ".ssh")
		if err := os.MkdirAll(sshDir, 0o700); err != nil {
			return "", err
		}
		for _, d := range []string{home, sshDir} {
			if err := os.Lchown(d, uid, gid); err != nil {
				return "", err
			}
		}
		if err := os.Chmod(home, 0o755); err != nil {
			return "", err
		}
		if err := b.tracker.add(a.track, sshDir); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		return "", err
	}
	return root, os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte(passwd), 0o644)
}

// managerFlags are the manager's flags the bench's options set.
func (b *bench) managerFlags() []string {
	if b.o.reportWrites == "" {
		return nil
	}
	return []string{"--report-writes-per-second=" + b.o.reportWrites}
}

// poolOf names the pool of node i.
func (b *bench) poolOf(i int) string { return fmt.Sprintf("p%d", i%b.pools) }

// procNodeNames are the nodes whose agents run as processes, of one pool
// or of all.
func (b *bench) procNodeNames(pool string) []string {
	var names []string
	for i := b.n; i < b.n+procAgents; i++ {
		if pool == "" || b.poolOf(i) == pool {
			names = append(names, fmt.Sprintf("node-%05d", i))
		}
	}
	return names
}

// nodeNames lists the in-process agents' nodes, of one pool or of all.
func (b *bench) nodeNames(pool string) []string {
	b.namesOnce.Do(func() {
		b.names = map[string][]string{}
		for i := range b.n {
			name := fmt.Sprintf("node-%05d", i)
			p := b.poolOf(i)
			b.names[""] = append(b.names[""], name)
			b.names[p] = append(b.names[p], name)
		}
	})
	return b.names[pool]
}

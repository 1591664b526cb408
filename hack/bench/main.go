// Command bench measures how fast access is granted and revoked at scale, and
// what it costs the cluster: `make bench` (not part of `make test`).
//
// For each node count it starts a fresh local control plane (etcd and
// kube-apiserver from bin/k8s, with an audit log), the manager as a separate
// process, N simulated nodes each with a real agent, and runs the scenarios:
// grant, update, revoke (one NodeAccess selecting every node) and churn (100
// NodeAccess × 20 keys, then 10 changes per second for a minute). Latency is
// the time from the API call until each node's agent wrote the change into
// the file, taken from the agents' own writes (agent.Config.OnWrite), never
// by polling. API requests are counted from the API server's audit log, by
// client (user agent) and by verb and resource; memory and CPU are read
// from /proc. A baseline runs the same agents with a 60 s polling loop
// instead of watches.
//
// Results go to bin/bench/results.json and the table in docs/benchmarks.md.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	cryptorand "crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/agent"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
)

const (
	namespace = "nodeaccess-system"
	account   = "alice"
	// pools split the nodes for the churn scenario: NodeAccess i selects pool i%pools.
	pools = 10
	// procAgents agents run as separate processes, for per-agent memory.
	procAgents = 3
	// agentUA marks the in-process agents' requests in the audit log.
	agentUA = "nodeaccess-agent-bench"
)

type options struct {
	nodes         []int
	churnObjects  int
	churnKeys     int
	churnRate     int
	churnFor      time.Duration
	baselineNodes int
	pollEvery     time.Duration
	idle          time.Duration
	out, doc      string
	root, k8sBin  string
	work          string
	profileDir    string
}

func main() {
	var o options
	nodes := flag.String("nodes", "100,1000", "Comma-separated node counts (each gets a fresh cluster).")
	flag.StringVar(&o.profileDir, "profile-dir", "", "When set, write CPU profiles of the bench process (the agents) and of the API server during grant, update and revoke there.")
	flag.IntVar(&o.churnObjects, "churn-objects", 100, "NodeAccess objects in the churn scenario.")
	flag.IntVar(&o.churnKeys, "churn-keys", 20, "Keys per NodeAccess in the churn scenario.")
	flag.IntVar(&o.churnRate, "churn-rate", 10, "Changes per second in the churn scenario.")
	flag.DurationVar(&o.churnFor, "churn-for", time.Minute, "How long the churn lasts.")
	flag.IntVar(&o.baselineNodes, "baseline-nodes", 100, "Nodes of the polling baseline (0 skips it).")
	flag.DurationVar(&o.pollEvery, "poll-every", time.Minute, "The baseline's polling interval.")
	flag.DurationVar(&o.idle, "idle", 30*time.Second, "Steady-state window in which agents' requests are counted.")
	flag.StringVar(&o.out, "out", "bin/bench/results.json", "Machine-readable results.")
	flag.StringVar(&o.doc, "doc", "docs/benchmarks.md", "The document whose results table is rewritten.")
	flag.Parse()
	for _, s := range strings.Split(*nodes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: bad node count %q\n", s)
			os.Exit(2)
		}
		o.nodes = append(o.nodes, n)
	}
	ctrl.SetLogger(logr.Discard())
	// client-go logs watch restarts of a thousand agents; the figures tell what matters.
	klog.SetLogger(logr.Discard())
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// Result is one scenario's figures (results.json holds a list of them).
type Result struct {
	Scenario string `json:"scenario"`
	Nodes    int    `json:"nodes"`
	// Changes is how many API changes the latencies and per-change counts cover.
	Changes int `json:"changes"`
	// Samples is how many (change, node) file writes were timed.
	Samples int     `json:"samples"`
	P50ms   float64 `json:"p50_ms"`
	P95ms   float64 `json:"p95_ms"`
	P99ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
	// ManagerWrites and AgentRequests are per change, from the audit log.
	ManagerWrites float64 `json:"manager_writes"`
	AgentRequests float64 `json:"agent_requests"`
	// AgentWrites is the agents' writes per change (their reports).
	AgentWrites float64 `json:"agent_writes"`
	// ByClient counts every request in the scenario by "client verb resource".
	ByClient map[string]int `json:"requests_by_client_verb_resource,omitempty"`
	// Memory and CPU: the manager process, and the largest of the agents
	// that ran as separate processes.
	ManagerRSSMiB float64 `json:"manager_rss_mib"`
	AgentRSSMiB   float64 `json:"agent_rss_mib"`
	// AgentPrivateMiB is the agent processes' anonymous (heap, stacks)
	// resident memory, largest of them, at the end of the scenario; the rest
	// of their RSS is the binary's file pages.
	AgentPrivateMiB float64 `json:"agent_private_mib"`
	ManagerCPUs     float64 `json:"manager_cpu_seconds"`
	AgentCPUs       float64 `json:"agent_cpu_seconds"`
	Note            string  `json:"note,omitempty"`
}

func run(o options) error {
	var err error
	if o.root, err = os.Getwd(); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(o.root, "go.mod")); err != nil {
		return errors.New("run from the repository's top directory (make bench does)")
	}
	o.k8sBin = envOr("KUBEBUILDER_ASSETS", filepath.Join(o.root, "bin", "k8s"))
	if o.work, err = os.MkdirTemp("", "nodeaccess-bench"); err != nil {
		return err
	}
	defer os.RemoveAll(o.work)
	for _, b := range []struct{ out, pkg string }{{"manager", "."}, {"agent", "./cmd/agent"}} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(o.work, "bin", b.out), b.pkg)
		cmd.Dir, cmd.Stdout, cmd.Stderr = o.root, os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building %s: %w", b.out, err)
		}
	}
	var results []Result
	for i, n := range o.nodes {
		rs, err := runNodes(o, n, i == 0 && o.baselineNodes > 0)
		results = append(results, rs...)
		if err != nil {
			return fmt.Errorf("%d nodes: %w", n, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(results, "", "  ")
	if err := os.WriteFile(o.out, append(data, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Println("wrote", o.out)
	if err := writeDoc(o, results); err != nil {
		return err
	}
	fmt.Println("wrote", o.doc)
	return nil
}

// bench is one node count's cluster, manager and agents.
type bench struct {
	o        options
	n        int
	dir      string
	cluster  *localcluster.Cluster
	k8s      client.Client
	manager  *localcluster.Process
	procs    []*localcluster.Process
	tracker  *tracker
	audit    string
	stopping []func()

	// managerPprof is the manager's profiler address, "0" unless profiling.
	managerPprof string

	namesOnce sync.Once
	names     map[string][]string // by pool; "" is every node
}

func runNodes(o options, n int, withBaseline bool) ([]Result, error) {
	b := &bench{o: o, n: n, dir: filepath.Join(o.work, fmt.Sprintf("n%d", n)), tracker: newTracker()}
	defer b.stop()
	fmt.Printf("==> %d nodes: starting the control plane, the manager and %d agents (+%d as processes)\n", n, n, procAgents)
	if err := b.start(); err != nil {
		return nil, err
	}
	var results []Result
	stopProfiles := func() {}
	if o.profileDir != "" {
		var err error
		// Grant, update and revoke take less than this at 1,000 nodes.
		if stopProfiles, err = b.profile("grant-update-revoke", 20); err != nil {
			return nil, err
		}
	}
	for _, sc := range []func() (Result, error){b.grantUpdateRevoke("grant"), b.grantUpdateRevoke("update"), b.grantUpdateRevoke("revoke"), b.churn} {
		r, err := sc()
		if err != nil {
			return results, err
		}
		if r.Scenario == "revoke" || r.Scenario == "churn" {
			stopProfiles()
		}
		r.Nodes = n
		b.resources(&r)
		fmt.Printf("    %-8s p50 %6.0f ms  p95 %6.0f ms  p99 %6.0f ms  max %6.0f ms  manager writes/change %.1f  agent requests/change %.1f  manager RSS %.0f MiB  agent RSS %.0f MiB\n",
			r.Scenario, r.P50ms, r.P95ms, r.P99ms, r.MaxMs, r.ManagerWrites, r.AgentRequests, r.ManagerRSSMiB, r.AgentRSSMiB)
		results = append(results, r)
	}
	idle, err := b.steadyState()
	if err != nil {
		return results, err
	}
	idle.Nodes = n
	b.resources(&idle)
	fmt.Printf("    idle     %d agent requests (besides watches) and %d manager writes in %s\n", int(idle.AgentRequests), int(idle.ManagerWrites), o.idle)
	results = append(results, idle)
	if withBaseline {
		r, err := b.baseline()
		if err != nil {
			return results, err
		}
		b.resources(&r)
		fmt.Printf("    baseline (%d polling agents, every %s): p50 %.0f ms  p99 %.0f ms  max %.0f ms; %.1f agent requests per agent-minute\n",
			r.Nodes, o.pollEvery, r.P50ms, r.P99ms, r.MaxMs, r.AgentRequests)
		results = append(results, r)
	}
	return results, nil
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
	scheme := kruntime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = nav1.AddToScheme(scheme)
	cfg := rest.CopyConfig(b.cluster.Config)
	cfg.UserAgent = "bench-driver"
	cfg.QPS, cfg.Burst = 500, 1000
	if b.k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
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
			"kubernetes.io/os": "linux", "bench": "yes", "pool": fmt.Sprintf("p%d", i%pools),
		}}})
	}); err != nil {
		return fmt.Errorf("creating nodes: %w", err)
	}
	b.manager, err = b.cluster.StartProcess(filepath.Join(b.dir, "logs"), "manager", filepath.Join(b.o.work, "bin", "manager"),
		"--namespace="+namespace, "--agent-image=", "--metrics-bind-address=0", "--health-probe-bind-address=0",
		"--status-delay=1s", "--pprof-bind-address="+b.managerPprof)
	if err != nil {
		return err
	}
	// Agents as separate processes (the last procAgents nodes): their memory is per agent.
	for _, name := range names[b.n:] {
		root, err := newHost(filepath.Join(b.dir, "hosts", name))
		if err != nil {
			return err
		}
		p, err := b.cluster.StartProcess(filepath.Join(b.dir, "logs"), "agent-"+name, filepath.Join(b.o.work, "bin", "agent"),
			"--node-name="+name, "--namespace="+namespace, "--host-root="+root, "--kubeconfig="+b.cluster.Kubeconfig,
			"--health-probe-bind-address=0")
		if err != nil {
			return err
		}
		b.procs = append(b.procs, p)
	}
	// Agents in this process: each its own client, connection, cache and host root.
	if err := parallel(names[:b.n], 20, func(name string) error {
		return b.startAgent(name, b.tracker.onWrite(name))
	}); err != nil {
		return err
	}
	// Every agent is up when it has reported its node; then it has synced its caches.
	return waitFor(5*time.Minute, "every agent reporting", func() error {
		reports := &nav1.NodeAccessReportList{}
		if err := b.k8s.List(ctx, reports); err != nil {
			return err
		}
		if len(reports.Items) < len(names) {
			return fmt.Errorf("%d of %d agents reported", len(reports.Items), len(names))
		}
		return nil
	})
}

// startAgent runs one in-process agent with its own controller manager.
func (b *bench) startAgent(name string, onWrite func(string, []byte)) error {
	root, err := newHost(filepath.Join(b.dir, "hosts", name))
	if err != nil {
		return err
	}
	runner, err := agent.NewRunner(agentConfig(b.cluster.Config, name), agent.Config{
		NodeName: name, Namespace: namespace, HostRoot: root,
		Resync: time.Minute, Heartbeat: 10 * time.Minute, ReportDelay: agent.DefaultReportDelay, OnWrite: onWrite,
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
	if b.cluster != nil {
		b.cluster.Stop()
	}
}

// newHost makes a host root with /etc/passwd naming alice and her home,
// owned by the user running the bench, so that it works with or without root.
func newHost(root string) (string, error) {
	uid, gid := os.Getuid(), os.Getgid()
	home := filepath.Join(root, "home", account)
	if err := os.MkdirAll(home, 0o755); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		return "", err
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/bin/sh\n%s:x:%d:%d::/home/%s:/bin/sh\n", account, uid, gid, account)
	if uid == 0 {
		passwd = fmt.Sprintf("root:x:0:0:root:/root:/bin/sh\n%s:x:1001:1001::/home/%s:/bin/sh\n", account, account)
		if err := os.Chown(home, 1001, 1001); err != nil {
			return "", err
		}
	}
	return root, os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte(passwd), 0o644)
}

// profile starts CPU profiles of this process (where the in-process agents
// run), of the API server and of the manager, for seconds at most; the
// returned function ends them and writes <process>-<tag>-<n>.pprof to the
// profile directory.
func (b *bench) profile(tag string, seconds int) (func(), error) {
	if err := os.MkdirAll(b.o.profileDir, 0o755); err != nil {
		return nil, err
	}
	file := func(process string) string {
		return filepath.Join(b.o.profileDir, fmt.Sprintf("%s-%s-%d.pprof", process, tag, b.n))
	}
	f, err := os.Create(file("bench"))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, err
	}
	httpClient, err := rest.HTTPClientFor(b.cluster.Config)
	if err != nil {
		return nil, err
	}
	fetch := func(process, base string) error {
		resp, err := httpClient.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, seconds))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", process, resp.Status)
		}
		out, err := os.Create(file(process))
		if err != nil {
			return err
		}
		_, err = io.Copy(out, resp.Body)
		return errors.Join(err, out.Close())
	}
	done := make(chan error, 2)
	go func() { done <- fetch("apiserver", b.cluster.Config.Host) }()
	go func() { done <- fetch("manager", "http://"+b.managerPprof) }()
	var once sync.Once
	return func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			_ = f.Close()
			for range 2 {
				if err := <-done; err != nil {
					fmt.Printf("    profile: %v\n", err)
				}
			}
			fmt.Printf("    %s profiles written to %s\n", tag, b.o.profileDir)
		})
	}, nil
}

// grantUpdateRevoke returns the scenario: one NodeAccess selecting every
// node; grant creates it, update adds a key, revoke deletes it.
func (b *bench) grantUpdateRevoke(step string) func() (Result, error) {
	return func() (Result, error) {
		ctx := context.Background()
		nodes := b.nodeNames("")
		switch step {
		case "grant":
			k := newKey("grant")
			w := b.tracker.expect(k.blob, true, nodes)
			from := time.Now()
			na := nodeAccess("everyone", map[string]string{"bench": "yes"}, k.line)
			if err := b.k8s.Create(ctx, na); err != nil {
				return Result{}, err
			}
			return b.finish("grant", from, 1, w)
		case "update":
			k := newKey("update")
			w := b.tracker.expect(k.blob, true, nodes)
			from := time.Now()
			if err := b.updateNA(ctx, "everyone", func(na *nav1.NodeAccess) {
				na.Spec.Users[0].Keys = append(na.Spec.Users[0].Keys, nav1.AuthorizedKey{Key: k.line})
			}); err != nil {
				return Result{}, err
			}
			return b.finish("update", from, 1, w)
		default:
			na := &nav1.NodeAccess{}
			if err := b.k8s.Get(ctx, client.ObjectKey{Name: "everyone"}, na); err != nil {
				return Result{}, err
			}
			blob := strings.Fields(na.Spec.Users[0].Keys[0].Key)[1]
			w := b.tracker.expect(blob, false, nodes)
			from := time.Now()
			if err := b.k8s.Delete(ctx, na); err != nil {
				return Result{}, err
			}
			r, err := b.finish("revoke", from, 1, w)
			if err == nil {
				err = waitFor(2*time.Minute, "NodeAccess everyone gone", func() error {
					if err := b.k8s.Get(ctx, client.ObjectKey{Name: "everyone"}, &nav1.NodeAccess{}); err == nil {
						return errors.New("still there")
					}
					return nil
				})
			}
			return r, err
		}
	}
}

// updateNA applies mutate to the NodeAccess, retrying conflicts, and
// transport errors a few times (a saturated machine drops connections).
func (b *bench) updateNA(ctx context.Context, name string, mutate func(*nav1.NodeAccess)) error {
	failures := 0
	for {
		na := &nav1.NodeAccess{}
		err := b.k8s.Get(ctx, client.ObjectKey{Name: name}, na)
		if err == nil {
			mutate(na)
			err = b.k8s.Update(ctx, na)
		}
		switch {
		case err == nil:
			return nil
		case apierrors.IsConflict(err):
		case apierrors.IsNotFound(err) || failures == 5:
			return err
		default:
			failures++
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// finish waits for the expected writes, lets late requests settle, and
// fills in latencies and request counts for the changes made since from.
func (b *bench) finish(name string, from time.Time, changes int, waits ...*wait) (Result, error) {
	var samples []time.Duration
	for _, w := range waits {
		got, err := w.done(3 * time.Minute)
		if err != nil {
			return Result{}, fmt.Errorf("%s: %w", name, err)
		}
		samples = append(samples, got...)
	}
	time.Sleep(3 * time.Second) // status writes and reports that follow the files
	r := Result{Scenario: name, Changes: changes, Samples: len(samples)}
	r.P50ms, r.P95ms, r.P99ms, r.MaxMs = percentiles(samples)
	counts, err := countRequests(b.audit, from, time.Now())
	if err != nil {
		return r, err
	}
	r.ByClient = counts.byKey
	r.ManagerWrites = float64(counts.managerWrites) / float64(changes)
	r.AgentRequests = float64(counts.agentRequests) / float64(changes)
	r.AgentWrites = float64(counts.agentWrites) / float64(changes)
	return r, nil
}

// churn: churnObjects NodeAccess of churnKeys keys each, NodeAccess i on
// pool i%pools; then churnRate key additions per second for churnFor. Each
// change is timed on every node of its pool.
func (b *bench) churn() (Result, error) {
	ctx := context.Background()
	fmt.Printf("    churn: creating %d NodeAccess × %d keys\n", b.o.churnObjects, b.o.churnKeys)
	var setup []*wait
	names := make([]string, b.o.churnObjects)
	for i := range names {
		names[i] = fmt.Sprintf("team-%03d", i)
	}
	var mu sync.Mutex
	if err := parallel(names, 10, func(name string) error {
		i, _ := strconv.Atoi(strings.TrimPrefix(name, "team-"))
		pool := fmt.Sprintf("p%d", i%pools)
		keys := make([]string, b.o.churnKeys)
		var last sshKey
		for j := range keys {
			last = newKey(fmt.Sprintf("%s-%d", name, j))
			keys[j] = last.line
		}
		mu.Lock()
		setup = append(setup, b.tracker.expect(last.blob, true, b.nodeNames(pool)))
		mu.Unlock()
		return b.k8s.Create(ctx, nodeAccess(name, map[string]string{"pool": pool}, keys...))
	}); err != nil {
		return Result{}, err
	}
	for _, w := range setup {
		if _, err := w.done(5 * time.Minute); err != nil {
			return Result{}, fmt.Errorf("churn setup: %w", err)
		}
	}
	time.Sleep(3 * time.Second)

	fmt.Printf("    churn: %d changes per second for %s\n", b.o.churnRate, b.o.churnFor)
	// Change i is due at from + i/rate. A change issued late (the machine
	// is saturated) is issued at once, so that every run makes the same
	// number of changes; its latency still counts from its own API call.
	total := int(b.o.churnFor.Seconds() * float64(b.o.churnRate))
	interval := time.Second / time.Duration(b.o.churnRate)
	keys := make([]sshKey, total)
	for i := range keys {
		keys[i] = newKey(fmt.Sprintf("churn-%d", i))
	}
	if b.o.profileDir != "" {
		stop, err := b.profile("churn", int(b.o.churnFor.Seconds())+10)
		if err != nil {
			return Result{}, err
		}
		defer stop()
	}
	from := time.Now()
	var waits []*wait
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	late := 0
	for i := range total {
		if d := time.Until(from.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		} else if d < -interval {
			late++
		}
		name := names[rand.IntN(len(names))]
		idx, _ := strconv.Atoi(strings.TrimPrefix(name, "team-"))
		k := keys[i]
		waits = append(waits, b.tracker.expect(k.blob, true, b.nodeNames(fmt.Sprintf("p%d", idx%pools))))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.updateNA(ctx, name, func(na *nav1.NodeAccess) {
				// Rotate: drop the oldest key, add the new one; the size stays.
				keys := na.Spec.Users[0].Keys
				na.Spec.Users[0].Keys = append(keys[1:len(keys):len(keys)], nav1.AuthorizedKey{Key: k.line})
			}); err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return Result{}, err
	default:
	}
	if late > 0 {
		fmt.Printf("    churn: %d of %d changes issued more than %s late\n", late, total, interval)
	}
	return b.finish("churn", from, len(waits), waits...)
}

// steadyState counts requests while nothing changes, after a settle.
func (b *bench) steadyState() (Result, error) {
	time.Sleep(5 * time.Second)
	from := time.Now()
	time.Sleep(b.o.idle)
	counts, err := countRequests(b.audit, from, time.Now())
	if err != nil {
		return Result{}, err
	}
	return Result{
		Scenario: "idle", ByClient: counts.byKey,
		ManagerWrites: float64(counts.managerWrites), AgentRequests: float64(counts.agentRequests), AgentWrites: float64(counts.agentWrites),
		Note: fmt.Sprintf("totals over %s with nothing changing; watch requests excluded", b.o.idle),
	}, nil
}

// baseline runs polling agents on nodes of their own: the same agent code,
// reading through a client without cache or watches, and applying every
// pollEvery from a random phase, as independent DaemonSet pods would.
func (b *bench) baseline() (Result, error) {
	ctx := context.Background()
	n := b.o.baselineNodes
	fmt.Printf("    baseline: %d agents polling every %s\n", n, b.o.pollEvery)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("poll-%05d", i)
	}
	if err := parallel(names, 50, func(name string) error {
		return b.k8s.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/os": "linux", "baseline": "yes"}}})
	}); err != nil {
		return Result{}, err
	}
	pollCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for _, name := range names {
		root, err := newHost(filepath.Join(b.dir, "hosts", name))
		if err != nil {
			return Result{}, err
		}
		a, err := agent.NewPolling(agentConfig(b.cluster.Config, name), agent.Config{
			NodeName: name, Namespace: namespace, HostRoot: root, Resync: b.o.pollEvery, Heartbeat: 10 * time.Minute,
			OnWrite: b.tracker.onWrite(name),
		})
		if err != nil {
			return Result{}, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			phase := time.Duration(rand.Int64N(int64(b.o.pollEvery)))
			select {
			case <-pollCtx.Done():
				return
			case <-time.After(phase):
			}
			for {
				_, _ = a.Sync(pollCtx)
				select {
				case <-pollCtx.Done():
					return
				case <-time.After(b.o.pollEvery):
				}
			}
		}()
	}
	// Let every poller make its first pass, then grant.
	time.Sleep(b.o.pollEvery + 5*time.Second)
	k := newKey("baseline")
	w := b.tracker.expect(k.blob, true, names)
	from := time.Now()
	if err := b.k8s.Create(ctx, nodeAccess("baseline", map[string]string{"baseline": "yes"}, k.line)); err != nil {
		return Result{}, err
	}
	r, err := b.finish("baseline-grant", from, 1, w)
	r.Nodes = n
	if err != nil {
		return r, err
	}
	// Requests per agent per minute at steady state, from the same log.
	counts, err := countRequests(b.audit, from, time.Now())
	if err == nil {
		mins := time.Since(from).Minutes()
		r.AgentRequests = float64(counts.agentRequestsOf("poll-")) / float64(n) / mins
		r.Note = fmt.Sprintf("agents poll every %s instead of watching; agent_requests is per agent per minute (every request, including reports)", b.o.pollEvery)
	}
	return r, err
}

// nodeNames lists the in-process agents' nodes, of one pool or of all.
func (b *bench) nodeNames(pool string) []string {
	b.namesOnce.Do(func() {
		b.names = map[string][]string{}
		for i := range b.n {
			name := fmt.Sprintf("node-%05d", i)
			p := fmt.Sprintf("p%d", i%pools)
			b.names[""] = append(b.names[""], name)
			b.names[p] = append(b.names[p], name)
		}
	})
	return b.names[pool]
}

// resources fills in the manager's and the process agents' peak RSS and CPU.
func (b *bench) resources(r *Result) {
	r.ManagerRSSMiB, r.ManagerCPUs = procStats(b.manager.Pid())
	for _, p := range b.procs {
		rss, cpu := procStats(p.Pid())
		r.AgentRSSMiB = max(r.AgentRSSMiB, rss)
		r.AgentCPUs = max(r.AgentCPUs, cpu)
		r.AgentPrivateMiB = max(r.AgentPrivateMiB, anonMiB(p.Pid()))
	}
}

// anonMiB reads a process's resident anonymous memory.
func anonMiB(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Anonymous:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// procStats reads a process's peak resident set (VmHWM) and CPU seconds.
func procStats(pid int) (rssMiB, cpuSeconds float64) {
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				rssMiB = kb / 1024
			}
		}
	}
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command (which may hold spaces) start after ')'.
		if i := bytes.LastIndexByte(data, ')'); i > 0 {
			f := strings.Fields(string(data[i+1:]))
			if len(f) > 12 {
				ut, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				cpuSeconds = (ut + st) / 100 // USER_HZ
			}
		}
	}
	return rssMiB, cpuSeconds
}

// requestCounts are the audit log's requests in a time window.
type requestCounts struct {
	byKey                                     map[string]int
	managerWrites, agentRequests, agentWrites int
	agentsByPrefix                            map[string]int
}

func (c requestCounts) agentRequestsOf(prefix string) int { return c.agentsByPrefix[prefix] }

type auditEvent struct {
	Verb      string `json:"verb"`
	UserAgent string `json:"userAgent"`
	Stage     string `json:"stage"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	RequestReceivedTimestamp metav1.MicroTime `json:"requestReceivedTimestamp"`
}

// countRequests reads the audit log: requests received in [from, to],
// by client (manager, agents, the bench itself), verb and resource. Watches
// are left out: they are long-lived, opened once, and logged when they end.
func countRequests(path string, from, to time.Time) (requestCounts, error) {
	c := requestCounts{byKey: map[string]int{}, agentsByPrefix: map[string]int{}}
	f, err := os.Open(path)
	if err != nil {
		return c, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var ev auditEvent
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Stage != "ResponseComplete" || ev.Verb == "watch" {
			continue
		}
		at := ev.RequestReceivedTimestamp.Time
		if at.Before(from) || at.After(to) {
			continue
		}
		who := "other"
		switch {
		case strings.HasPrefix(ev.UserAgent, "manager/"):
			who = "manager"
		case strings.HasPrefix(ev.UserAgent, agentUA+"/"), strings.HasPrefix(ev.UserAgent, "agent/"):
			who = "agent"
		case strings.HasPrefix(ev.UserAgent, "bench-driver"):
			who = "bench"
		}
		resource := ""
		if ev.ObjectRef != nil {
			resource = ev.ObjectRef.Resource
			if ev.ObjectRef.Subresource != "" {
				resource += "/" + ev.ObjectRef.Subresource
			}
		}
		c.byKey[who+" "+ev.Verb+" "+resource]++
		write := !slices.Contains([]string{"get", "list"}, ev.Verb)
		switch who {
		case "manager":
			if write {
				c.managerWrites++
			}
		case "agent":
			c.agentRequests++
			if write {
				c.agentWrites++
			}
			if node, ok := strings.CutPrefix(ev.UserAgent, agentUA+"/"); ok && strings.HasPrefix(node, "poll-") {
				c.agentsByPrefix["poll-"]++
			}
		}
	}
	return c, sc.Err()
}

// tracker times file writes: a wait expects a key to appear in (or vanish
// from) every one of a set of nodes' files, and records when each did.
type tracker struct {
	mu sync.Mutex
	// byNode holds, per node, the waits still pending on it: a write is
	// checked against its own node's waits only.
	byNode map[string]map[*wait]struct{}
}

type wait struct {
	blob    []byte
	present bool
	from    time.Time
	mu      sync.Mutex
	pending int
	got     []time.Duration
	all     chan struct{}
}

func newTracker() *tracker { return &tracker{byNode: map[string]map[*wait]struct{}{}} }

// expect registers a wait; its clock starts now, before the API call.
func (t *tracker) expect(blob string, present bool, nodes []string) *wait {
	w := &wait{blob: []byte(blob), present: present, from: time.Now(), pending: len(nodes), all: make(chan struct{})}
	if len(nodes) == 0 {
		close(w.all)
		return w
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range nodes {
		set := t.byNode[n]
		if set == nil {
			set = map[*wait]struct{}{}
			t.byNode[n] = set
		}
		set[w] = struct{}{}
	}
	return w
}

// onWrite is a node's agent.Config.OnWrite.
func (t *tracker) onWrite(node string) func(string, []byte) {
	return func(acct string, content []byte) {
		at := time.Now()
		if acct != account {
			return
		}
		t.mu.Lock()
		waits := make([]*wait, 0, len(t.byNode[node]))
		for w := range t.byNode[node] {
			waits = append(waits, w)
		}
		t.mu.Unlock()
		for _, w := range waits {
			if bytes.Contains(content, w.blob) != w.present {
				continue
			}
			t.mu.Lock()
			_, still := t.byNode[node][w]
			delete(t.byNode[node], w)
			t.mu.Unlock()
			if !still {
				continue
			}
			w.mu.Lock()
			w.got = append(w.got, at.Sub(w.from))
			if w.pending--; w.pending == 0 {
				close(w.all)
			}
			w.mu.Unlock()
		}
	}
}

func (w *wait) done(timeout time.Duration) ([]time.Duration, error) {
	select {
	case <-w.all:
	case <-time.After(timeout):
		w.mu.Lock()
		defer w.mu.Unlock()
		return nil, fmt.Errorf("%d nodes never wrote the change within %s", w.pending, timeout)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.got), nil
}

func percentiles(d []time.Duration) (p50, p95, p99, maxMs float64) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	at := func(q float64) float64 {
		i := int(q*float64(len(d))+0.5) - 1
		i = min(max(i, 0), len(d)-1)
		return float64(d[i].Microseconds()) / 1000
	}
	return at(0.50), at(0.95), at(0.99), float64(d[len(d)-1].Microseconds()) / 1000
}

func nodeAccess(name string, selector map[string]string, keys ...string) *nav1.NodeAccess {
	na := &nav1.NodeAccess{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: nav1.NodeAccessSpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: selector},
			Users:        []nav1.UserAccess{{Name: account}},
		},
	}
	for _, k := range keys {
		na.Spec.Users[0].Keys = append(na.Spec.Users[0].Keys, nav1.AuthorizedKey{Key: k})
	}
	return na
}

// parallel runs fn for every item with at most width at once.
func parallel(items []string, width int, fn func(string) error) error {
	work := make(chan string)
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range min(width, max(len(items), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range work {
				if err := fn(it); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for _, it := range items {
		work <- it
	}
	close(work)
	wg.Wait()
	return first
}

func waitFor(timeout time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %w", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// machine describes where the figures were measured.
func machine() string {
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(strings.SplitN(string(data), "\n", 2)[0]); len(f) >= 2 {
			kb, _ := strconv.ParseFloat(f[1], 64)
			mem = fmt.Sprintf(", %.0f GiB memory", kb/1024/1024)
		}
	}
	return fmt.Sprintf("%d CPUs (%s)%s, %s, %s/%s", runtime.NumCPU(), model, mem, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

type sshKey struct{ line, blob string }

func newKey(comment string) sshKey {
	pub, _, err := ed25519.GenerateKey(cryptorand.Reader)
	if err != nil {
		panic(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		panic(err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
	return sshKey{line: line + " " + comment, blob: strings.Fields(line)[1]}
}

const (
	beginMarker = "<!-- bench results: begin (written by make bench) -->"
	endMarker   = "<!-- bench results: end -->"
)

// writeDoc rewrites the results section of the benchmarks document.
func writeDoc(o options, results []Result) error {
	doc, err := os.ReadFile(o.doc)
	if err != nil {
		return err
	}
	begin, end := bytes.Index(doc, []byte(beginMarker)), bytes.Index(doc, []byte(endMarker))
	if begin < 0 || end < begin {
		return fmt.Errorf("%s has no results markers", o.doc)
	}
	var t strings.Builder
	fmt.Fprintf(&t, "%s\n\nMeasured %s on %s, with `make bench` (`go run ./hack/bench -nodes=%s`).\n\n",
		beginMarker, time.Now().UTC().Format("2006-01-02 15:04 MST"), machine(), joinInts(o.nodes))
	t.WriteString("| scenario | nodes | changes | p50 ms | p95 ms | p99 ms | max ms | manager writes / change | agent requests / change | manager peak RSS MiB | agent peak RSS MiB (private) | manager CPU s |\n")
	t.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range results {
		if r.Scenario == "idle" {
			continue
		}
		fmt.Fprintf(&t, "| %s | %d | %d | %.0f | %.0f | %.0f | %.0f | %.1f | %.1f | %.0f | %.0f (%.0f) | %.1f |\n",
			r.Scenario, r.Nodes, r.Changes, r.P50ms, r.P95ms, r.P99ms, r.MaxMs, r.ManagerWrites, r.AgentRequests,
			r.ManagerRSSMiB, r.AgentRSSMiB, r.AgentPrivateMiB, r.ManagerCPUs)
	}
	t.WriteString("\nSteady state (nothing changing, watch requests excluded):\n\n")
	for _, r := range results {
		if r.Scenario == "idle" {
			fmt.Fprintf(&t, "- %d nodes: %d agent requests and %d manager writes in %s.\n", r.Nodes, int(r.AgentRequests), int(r.ManagerWrites), o.idle)
		}
	}
	t.WriteString("\n" + endMarker)
	out := append(append(append([]byte{}, doc[:begin]...), t.String()...), doc[end+len(endMarker):]...)
	return os.WriteFile(o.doc, out, 0o644)
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

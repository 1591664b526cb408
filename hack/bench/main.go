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
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
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

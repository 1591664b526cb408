// Command bench measures how fast access is granted and revoked at scale, and
// what it costs the cluster: `make bench` (not part of `make test`).
//
// For each node count it starts a fresh local control plane (etcd and
// kube-apiserver from bin/k8s, with an audit log), the manager as a separate
// process and N simulated nodes, each with a real agent (agent.NewRunner, as
// cmd/agent builds it) and a host root of its own (cluster.go), and
// observes everything from outside:
//
//   - the floor (floor.go): how long one small object update takes to reach
//     N watchers on their own connections; every latency is also reported
//     as a ratio to its p99;
//   - the scenarios (scenarios.go): grant, update and revoke of one
//     NodeAccess selecting every node; churn (NodeAccess on pools of nodes,
//     then a steady rate of key rotations) with the lag of the status
//     behind the files (reportlag.go); an idle window; one more node filled
//     to the per-node bounds the manager admits (bounds.go); and a polling
//     baseline (baseline.go);
//   - latency (tracker.go): one inotify instance watches every node's .ssh
//     directory; a sample is the time from the API call to the event of the
//     node's authorized_keys holding (or no longer holding) the key; and,
//     per in-process node, when its agent's client read the change from
//     the API server (arrivals.go), which splits that time into the
//     delivery and the agent's own part;
//   - API requests (audit.go) from the API server's audit log, by client,
//     verb and resource; the bytes the agents read (agentbytes.go), counted
//     by a wrapper of their client's transport; memory and CPU
//     (procstats.go) from /proc.
//
// Results go to bin/bench/results.json and the table in docs/benchmarks.md
// (docwriter.go).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/nodeaccess/nodeaccess-operator/internal/image"
)

const (
	namespace = "nodeaccess-system"
	account   = "alice"
	// procAgents agents run as separate processes, for per-agent memory.
	procAgents = 3
	// agentUA marks the in-process agents' requests in the audit log.
	agentUA = "nodeaccess-agent-bench"
	// minPools is the fewest pools the nodes are split into.
	minPools = 10
)

type options struct {
	nodes         []int
	poolSize      int
	nodeAccess    int
	churnKeys     int
	churnRate     int
	churnFor      time.Duration
	lateAfter     time.Duration
	floorUpdates  int
	singleChanges int
	baselineNodes int
	pollEvery     time.Duration
	idle          time.Duration
	bounds        bool
	out, doc      string
	hostsDir      string
	root, k8sBin  string
	work          string
	profileDir    string
	reportWrites  string
}

func main() {
	var o options
	nodes := flag.String("nodes", "100,1000", "Comma-separated node counts (each gets a fresh cluster).")
	flag.StringVar(&o.profileDir, "profile-dir", "", "When set, write CPU profiles of the bench process (the agents) and of the API server during grant, update and revoke there.")
	flag.IntVar(&o.poolSize, "pool-size", 100, "Nodes per pool: the nodes are split into max(10, nodes/pool-size) pools.")
	flag.IntVar(&o.nodeAccess, "nodeaccess", 0, "NodeAccess objects in the churn scenario, NodeAccess i on pool i mod pools; 0 means 10 per pool (100 at 1,000 nodes, 500 at 5,000).")
	flag.IntVar(&o.churnKeys, "churn-keys", 20, "Keys per NodeAccess in the churn scenario.")
	flag.IntVar(&o.churnRate, "churn-rate", 10, "Changes per second in the churn scenario.")
	flag.DurationVar(&o.churnFor, "churn-for", time.Minute, "How long the churn lasts.")
	flag.DurationVar(&o.lateAfter, "late-after", 100*time.Millisecond, "A churn change issued more than this after its schedule counts as late.")
	flag.IntVar(&o.floorUpdates, "floor-updates", 20, "Updates of the floor's ConfigMap.")
	flag.IntVar(&o.singleChanges, "single-changes", 3, "Changes of each of grant, update and revoke, each timed on a quiet cluster; their samples make the step's percentiles.")
	flag.IntVar(&o.baselineNodes, "baseline-nodes", 100, "Nodes of the polling baseline (0 skips it).")
	flag.DurationVar(&o.pollEvery, "poll-every", time.Minute, "The baseline's polling interval.")
	flag.DurationVar(&o.idle, "idle", 30*time.Second, "Steady-state window in which agents' requests are counted.")
	flag.BoolVar(&o.bounds, "bounds", true, "Run the bounds scenario: one more node receiving as many grants as the manager admits for one node.")
	flag.StringVar(&o.hostsDir, "hosts-dir", "", "Where the simulated nodes' host roots are made (a tmpfs such as /dev/shm keeps thousands of fsync pairs off the disk); default: the bench's work directory.")
	flag.StringVar(&o.reportWrites, "report-writes-per-second", "", "The manager's --report-writes-per-second (empty: its default).")
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
	if o.poolSize < 1 || o.nodeAccess < 0 || o.churnKeys < 1 || o.churnRate < 1 || o.floorUpdates < 1 || o.singleChanges < 1 {
		fmt.Fprintln(os.Stderr, "bench: -pool-size, -churn-keys, -churn-rate, -floor-updates and -single-changes must be positive, -nodeaccess not negative")
		os.Exit(2)
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
	// Late is how many churn changes were issued later than -late-after
	// after their schedule.
	Late int `json:"late,omitempty"`
	// Watchers is the floor's number of watchers.
	Watchers int `json:"watchers,omitempty"`
	// Samples is how many (change, node) file changes were timed.
	Samples int     `json:"samples"`
	P50ms   float64 `json:"p50_ms"`
	P95ms   float64 `json:"p95_ms"`
	P99ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
	// TrackerDelay is how long after a file was put in place the tracker
	// read it (p50, p99 over the samples): left out of the latencies.
	TrackerDelayP50ms float64 `json:"tracker_delay_p50_ms"`
	TrackerDelayP99ms float64 `json:"tracker_delay_p99_ms"`
	// Arrival is, per (change, in-process node), the time from the change
	// to the node's agent reading it from the API server (p50, p99), and
	// Pass the time from that read to the node's file (arrivals.go): the
	// latency is the one and then the other. ArrivalFloorRatio is the
	// arrival's p99 over the floor's. Unarrived counts nodes whose file
	// showed a change their agent's client was not seen to read.
	ArrivalP50ms      float64 `json:"arrival_p50_ms,omitempty"`
	ArrivalP99ms      float64 `json:"arrival_p99_ms,omitempty"`
	ArrivalFloorRatio float64 `json:"arrival_p99_floor_ratio,omitempty"`
	PassP50ms         float64 `json:"pass_p50_ms,omitempty"`
	PassP99ms         float64 `json:"pass_p99_ms,omitempty"`
	Unarrived         int     `json:"unarrived,omitempty"`
	// Process is the latency of the agents that run as separate processes
	// (as on a real node, each its own runtime; the cores still shared),
	// over their ProcessSamples, timed apart from the in-process agents';
	// ProcessFloorRatio is their max over the floor's p99.
	ProcessSamples    int     `json:"process_samples,omitempty"`
	ProcessP50ms      float64 `json:"process_p50_ms,omitempty"`
	ProcessP99ms      float64 `json:"process_p99_ms,omitempty"`
	ProcessMaxMs      float64 `json:"process_max_ms,omitempty"`
	ProcessFloorRatio float64 `json:"process_max_floor_ratio,omitempty"`
	// RenderedMs is, for a single change, the time from the API call to the
	// manager's write of the rendered grant completing (from the audit log):
	// the manager's part; the rest of each latency is the delivery to the
	// agents and their passes.
	RenderedMs float64 `json:"rendered_ms,omitempty"`
	// FloorRatio is P99ms over the p99 of the floor measured with every
	// node watching, in the same run.
	FloorRatio float64 `json:"p99_floor_ratio,omitempty"`
	// ReportLag is, per change, the time from the last node's file showing
	// it to the NodeAccess status counting every selected node in sync at
	// its generation or a later one (churn only); ReportLagMissing counts
	// changes whose status never showed that before the scenario ended.
	ReportLagP50ms   float64 `json:"report_lag_p50_ms,omitempty"`
	ReportLagP99ms   float64 `json:"report_lag_p99_ms,omitempty"`
	ReportLagMissing int     `json:"report_lag_missing,omitempty"`
	// Churn is where the churn's latency goes (churn only).
	Churn *ChurnSplit `json:"churn_split,omitempty"`
	// ConcernedNodes is, per change, how many in-process agents' nodes it
	// concerns (on average over the changes).
	ConcernedNodes float64 `json:"concerned_nodes,omitempty"`
	// BytesPerChange is what the in-process agents read from the API server
	// during the scenario, per change (WatchBytesPerChange of it on
	// watches); BytesPerConcernedNode is that divided by ConcernedNodes.
	// In the idle window they are totals.
	BytesPerChange        float64 `json:"agent_bytes_per_change"`
	WatchBytesPerChange   float64 `json:"agent_watch_bytes_per_change"`
	BytesPerConcernedNode float64 `json:"agent_bytes_per_concerned_node,omitempty"`
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
	// CPU is the CPU each process used during the scenario, per change:
	// what a change costs, which unlike its latency does not swing with
	// how close to saturation the machine ran.
	CPU *CPUPerChange `json:"cpu_per_change,omitempty"`
	// BenchRSSMiB is the bench process's peak RSS (the in-process agents).
	BenchRSSMiB float64 `json:"bench_rss_mib"`
	// Bounds holds the bounds scenario's own figures (bounds.go).
	Bounds *BoundsResult `json:"bounds,omitempty"`
	Note   string        `json:"note,omitempty"`
}

// CPUPerChange is CPU milliseconds per change: kube-apiserver, etcd, the
// manager, and the bench process (the in-process agents, the file tracker
// and the driver).
type CPUPerChange struct {
	APIServerMs float64 `json:"apiserver_ms"`
	EtcdMs      float64 `json:"etcd_ms"`
	ManagerMs   float64 `json:"manager_ms"`
	BenchMs     float64 `json:"bench_ms"`
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
	if o.hostsDir == "" {
		o.hostsDir = filepath.Join(o.work, "hosts")
	} else {
		// A directory of this run's own inside the one given, removed after.
		if o.hostsDir, err = os.MkdirTemp(o.hostsDir, "nodeaccess-bench-hosts"); err != nil {
			return err
		}
		defer os.RemoveAll(o.hostsDir)
	}
	// Built as the images ship them (static, stripped), whatever the
	// environment's CGO_ENABLED: a dynamically linked agent maps the C
	// library too, and its RSS would not be the shipped agent's.
	for _, b := range []struct{ out, pkg string }{{"manager", "."}, {"agent", "./cmd/agent"}} {
		if err := image.GoBuild(context.Background(), o.root, b.pkg, runtime.GOARCH, filepath.Join(o.work, "bin", b.out)); err != nil {
			return err
		}
	}
	var results []Result
	for i, n := range o.nodes {
		rs, err := runNodes(o, n, i == 0 && o.baselineNodes > 0)
		results = append(results, rs...)
		// What was measured is kept even when a later node count fails.
		werr := writeResults(o.out, results)
		if err != nil {
			return errors.Join(fmt.Errorf("%d nodes: %w", n, err), werr)
		}
		if werr != nil {
			return werr
		}
	}
	fmt.Println("wrote", o.out)
	if err := writeDoc(o, results); err != nil {
		return err
	}
	fmt.Println("wrote", o.doc)
	return nil
}

// writeResults writes the machine-readable results.
func writeResults(path string, results []Result) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(results, "", "  ")
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// runNodes runs everything at one node count, on one fresh cluster.
func runNodes(o options, n int, withBaseline bool) ([]Result, error) {
	b := &bench{
		o: o, n: n, dir: filepath.Join(o.work, fmt.Sprintf("n%d", n)), hosts: filepath.Join(o.hostsDir, fmt.Sprintf("n%d", n)),
		pools: max(minPools, n/o.poolSize), bytes: &byteCounter{}, arrivals: newArrivals(),
	}
	var err error
	if b.tracker, err = newTracker(); err != nil {
		return nil, err
	}
	b.tracker.arrivals = b.arrivals
	go b.tracker.run()
	defer b.stop()
	fmt.Printf("==> %d nodes in %d pools: starting the control plane, the manager and %d agents (+%d as processes)\n", n, b.pools, n, procAgents)
	if err := b.start(); err != nil {
		return nil, err
	}
	if err := b.settleVocabulary("bench", "pool", "baseline"); err != nil {
		return nil, err
	}
	var results []Result
	report := func(r Result) {
		r.Nodes = n
		b.resources(&r)
		floor := r
		if len(results) > 0 {
			floor = results[0]
		}
		if floor.Scenario == "floor" && floor.P99ms > 0 {
			r.FloorRatio = r.P99ms / floor.P99ms
			r.ArrivalFloorRatio = r.ArrivalP99ms / floor.P99ms
			r.ProcessFloorRatio = r.ProcessMaxMs / floor.P99ms
		}
		results = append(results, r)
		fmt.Println("    " + r.summary())
	}
	// The floor first, with every node's watcher, then one pool's.
	r, err := b.floor("floor", "bench-floor", n, o.floorUpdates)
	if err != nil {
		return results, err
	}
	report(r)
	if pool := len(b.nodeNames(b.poolOf(0))); pool < n {
		if r, err = b.floor("floor-pool", "bench-floor-pool", pool, o.floorUpdates); err != nil {
			return results, err
		}
		report(r)
	}
	stopProfiles := func() {}
	if o.profileDir != "" {
		// Grant, update and revoke take less than this at 1,000 nodes.
		if stopProfiles, err = b.profile("grant-update-revoke", 20); err != nil {
			return results, err
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
		report(r)
	}
	if r, err = b.steadyState(); err != nil {
		return results, err
	}
	report(r)
	if o.bounds {
		if r, err = b.bounds(); err != nil {
			return results, err
		}
		report(r)
	}
	if withBaseline {
		if r, err = b.baseline(); err != nil {
			return results, err
		}
		report(r)
		results[len(results)-1].Nodes = o.baselineNodes
	}
	if o := b.tracker.overflowCount(); o > 0 {
		fmt.Printf("    the file tracker's inotify queue overflowed %d times; the nodes pending then were read again (a file rewritten since by a later change gives an upper bound)\n", o)
	}
	return results, nil
}

// summary is a result's line of progress output.
func (r Result) summary() string {
	switch r.Scenario {
	case "idle":
		return fmt.Sprintf("idle     %d agent requests (besides watches), %d manager writes and %.0f bytes to agents (%.0f on watches) in the window",
			int(r.AgentRequests), int(r.ManagerWrites), r.BytesPerChange, r.WatchBytesPerChange)
	case "bounds":
		br := r.Bounds
		return fmt.Sprintf("bounds   %d NodeAccess admitted, %d refused; %d keys in the files after %.0f ms (p50 %.0f ms), gone %.0f ms after deletion; "+
			"%.2f MiB rendered received (%.2f MiB as objects), key lines %s; agent peak RSS %.0f MiB (private %.0f), %s its %.0f MiB limit; "+
			"%.0f bytes read per other node",
			br.Admitted, br.Refused, br.Keys, r.MaxMs, r.P50ms, br.EmptiedMs, float64(br.SpecBytes)/(1<<20), float64(br.ObjectBytes)/(1<<20), accountBytes(br.AccountBytes),
			br.AgentRSSMiB, br.AgentPrivateMiB, headroom(br.HeadroomMiB), br.LimitMiB, br.OtherNodeBytes)
	case "floor", "floor-pool":
		return fmt.Sprintf("%-10s %d watchers: p50 %.0f ms  p99 %.0f ms  max %.0f ms", r.Scenario, r.Watchers, r.P50ms, r.P99ms, r.MaxMs)
	}
	s := fmt.Sprintf("%-8s p50 %6.0f ms  p95 %6.0f ms  p99 %6.0f ms (%.1fx floor)  max %6.0f ms  manager writes/change %.1f  agent requests/change %.1f  "+
		"agent KiB/change %.1f (%.0f bytes per concerned node)  manager RSS %.0f MiB  agent RSS %.0f MiB  bench RSS %.0f MiB",
		r.Scenario, r.P50ms, r.P95ms, r.P99ms, r.FloorRatio, r.MaxMs, r.ManagerWrites, r.AgentRequests, r.BytesPerChange/1024, r.BytesPerConcernedNode,
		r.ManagerRSSMiB, r.AgentRSSMiB, r.BenchRSSMiB)
	if c := r.CPU; c != nil {
		s += fmt.Sprintf("\n             CPU per change: API server %.0f ms, etcd %.0f ms, manager %.0f ms, bench process (agents) %.0f ms", c.APIServerMs, c.EtcdMs, c.ManagerMs, c.BenchMs)
	}
	s += fmt.Sprintf("\n             the tracker read the files p50 %.0f ms, p99 %.0f ms after they were put in place (not counted)", r.TrackerDelayP50ms, r.TrackerDelayP99ms)
	if r.ArrivalP99ms > 0 {
		s += fmt.Sprintf("\n             the agents read the change p50 %.0f ms, p99 %.0f ms (%.1fx floor) after it; their files followed the read p50 %.0f ms, p99 %.0f ms later",
			r.ArrivalP50ms, r.ArrivalP99ms, r.ArrivalFloorRatio, r.PassP50ms, r.PassP99ms)
	}
	if r.Unarrived > 0 {
		s += fmt.Sprintf("\n             %d of %d files changed without their agent seen reading the change", r.Unarrived, r.Samples)
	}
	if r.ProcessSamples > 0 {
		s += fmt.Sprintf("\n             the %d process agents' files: p50 %.0f ms, p99 %.0f ms, max %.0f ms (%.1fx floor) over %d samples",
			procAgents, r.ProcessP50ms, r.ProcessP99ms, r.ProcessMaxMs, r.ProcessFloorRatio, r.ProcessSamples)
	}
	if r.Scenario == "churn" {
		s += fmt.Sprintf("\n             %d of %d changes issued late; status lag behind the files p50 %.0f ms  p99 %.0f ms (%d never in sync)",
			r.Late, r.Changes, r.ReportLagP50ms, r.ReportLagP99ms, r.ReportLagMissing)
		if c := r.Churn; c != nil {
			s += fmt.Sprintf("\n             per change p50/p99: issued %.0f/%.0f ms late, the call %.0f/%.0f ms, the manager %.0f/%.0f ms, the delivery %.0f/%.0f ms",
				c.IssueP50ms, c.IssueP99ms, c.CallP50ms, c.CallP99ms, c.ManagerP50ms, c.ManagerP99ms, c.DeliveryP50ms, c.DeliveryP99ms)
		}
	}
	return s
}

// parallel runs fn for every item with at most width at once.
func parallel(items []string, width int, fn func(string) error) error {
	work := make(chan string)
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range min(width, max(len(items), 1)) {
		wg.Go(func() {
			for it := range work {
				if err := fn(it); err != nil {
					once.Do(func() { first = err })
				}
			}
		})
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

package agent_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/agent"
	"github.com/nodeaccess/nodeaccess-operator/internal/nodefilter"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// runAgent runs a Runner for node with the given report delay and probe
// address until the test ends.
func runAgent(t *testing.T, node, hostRoot string, reportDelay time.Duration, probeAddr string) {
	t.Helper()
	runAgentWith(t, agent.Config{
		NodeName: node, Namespace: namespace, HostRoot: hostRoot,
		Resync: time.Minute, Heartbeat: 10 * time.Minute, ReportDelay: reportDelay,
	}, probeAddr)
}

// runAgentWith runs a Runner with cfg until the test ends, and returns a
// function that stops it earlier.
func runAgentWith(t *testing.T, cfg agent.Config, probeAddr string) (stop func()) {
	t.Helper()
	return runAgentOn(t, env.Config, cfg, probeAddr)
}

// runAgentOn is runAgentWith against the API server of restCfg.
func runAgentOn(t *testing.T, restCfg *rest.Config, cfg agent.Config, probeAddr string) (stop func()) {
	t.Helper()
	r, err := agent.NewRunner(restCfg, cfg, agent.ServeOptions{ProbeAddr: probeAddr})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent stopped with %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// The files come first: a changed report is written no sooner than its
// delay after the change, and then says the grant is applied.
func TestReportFollowsTheFilesAfterItsDelay(t *testing.T) {
	const delay = 2 * time.Second
	ctx := context.Background()
	h := newHost(t)
	createNode(t, "node-delay", map[string]string{"pool": "delay"})
	runAgent(t, "node-delay", h.Root, delay, "0")
	// The first report of a process is not delayed.
	eventually(t, 30*time.Second, "the agent's first report", func() error {
		return k8sClient.Get(ctx, client.ObjectKey{Name: "node-delay"}, &nav1.NodeAccessReport{})
	})

	g := grant("team-delay", map[string]string{"pool": "delay"}, nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{key(aliceData, "alice")}})
	t.Cleanup(func() { remove(t, g.Name) })
	apply(t, g)
	eventually(t, 10*time.Second, "the first key written", holds(h, "alice", true, aliceData))
	eventually(t, delay+20*time.Second, "the report listing the grant", reportHas(ctx, "node-delay", g))

	// The change measured: a second key.
	g.Spec.Users[0].Keys = append(g.Spec.Users[0].Keys, key(bobData, "bob"))
	changed := time.Now()
	apply(t, g)
	eventually(t, 10*time.Second, "the second key written", holds(h, "alice", true, aliceData, bobData))
	for {
		err := reportHas(ctx, "node-delay", g)()
		since := time.Since(changed)
		if err == nil {
			if since < delay {
				t.Fatalf("the report listed the grant %s after the change, before its delay of %s", since, delay)
			}
			return
		}
		if since > delay+20*time.Second {
			t.Fatalf("the report never listed the grant: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The DaemonSet's probes: /healthz while the process runs, /readyz once the
// informers have synced.
func TestProbes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := ln.Addr().String()
	must(t, ln.Close())
	h := newHost(t)
	createNode(t, "node-probes", map[string]string{"pool": "probes"})
	runAgent(t, "node-probes", h.Root, 0, addr)
	for _, path := range []string{"/healthz", "/readyz"} {
		eventually(t, 30*time.Second, path+" answering ok", func() error {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s", resp.Status, body)
			}
			return nil
		})
	}
}

// A report deleted by hand comes back at the agent's next write.
func TestDeletedReportIsRecreated(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	createNode(t, "node-recreate", map[string]string{"pool": "recreate"})
	runAgent(t, "node-recreate", h.Root, 0, "0")
	report := &nav1.NodeAccessReport{}
	eventually(t, 30*time.Second, "the agent's first report", func() error {
		return k8sClient.Get(ctx, client.ObjectKey{Name: "node-recreate"}, report)
	})
	must(t, k8sClient.Delete(ctx, report))

	g := grant("team-recreate", map[string]string{"pool": "recreate"}, nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{key(aliceData, "alice")}})
	t.Cleanup(func() { remove(t, g.Name) })
	apply(t, g)
	eventually(t, 10*time.Second, "the key written", holds(h, "alice", true, aliceData))
	eventually(t, 10*time.Second, "the report back, listing the grant", reportHas(ctx, "node-recreate", g))
}

// A node under a stream of changes writes its files at each change and its
// report at most once per interval: the writes the API server sees are
// spaced by the interval, and the last one lists the last change.
func TestReportsOfAChurningNodeAreSpacedByTheInterval(t *testing.T) {
	const interval = 2 * time.Second
	writes := churnReports(t, "node-interval", interval, 10*time.Minute)
	if len(writes) == 0 || len(writes) > 3 {
		t.Fatalf("%d report writes for 10 changes over 3 s with a %s interval, want 1 to 3", len(writes), interval)
	}
	spacedBy(t, writes, interval)
}

// The manager publishes a longer interval for a large cluster: the agent
// spaces its reports by it, though its own interval is shorter. A value
// that is not a bounded duration is not used.
func TestReportsFollowTheIntervalTheManagerPublishes(t *testing.T) {
	cm := publishReportInterval(t, "4s")
	writes := churnReports(t, "node-published", 500*time.Millisecond, 10*time.Minute)
	if len(writes) == 0 || len(writes) > 2 {
		t.Fatalf("%d report writes for 10 changes over 3 s with a published interval of 4s, want 1 or 2", len(writes))
	}
	spacedBy(t, writes, 4*time.Second)

	// Over the bound (or not a duration): the agent's own interval again.
	cm.Data[nodefilter.ReportIntervalField] = "1000h"
	must(t, k8sClient.Update(context.Background(), cm))
	writes = churnReports(t, "node-published-hostile", 0, 10*time.Minute)
	if len(writes) < 4 {
		t.Fatalf("%d report writes for 10 changes over 3 s with no interval of its own and a published 1000h, want at least 4 (the value is not used)", len(writes))
	}
}

// TestAPublishedIntervalIsCappedByTheHeartbeat: an agent whose heartbeat
// is shorter than twice the published interval spaces its changed reports
// by half its heartbeat, not by the published interval: a change is never
// reported later than the node's next heartbeat would have been.
func TestAPublishedIntervalIsCappedByTheHeartbeat(t *testing.T) {
	publishReportInterval(t, "1m")
	// churnReports waits at most 30 s for the report of the last change: a
	// published minute that was not capped fails it.
	writes := churnReports(t, "node-heartbeat-cap", 0, 4*time.Second)
	if len(writes) < 2 {
		t.Fatalf("%d report writes for 10 changes over 3 s with a 4s heartbeat (interval capped at 2s), want at least 2", len(writes))
	}
	spacedBy(t, writes, 2*time.Second)
}

// TestReportsAreSpreadOverALongerPublishedInterval: where the manager
// published a report interval longer than the agents' own (a cluster
// larger than its report budget serves at the agents' interval), one
// grant reaching every node has each node write its file at once and its
// report at a random point of the published interval, not all within the
// report delay: the nodes' report writes stay within the manager's budget
// even for one change that concerns them all.
func TestReportsAreSpreadOverALongerPublishedInterval(t *testing.T) {
	const (
		nodes     = 6
		published = 8 * time.Second // longer than one 5 s step: a cluster past the budget
		delay     = 100 * time.Millisecond
	)
	ctx := context.Background()
	publishReportInterval(t, published.String())
	pool := map[string]string{"pool": "spread"}
	hosts := make([]*testenv.Host, nodes)
	names := make([]string, nodes)
	for i := range nodes {
		names[i], hosts[i] = fmt.Sprintf("node-spread-%d", i), newHost(t)
		createNode(t, names[i], pool)
		runAgentWith(t, agent.Config{
			NodeName: names[i], Namespace: namespace, HostRoot: hosts[i].Root,
			Resync: time.Minute, Heartbeat: 10 * time.Minute, ReportDelay: delay, ReportInterval: time.Second,
		}, "0")
	}
	// Each agent's first report, written at once; the next may follow no
	// sooner than the published interval after it.
	var firstReports time.Time
	for _, n := range names {
		eventually(t, 30*time.Second, n+"'s first report", func() error {
			return k8sClient.Get(ctx, client.ObjectKey{Name: n}, &nav1.NodeAccessReport{})
		})
		firstReports = time.Now()
	}
	time.Sleep(time.Until(firstReports.Add(published))) // past the interval after the first reports: a known time, not a wait for a result

	g := grant("team-spread", pool, nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{key(aliceData, "alice")}})
	t.Cleanup(func() { remove(t, g.Name) })
	applied := time.Now()
	apply(t, g)
	for i := range hosts {
		eventually(t, 10*time.Second, names[i]+"'s file holds the grant", holdsExactly(hosts[i], aliceData))
	}
	filesAfter := time.Since(applied)
	reported := map[string]time.Duration{}
	eventually(t, 2*published+5*time.Second, "every node's report listing the grant", func() error {
		for _, n := range names {
			if _, ok := reported[n]; !ok && reportHas(ctx, n, g)() == nil {
				reported[n] = time.Since(applied)
			}
		}
		if len(reported) < nodes {
			return fmt.Errorf("%d of %d reports list the grant", len(reported), nodes)
		}
		return nil
	})
	first, last := time.Duration(math.MaxInt64), time.Duration(0)
	for _, d := range reported {
		first, last = min(first, d), max(last, d)
	}
	t.Logf("files after %s; reports from %s to %s after the grant", filesAfter.Round(time.Millisecond), first.Round(time.Millisecond), last.Round(time.Millisecond))
	if filesAfter > 2*time.Second {
		t.Errorf("the files took %s: they must not wait for the reports", filesAfter)
	}
	if last > delay+published+2*time.Second {
		t.Errorf("the last report came %s after the grant, past the report delay and the published interval (%s)", last, delay+published)
	}
	// Six draws over 8 s all within 1 s of one another: about 2 in 10,000.
	if last-first < published/8 {
		t.Errorf("the reports came within %s of one another: not spread over the published %s", last-first, published)
	}
}

// publishReportInterval publishes a report interval as the manager does,
// in the filter ConfigMap, until the test ends.
func publishReportInterval(t *testing.T, value string) *corev1.ConfigMap {
	t.Helper()
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: nodefilter.ConfigMapName},
		Data:       map[string]string{nodefilter.ReportIntervalField: value},
	}
	must(t, k8sClient.Create(context.Background(), cm))
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), cm) })
	return cm
}

// spacedBy fails when two writes are closer than interval.
func spacedBy(t *testing.T, writes []time.Time, interval time.Duration) {
	t.Helper()
	for i := 1; i < len(writes); i++ {
		if gap := writes[i].Sub(writes[i-1]); gap < interval-200*time.Millisecond {
			t.Fatalf("report writes %s apart, within the interval of %s", gap, interval)
		}
	}
}

// churnReports runs an agent with the report interval on a new node, makes
// ten changes of its grant 300 ms apart, each in the file at once, and
// returns when each report write from the first change on was seen, up to
// the one listing the last change.
func churnReports(t *testing.T, node string, interval, heartbeat time.Duration) []time.Time {
	t.Helper()
	ctx := context.Background()
	h := newHost(t)
	pool := map[string]string{"pool": node}
	createNode(t, node, pool)
	runAgentWith(t, agent.Config{
		NodeName: node, Namespace: namespace, HostRoot: h.Root,
		Resync: time.Minute, Heartbeat: heartbeat, ReportInterval: interval,
	}, "0")
	g := grant("team-"+node, pool, nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{key(aliceData, "alice")}})
	t.Cleanup(func() { remove(t, g.Name) })
	apply(t, g)
	eventually(t, 30*time.Second, "the first report listing the grant", reportHas(ctx, node, g))

	// Record every write of the report from now on.
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: k8sClient.Scheme()})
	must(t, err)
	report := &nav1.NodeAccessReport{}
	must(t, k8sClient.Get(ctx, client.ObjectKey{Name: node}, report))
	w, err := wc.Watch(ctx, &nav1.NodeAccessReportList{}, &client.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", node),
		Raw:           &metav1.ListOptions{ResourceVersion: report.ResourceVersion},
	})
	must(t, err)
	defer w.Stop()
	type write struct {
		at time.Time
		rv string
	}
	seen := make(chan write, 100)
	go func() {
		for ev := range w.ResultChan() {
			if r, ok := ev.Object.(*nav1.NodeAccessReport); ok {
				seen <- write{time.Now(), r.ResourceVersion}
			}
		}
	}()

	blobs := []string{aliceData}
	for i := range 10 {
		data := newKeyData(t)
		blobs = append(blobs, data)
		g.Spec.Users[0].Keys = append(g.Spec.Users[0].Keys, key(data, fmt.Sprint("k", i)))
		apply(t, g)
		eventually(t, 10*time.Second, "change written to the file", holdsExactly(h, blobs...))
		time.Sleep(300 * time.Millisecond) // the pace of the changes, not a wait for a result
	}
	eventually(t, 30*time.Second, "the report listing the last change", reportHas(ctx, node, g))
	must(t, k8sClient.Get(ctx, client.ObjectKey{Name: node}, report))
	var writes []time.Time
	for last := ""; last != report.ResourceVersion; {
		select {
		case wr := <-seen:
			writes, last = append(writes, wr.at), wr.rv
		case <-time.After(30 * time.Second):
			t.Fatalf("the watch never showed the report's write %s", report.ResourceVersion)
		}
	}
	return writes
}

// A report write that the API server holds never holds the files: a grant
// that arrives while the node's report is being written reaches the file
// at once, and the report follows once the write ends.
func TestFilesDoNotWaitForAReportWriteTheAPIServerHolds(t *testing.T) {
	const node = "node-held-report"
	ctx := context.Background()
	h := newHost(t)
	pool := map[string]string{"pool": "held-report"}
	createNode(t, node, pool)

	var holding atomic.Bool
	held, release := make(chan struct{}, 1), make(chan struct{})
	cfg := rest.CopyConfig(env.Config)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			if holding.Load() && req.Method == http.MethodPatch && strings.HasSuffix(req.URL.Path, "/nodeaccessreports/"+node+"/status") {
				select {
				case held <- struct{}{}:
				default:
				}
				select {
				case <-release:
				case <-req.Context().Done():
					return nil, req.Context().Err()
				}
			}
			return rt.RoundTrip(req)
		})
	}
	runAgentOn(t, cfg, agent.Config{
		NodeName: node, Namespace: namespace, HostRoot: h.Root,
		Resync: time.Minute, Heartbeat: 10 * time.Minute,
	}, "0")
	eventually(t, 30*time.Second, "the agent's first report", func() error {
		return k8sClient.Get(ctx, client.ObjectKey{Name: node}, &nav1.NodeAccessReport{})
	})

	holding.Store(true)
	first := grant("team-held-1", pool, nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{key(aliceData, "alice")}})
	t.Cleanup(func() { remove(t, first.Name) })
	apply(t, first)
	eventually(t, 10*time.Second, "the first grant's key", holdsExactly(h, aliceData))
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the report of the first grant was never written")
	}

	// The report write is held at the API server now: the next grant must
	// not wait for it.
	second := grant("team-held-2", pool, nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{key(bobData, "bob")}})
	t.Cleanup(func() { remove(t, second.Name) })
	apply(t, second)
	eventually(t, 5*time.Second, "the second grant's key while the report write is held", holdsExactly(h, aliceData, bobData))
	if reportHas(ctx, node, first)() == nil {
		t.Fatal("the report listed the first grant while its write was held")
	}

	holding.Store(false)
	close(release)
	eventually(t, 30*time.Second, "the report listing both grants", func() error {
		if err := reportHas(ctx, node, first)(); err != nil {
			return err
		}
		return reportHas(ctx, node, second)()
	})
}

// The agent asks for no compression: the API server gzips a streamed
// list's watch at every flush for each connection apart, which makes one
// grant change cost it once per agent. The node's watches and lists reach
// the agent as sent (the transport never had to decompress one), and the
// grant still reaches the file.
func TestAgentStreamsArriveUncompressed(t *testing.T) {
	const node = "node-uncompressed"
	h := newHost(t)
	pool := map[string]string{"pool": "uncompressed"}
	createNode(t, node, pool)

	var watches, compressed atomic.Int32
	cfg := rest.CopyConfig(env.Config)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			if err != nil {
				return resp, err
			}
			if req.URL.Query().Get("watch") == "true" {
				watches.Add(1)
			}
			if resp.Uncompressed || resp.Header.Get("Content-Encoding") != "" {
				compressed.Add(1)
			}
			return resp, nil
		})
	}
	runAgentOn(t, cfg, agent.Config{
		NodeName: node, Namespace: namespace, HostRoot: h.Root,
		Resync: time.Minute, Heartbeat: 10 * time.Minute,
	}, "0")
	g := grant("team-uncompressed", pool, nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{key(aliceData, "alice")}})
	t.Cleanup(func() { remove(t, g.Name) })
	apply(t, g)
	eventually(t, 10*time.Second, "the grant's key", holdsExactly(h, aliceData))
	if watches.Load() == 0 {
		t.Fatal("the agent opened no watch")
	}
	if n := compressed.Load(); n > 0 {
		t.Fatalf("%d of the agent's responses came compressed", n)
	}
}

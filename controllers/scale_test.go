package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/controllers"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// TestManagerWritesDoNotGrowWithNodes counts the manager's write requests
// for one NodeAccess change while N simulated nodes report it applied. The
// nodes here are Node objects whose reports the test writes as agents would:
// the manager is what is measured.
func TestManagerWritesDoNotGrowWithNodes(t *testing.T) {
	for _, n := range []int{5, 60} {
		w := writesForOneChange(t, n)
		t.Logf("%d nodes: %d manager writes for one NodeAccess change (%d to the rendered grant, %d to status) while reports arrived over %s",
			n, w.total, w.rendered, w.status, w.window.Round(time.Millisecond))
		// The agents' desired state is written once per change, whatever the nodes.
		if w.rendered != 1 {
			t.Errorf("%d nodes: the rendered grant was written %d times for one change", n, w.rendered)
		}
		// Status writes are batched by time, not by reports: at most one per
		// StatusDelay while reports keep arriving, plus a constant few for the
		// change itself (new generation, Progressing) and the final batch.
		// Writes per report would be n.
		if limit := int(w.window/statusDelay) + 5; w.status > limit {
			t.Errorf("%d nodes: %d status writes while reports arrived over %s; batching allows %d", n, w.status, w.window, limit)
		}
		// Besides: the change's Events, also one per change and not per node.
		if other := w.total - w.rendered - w.status; other > 3 {
			t.Errorf("%d nodes: %d manager writes besides the rendered grant and status", n, other)
		}
	}
}

type writeCounts struct {
	total, rendered, status int
	// window is how long the reports took to arrive.
	window time.Duration
}

func writesForOneChange(t *testing.T, n int) writeCounts {
	ctx := context.Background()
	pool := fmt.Sprintf("scale-%d", n)
	var nodes []string
	for i := range n {
		name := fmt.Sprintf("%s-%d", pool, i)
		obj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pool": pool}}}
		must(t, k8sClient.Create(ctx, obj))
		t.Cleanup(func() { _ = k8sClient.Delete(ctx, obj) })
		nodes = append(nodes, name)
	}
	create(t, nodeAccess(pool, pool, newKey(t, "first").line))
	reportAll(t, pool, nodes)
	testenv.Eventually(t, timeout, "in sync", statusIs(pool, int32(n), int32(n), 1, nav1.AllNodesInSyncReason))
	time.Sleep(time.Second) // let every delayed request drain

	before := writeCounts{
		total:    writes.matching("/"),
		rendered: writes.matching("/renderednodeaccesses/" + pool),
		status:   writes.matching("/nodeaccesses/" + pool + "/status"),
	}
	update(t, pool, func(na *nav1.NodeAccess) {
		na.Spec.Users[0].Keys = append(na.Spec.Users[0].Keys, nav1.AuthorizedKey{Key: newKey(t, "second").line})
	})
	window := reportAll(t, pool, nodes)
	testenv.Eventually(t, timeout, "in sync again", statusIs(pool, int32(n), int32(n), 2, nav1.AllNodesInSyncReason))
	time.Sleep(time.Second)
	return writeCounts{
		total:    writes.matching("/") - before.total,
		rendered: writes.matching("/renderednodeaccesses/"+pool) - before.rendered,
		status:   writes.matching("/nodeaccesses/"+pool+"/status") - before.status,
		window:   window,
	}
}

// reportAll writes, for every node, a report saying it applied the current
// rendering of the grant, as each node's agent would, and returns how long
// the reports took from the first to the last.
func reportAll(t *testing.T, name string, nodes []string) time.Duration {
	t.Helper()
	ctx := context.Background()
	rendered := &nav1.RenderedNodeAccess{}
	var na nav1.NodeAccess
	testenv.Eventually(t, timeout, "rendered at the current generation", func() error {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, &na); err != nil {
			return err
		}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, rendered); err != nil {
			return err
		}
		if rendered.Spec.Generation != na.Generation {
			return fmt.Errorf("rendered generation %d, object %d", rendered.Spec.Generation, na.Generation)
		}
		return nil
	})
	keys := int32(len(rendered.Spec.Users[0].Keys))
	// Agents report in parallel, each on its own node.
	work := make(chan string)
	errs := make(chan error, len(nodes))
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for node := range work {
				errs <- writeReport(ctx, node, nav1.GrantReport{
					Name: name, UID: string(na.UID), Generation: na.Generation, Hash: rendered.Spec.Hash, Keys: keys, Applied: true,
				})
			}
		}()
	}
	start := time.Now()
	for _, node := range nodes {
		work <- node
	}
	close(work)
	wg.Wait()
	window := time.Since(start)
	close(errs)
	for err := range errs {
		must(t, err)
	}
	for _, node := range nodes {
		t.Cleanup(func() { _ = k8sClient.Delete(ctx, &nav1.NodeAccessReport{ObjectMeta: metav1.ObjectMeta{Name: node}}) })
	}
	return window
}

func writeReport(ctx context.Context, node string, g nav1.GrantReport) error {
	report := &nav1.NodeAccessReport{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: node}, report); err != nil {
		report = &nav1.NodeAccessReport{ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: nav1.NodeAccessReportSpec{NodeName: node}}
		if err := k8sClient.Create(ctx, report); err != nil {
			return err
		}
	}
	report.Status.Grants = []nav1.GrantReport{g}
	return k8sClient.Status().Update(ctx, report)
}

// TestReportDrivenStatusWritesStayWithinTheBudget: with more NodeAccess
// than the status-write budget (DefaultStatusWritesPerSecond), reports
// that keep changing every NodeAccess's count of nodes in sync make the
// manager write each one's status at most once per count/budget. Over the
// window the writes stay within the budget (plus one per NodeAccess for
// the window's edges), where one write per report and NodeAccess would be
// many times more; status is written while the reports change, and shows
// the last one once they stop.
func TestReportDrivenStatusWritesStayWithinTheBudget(t *testing.T) {
	const grants, flipEvery, window = 50, 100 * time.Millisecond, 6 * time.Second
	ctx := context.Background()
	nodes := []string{"paced-0", "paced-1"}
	for _, name := range nodes {
		must(t, k8sClient.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pool": "paced"}}}))
	}
	names := make([]string, grants)
	for i := range names {
		names[i] = fmt.Sprintf("paced-%02d", i)
		create(t, nodeAccess(names[i], "paced", newKey(t, names[i]).line))
	}
	// Cleanups run last first: the nodes and their reports go before the
	// NodeAccess, whose deletions then have no node left to wait for.
	for _, name := range nodes {
		t.Cleanup(func() {
			_ = k8sClient.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}})
			_ = k8sClient.Delete(ctx, &nav1.NodeAccessReport{ObjectMeta: metav1.ObjectMeta{Name: name}})
		})
	}
	reports := make([]nav1.GrantReport, grants)
	testenv.Eventually(t, timeout, "every grant rendered", func() error {
		for i, name := range names {
			var na nav1.NodeAccess
			rendered := &nav1.RenderedNodeAccess{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, &na); err != nil {
				return err
			}
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, rendered); err != nil {
				return err
			}
			reports[i] = nav1.GrantReport{Name: name, UID: string(na.UID), Generation: na.Generation, Hash: rendered.Spec.Hash, Keys: 1, Applied: true}
		}
		return nil
	})
	report := func(node string, applied bool) {
		t.Helper()
		grants := slices.Clone(reports)
		for i := range grants {
			grants[i].Applied = applied
			if !applied {
				grants[i].Keys, grants[i].Reason = 0, nav1.ChangedDuringEditReason
			}
		}
		r := &nav1.NodeAccessReport{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: node}, r); err != nil {
			r = &nav1.NodeAccessReport{ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: nav1.NodeAccessReportSpec{NodeName: node}}
			must(t, k8sClient.Create(ctx, r))
		}
		r.Status.Grants = grants
		must(t, k8sClient.Status().Update(ctx, r))
	}
	allInSync := func() error {
		for _, name := range names {
			if err := statusIs(name, 2, 2, 1, nav1.AllNodesInSyncReason)(); err != nil {
				return err
			}
		}
		return nil
	}
	for _, node := range nodes {
		report(node, true)
	}
	testenv.Eventually(t, timeout, "every NodeAccess in sync", allInSync)

	before := writes.matching("/nodeaccesses/paced-", "/status")
	start, flips := time.Now(), 0
	// The flips go on for the window, and past it until a status write
	// lands (the manager's delay grows with every NodeAccess the suite
	// holds), for at most the timeout.
	during := func() int { return writes.matching("/nodeaccesses/paced-", "/status") - before }
	for next := start; time.Since(start) < window || (during() == 0 && time.Since(start) < timeout); next = next.Add(flipEvery) {
		time.Sleep(time.Until(next)) // the reports' rate, not a wait for an outcome
		report(nodes[0], flips%2 == 1)
		flips++
	}
	// Status was written while the reports kept changing, not only once
	// they stopped: a pacing that put the write off at every new report
	// would write nothing here. (How many writes fit in the window depends
	// on the machine and on the NodeAccess the suite holds, so only one is
	// required.)
	if during() == 0 {
		t.Errorf("no status write in %s of reports changing every %s", time.Since(start).Round(time.Millisecond), flipEvery)
	}
	// The last report leaves node 0 out of sync, so every NodeAccess must
	// be written once more; the writes are counted once all of them show it.
	report(nodes[0], false)
	flips++
	testenv.Eventually(t, timeout, "every NodeAccess showing one node out of sync", func() error {
		for _, name := range names {
			var na nav1.NodeAccess
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, &na); err != nil {
				return err
			}
			if na.Status.SelectedNodes != 2 || na.Status.NodesInSync != 1 {
				return fmt.Errorf("%s: %d of %d nodes in sync; want 1 of 2", name, na.Status.NodesInSync, na.Status.SelectedNodes)
			}
		}
		return nil
	})
	elapsed := time.Since(start)
	paced := writes.matching("/nodeaccesses/paced-", "/status") - before

	t.Logf("%d NodeAccess, %d report changes over %s: %d status writes (budget %d a second)", grants, flips, elapsed.Round(time.Millisecond), paced, controllers.DefaultStatusWritesPerSecond)
	if limit := int(elapsed.Seconds()*float64(controllers.DefaultStatusWritesPerSecond)) + grants; paced > limit {
		t.Errorf("%d status writes over %s; the budget allows %d", paced, elapsed, limit)
	}
	// Every NodeAccess changed status since before was taken: a check of
	// the count itself.
	if paced < grants {
		t.Errorf("%d status writes counted, yet all %d NodeAccess changed status: the count misses writes", paced, grants)
	}
	report(nodes[0], true)
	testenv.Eventually(t, timeout, "every NodeAccess in sync after the flips", allInSync)
}

package controllers_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
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

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
	total := map[int]int{}
	for _, n := range []int{5, 60} {
		w := writesForOneChange(t, n)
		total[n] = w.total
		t.Logf("%d nodes: %d manager writes for one NodeAccess change (%d to the rendered grant, %d to status)", n, w.total, w.rendered, w.status)
		// The agents' desired state is written once per change, whatever the nodes.
		if w.rendered != 1 {
			t.Errorf("%d nodes: the rendered grant was written %d times for one change", n, w.rendered)
		}
	}
	// Writes that grew with nodes would be 12 times as many at 60 as at 5.
	// Status writes are batched by time (StatusDelay), not by reports, so a
	// constant cost varies only with how the reports fall into batches.
	if total[60] > total[5]+4 || total[60] > 12 {
		t.Fatalf("manager writes grow with nodes: %v", total)
	}
}

type writeCounts struct{ total, rendered, status int }

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

	before := writeCounts{writes.matching("/"), writes.matching("/renderednodeaccesses/" + pool), writes.matching("/nodeaccesses/" + pool + "/status")}
	update(t, pool, func(na *nav1.NodeAccess) {
		na.Spec.Users[0].Keys = append(na.Spec.Users[0].Keys, nav1.AuthorizedKey{Key: newKey(t, "second").line})
	})
	reportAll(t, pool, nodes)
	testenv.Eventually(t, timeout, "in sync again", statusIs(pool, int32(n), int32(n), 2, nav1.AllNodesInSyncReason))
	time.Sleep(time.Second)
	return writeCounts{
		total:    writes.matching("/") - before.total,
		rendered: writes.matching("/renderednodeaccesses/"+pool) - before.rendered,
		status:   writes.matching("/nodeaccesses/"+pool+"/status") - before.status,
	}
}

// reportAll writes, for every node, a report saying it applied the current
// rendering of the grant, as each node's agent would.
func reportAll(t *testing.T, name string, nodes []string) {
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
	for _, node := range nodes {
		work <- node
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	for _, node := range nodes {
		t.Cleanup(func() { _ = k8sClient.Delete(ctx, &nav1.NodeAccessReport{ObjectMeta: metav1.ObjectMeta{Name: node}}) })
	}
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

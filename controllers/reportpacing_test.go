package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/nodeaccess/nodeaccess-operator/controllers"
	"github.com/nodeaccess/nodeaccess-operator/internal/nodefilter"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// publishedInterval reads the report interval of the filter's ConfigMap in ns.
func publishedInterval(ctx context.Context, ns string) (string, *corev1.ConfigMap, error) {
	cm := &corev1.ConfigMap{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: nodefilter.ConfigMapName}, cm); err != nil {
		return "", nil, err
	}
	return cm.Data[nodefilter.ReportIntervalField], cm, nil
}

// The report interval grows with the number of nodes, in steps, and
// shrinks once a step's worth of nodes is gone; it shares the ConfigMap
// with the filter's vocabulary, and neither write removes the other.
func TestReportIntervalFollowsTheNodeCount(t *testing.T) {
	ctx := context.Background()
	const ns = "pacing-test"
	must(t, client.IgnoreAlreadyExists(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})))
	// One write a second: a step of 5 s for every 5 nodes.
	const budget = 1
	r := &controllers.ReportPacingReconciler{Client: k8sClient, APIReader: k8sClient, Namespace: ns, WritesPerSecond: budget}
	reconcileOnce := func() {
		t.Helper()
		_, err := r.Reconcile(ctx, reconcile.Request{})
		must(t, err)
	}
	nodeCount := func() int {
		t.Helper()
		list := &corev1.NodeList{}
		must(t, k8sClient.List(ctx, list))
		return len(list.Items)
	}
	expect := func(want time.Duration) {
		t.Helper()
		got, _, err := publishedInterval(ctx, ns)
		must(t, err)
		if got != want.String() {
			t.Fatalf("with %d nodes the published interval is %q, want %s", nodeCount(), got, want)
		}
	}

	// The vocabulary's own write, as the manager makes it.
	vocabulary := func(keys string) {
		t.Helper()
		cm := &corev1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: nodefilter.ConfigMapName},
			Data:       map[string]string{nodefilter.KeysField: keys},
		}
		must(t, k8sClient.Patch(ctx, cm, client.Apply, client.FieldOwner(controllers.FieldOwner), client.ForceOwnership))
	}
	vocabulary("pool\n")
	t.Cleanup(func() {
		_ = k8sClient.Delete(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: nodefilter.ConfigMapName}})
	})

	base := nodeCount()
	reconcileOnce()
	start := nodefilter.ReportInterval(base, budget)
	expect(start)

	// Ten more nodes: longer.
	var added []*corev1.Node
	for i := range 10 {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pacing-%02d", i)}}
		must(t, k8sClient.Create(ctx, n))
		added = append(added, n)
	}
	t.Cleanup(func() {
		for _, n := range added {
			_ = k8sClient.Delete(context.Background(), n)
		}
	})
	reconcileOnce()
	grown := nodefilter.ReportInterval(base+10, budget)
	if grown <= start {
		t.Fatalf("test setup: %d and %d nodes ask for %s and %s", base, base+10, start, grown)
	}
	expect(grown)

	// The vocabulary's write keeps the interval, and the interval's the vocabulary.
	vocabulary("pool\nzone\n")
	expect(grown)
	_, cm, err := publishedInterval(ctx, ns)
	must(t, err)
	if got := nodefilter.ParseKeys(cm.Data[nodefilter.KeysField]); len(got) != 2 {
		t.Fatalf("vocabulary %v after the interval's write, want pool and zone", got)
	}

	// One node fewer is not a step fewer: nothing is written.
	must(t, k8sClient.Delete(ctx, added[9]))
	testenv.Eventually(t, timeout, "the node gone", func() error {
		if n := nodeCount(); n != base+9 {
			return fmt.Errorf("%d nodes", n)
		}
		return nil
	})
	rv := cm.ResourceVersion
	reconcileOnce()
	expect(grown)
	if _, cm, _ := publishedInterval(ctx, ns); cm.ResourceVersion != rv {
		t.Fatalf("the ConfigMap was written again (resource version %s, was %s) for a count within the step", cm.ResourceVersion, rv)
	}

	// Edited by someone else, or deleted (a withdrawn vocabulary): put back.
	cm.Data[nodefilter.ReportIntervalField] = "1s"
	must(t, k8sClient.Update(ctx, cm))
	reconcileOnce()
	expect(grown)
	must(t, k8sClient.Delete(ctx, cm))
	reconcileOnce()
	expect(grown)

	// All ten gone: shorter again.
	for _, n := range added[:9] {
		must(t, k8sClient.Delete(ctx, n))
	}
	testenv.Eventually(t, timeout, "the nodes gone", func() error {
		if n := nodeCount(); n != base {
			return fmt.Errorf("%d nodes", n)
		}
		return nil
	})
	reconcileOnce()
	expect(start)
}

// The manager publishes the interval in its namespace, and puts it back
// when the ConfigMap is deleted.
func TestManagerPublishesTheReportInterval(t *testing.T) {
	ctx := context.Background()
	var cm *corev1.ConfigMap
	testenv.Eventually(t, timeout, "the report interval published", func() error {
		got, c, err := publishedInterval(ctx, namespace)
		if err != nil {
			return err
		}
		if _, ok := nodefilter.ParseReportInterval(got); !ok {
			return fmt.Errorf("report interval %q", got)
		}
		cm = c
		return nil
	})
	uid := cm.UID
	must(t, k8sClient.Delete(ctx, cm))
	testenv.Eventually(t, timeout, "the report interval published again", func() error {
		got, c, err := publishedInterval(ctx, namespace)
		if err != nil {
			return err
		}
		if c.UID == uid {
			return fmt.Errorf("not deleted yet")
		}
		if _, ok := nodefilter.ParseReportInterval(got); !ok {
			return fmt.Errorf("report interval %q", got)
		}
		return nil
	})
}

package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/controllers"
	"github.com/nodeaccess/nodeaccess-operator/internal/nodefilter"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// filterEvent is one event of the rendered grants or of the vocabulary,
// at the resource version the API server gave it.
type filterEvent struct {
	rv    int64
	typ   watch.EventType
	grant *nav1.RenderedNodeAccess
	keys  []string // the vocabulary, when the event is the ConfigMap's
	at    time.Time
}

// filterEvents records, in resource version order, the events of the
// rendered grants and of the vocabulary ConfigMap from the current state on.
type filterEvents struct {
	events chan filterEvent
	seen   []filterEvent
}

func watchFilter(t *testing.T) *filterEvents {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: k8sClient.Scheme()})
	must(t, err)
	fromNow := &client.ListOptions{Namespace: namespace, Raw: &metav1.ListOptions{ResourceVersion: "0"}}
	grants, err := wc.Watch(ctx, &nav1.RenderedNodeAccessList{}, fromNow)
	must(t, err)
	vocab, err := wc.Watch(ctx, &corev1.ConfigMapList{}, fromNow)
	must(t, err)
	f := &filterEvents{events: make(chan filterEvent, 1024)}
	forward := func(w watch.Interface) {
		for ev := range w.ResultChan() {
			obj, ok := ev.Object.(client.Object)
			if !ok {
				continue
			}
			rv, _ := strconv.ParseInt(obj.GetResourceVersion(), 10, 64)
			e := filterEvent{rv: rv, typ: ev.Type, at: time.Now()}
			switch o := ev.Object.(type) {
			case *nav1.RenderedNodeAccess:
				e.grant = o
			case *corev1.ConfigMap:
				if o.Name != nodefilter.ConfigMapName {
					continue
				}
				e.keys = nodefilter.ParseKeys(o.Data[nodefilter.KeysField])
			}
			select {
			case f.events <- e:
			case <-ctx.Done():
				return
			}
		}
	}
	go forward(grants)
	go forward(vocab)
	t.Cleanup(grants.Stop)
	t.Cleanup(vocab.Stop)
	return f
}

// until collects events until cond holds of one, or fails the test.
func (f *filterEvents) until(t *testing.T, what string, cond func(filterEvent) bool) filterEvent {
	t.Helper()
	deadline := time.After(2 * timeout)
	for {
		select {
		case e := <-f.events:
			f.seen = append(f.seen, e)
			if cond(e) {
				return e
			}
		case <-deadline:
			t.Fatalf("no event: %s", what)
		}
	}
}

// grantsAt replays the recorded events up to resource version rv (both
// watches' events, in the order the API server stored them) and returns the
// rendered grants that existed then.
func (f *filterEvents) grantsAt(rv int64) map[string]*nav1.RenderedNodeAccess {
	events := slices.Clone(f.seen)
	slices.SortStableFunc(events, func(a, b filterEvent) int { return int(a.rv - b.rv) })
	out := map[string]*nav1.RenderedNodeAccess{}
	for _, e := range events {
		if e.rv > rv || e.grant == nil {
			continue
		}
		if e.typ == watch.Deleted {
			delete(out, e.grant.Name)
		} else {
			out[e.grant.Name] = e.grant
		}
	}
	return out
}

// isVocabulary matches an event of the ConfigMap: its deletion, or a
// version of it (added or modified) naming the key has.
func isVocabulary(deleted bool, has string) func(filterEvent) bool {
	return func(e filterEvent) bool {
		if e.grant != nil || (e.typ == watch.Deleted) != deleted {
			return false
		}
		return deleted || slices.Contains(e.keys, has)
	}
}

// The vocabulary follows the selectors, and it is published only after
// every rendered grant carries its labels: at the resource version of the
// ConfigMap that first names a new key, every rendered grant of that moment
// is labelled for it, so no agent watching by it ever misses a grant. A
// rendered grant written by an earlier manager (its apply drops the labels)
// makes the manager withdraw the vocabulary, label it after the switch
// grace, and publish again.
func TestVocabularyIsPublishedOnlyOnceEveryGrantCarriesIt(t *testing.T) {
	ctx := context.Background()
	events := watchFilter(t)
	a := nodeAccess("vocab-a", "vocab-a", newKey(t, "vocab-a").line)
	create(t, a)
	events.until(t, "the vocabulary naming pool", isVocabulary(false, "pool"))

	// A selector on a key no grant used before.
	b := nodeAccess("vocab-b", "vocab-b", newKey(t, "vocab-b").line)
	b.Spec.NodeSelector.MatchLabels["vocab-zone"] = "z1"
	create(t, b)
	published := events.until(t, "the vocabulary naming vocab-zone", isVocabulary(false, "vocab-zone"))
	grants := events.grantsAt(published.rv)
	if grants["vocab-a"] == nil {
		t.Fatalf("vocab-a's rendered grant not seen before resource version %d", published.rv)
	}
	for name, g := range grants {
		if !nodefilter.Labelled(g.Labels, &g.Spec.NodeSelector, published.keys) {
			t.Errorf("the vocabulary %v was published at resource version %d while rendered grant %s (resource version %s) lacked its labels: %v",
				published.keys, published.rv, name, g.ResourceVersion, g.Labels)
		}
	}
	testenv.Eventually(t, timeout, "vocab-b rendered and labelled", func() error {
		g := &nav1.RenderedNodeAccess{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "vocab-b"}, g); err != nil {
			return err
		}
		if got, want := g.Labels[nodefilter.LabelKey("vocab-zone")], nodefilter.LabelValue("z1"); got != want {
			return fmt.Errorf("vocab-zone label %q, want %q", got, want)
		}
		return nil
	})

	// An earlier manager writes vocab-a's rendered grant: the same field
	// manager's apply without the filter labels removes them.
	current := &nav1.RenderedNodeAccess{}
	must(t, k8sClient.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "vocab-a"}, current))
	old := &nav1.RenderedNodeAccess{
		TypeMeta: metav1.TypeMeta{APIVersion: nav1.GroupVersion.String(), Kind: "RenderedNodeAccess"},
		ObjectMeta: metav1.ObjectMeta{
			Name: current.Name, Namespace: namespace, OwnerReferences: current.OwnerReferences,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "nodeaccess-operator"},
		},
		Spec: current.Spec,
	}
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(old)
	must(t, err)
	u := &unstructured.Unstructured{Object: raw}
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "status")
	must(t, k8sClient.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(controllers.FieldOwner), client.ForceOwnership))
	unmarked := events.until(t, "vocab-a written without labels", func(e filterEvent) bool {
		return e.grant != nil && e.grant.Name == "vocab-a" && e.grant.Labels[nodefilter.Marker] == ""
	})
	withdrawn := events.until(t, "the vocabulary withdrawn", isVocabulary(true, ""))
	relabelled := events.until(t, "vocab-a labelled again", func(e filterEvent) bool {
		return e.grant != nil && e.grant.Name == "vocab-a" && nodefilter.Labelled(e.grant.Labels, &e.grant.Spec.NodeSelector, published.keys)
	})
	republished := events.until(t, "the vocabulary published again", isVocabulary(false, "vocab-zone"))
	if !(unmarked.rv < withdrawn.rv && withdrawn.rv < relabelled.rv && relabelled.rv < republished.rv) {
		t.Fatalf("out of order: unlabelled at %d, withdrawn at %d, labelled at %d, published at %d", unmarked.rv, withdrawn.rv, relabelled.rv, republished.rv)
	}
	if gap := relabelled.at.Sub(withdrawn.at); gap < filterSwitchGrace-100*time.Millisecond {
		t.Fatalf("labelled %s after the vocabulary was withdrawn, before agents had the switch grace of %s", gap, filterSwitchGrace)
	}

	// Someone edits the vocabulary to a key no grant carries (agents would
	// miss every grant): the manager puts back what it published.
	cm := &corev1.ConfigMap{}
	must(t, k8sClient.Get(ctx, client.ObjectKey{Namespace: namespace, Name: nodefilter.ConfigMapName}, cm))
	cm.Data[nodefilter.KeysField] = nodefilter.FormatKeys([]string{"vocab-bogus"})
	must(t, k8sClient.Update(ctx, cm))
	events.until(t, "the edited vocabulary", isVocabulary(false, "vocab-bogus"))
	restored := events.until(t, "the vocabulary put back", func(e filterEvent) bool {
		return e.grant == nil && e.typ != watch.Deleted && !slices.Contains(e.keys, "vocab-bogus")
	})
	if !slices.Equal(restored.keys, republished.keys) {
		t.Fatalf("put back as %v, want %v", restored.keys, republished.keys)
	}
}

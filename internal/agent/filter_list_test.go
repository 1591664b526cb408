package agent

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// A grant moving from one watch to the other (a 0.1.0 manager's write drops
// its labels) can sit in both stores until the first one's deletion
// arrives: a pass sees only its newest version, never both.
func TestAGrantInBothWatchesCountsOnceAtItsNewestVersion(t *testing.T) {
	version := func(rv string, suspend bool) *nav1.RenderedNodeAccess {
		return &nav1.RenderedNodeAccess{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "team", ResourceVersion: rv},
			Spec:       nav1.RenderedNodeAccessSpec{NodeAccessName: "team", Suspend: suspend},
		}
	}
	filtered, legacy := cache.NewStore(cache.MetaNamespaceKeyFunc), cache.NewStore(cache.MetaNamespaceKeyFunc)
	if err := filtered.Add(version("120", false)); err != nil {
		t.Fatal(err)
	}
	if err := legacy.Add(version("97", true)); err != nil {
		t.Fatal(err)
	}
	g := &grantWatches{active: []*grantWatch{{store: legacy}, {store: filtered}}}
	got := g.list()
	if len(got) != 1 || got[0].ResourceVersion != "120" || got[0].Spec.Suspend {
		t.Fatalf("list = %+v, want only the version at 120", got)
	}
}

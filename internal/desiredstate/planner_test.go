package desiredstate

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// A Planner's plan is, at every step, the plan ForNode computes from
// scratch: a new resource version, the clock passing an expiry, the node's
// labels, the sshd's expiry option and a grant without a resource version
// all reach it, and a grant no longer rendered is forgotten.
func TestPlannerAgreesWithForNode(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(d)} }
	grant := func(name, rv string, pool string, keys ...nav1.RenderedKey) nav1.RenderedNodeAccess {
		r := nav1.RenderedNodeAccess{Spec: nav1.RenderedNodeAccessSpec{NodeAccessName: name, NodeAccessUID: "uid-" + name,
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pool": pool}},
			Users:        []nav1.RenderedUser{{Name: "alice", Keys: keys}, {Name: "deploy", Keys: keys[:1]}}}}
		r.Name, r.UID, r.ResourceVersion = name, types.UID("obj-"+name), rv
		return r
	}
	key := func(data string, expires *metav1.Time) nav1.RenderedKey {
		return nav1.RenderedKey{Type: "ssh-ed25519", Data: data, Comment: data, ExpiresAt: expires}
	}
	pool := func(p string) map[string]string { return map[string]string{"pool": p} }

	a1 := grant("a", "1", "a", key("K1", nil), key("K2", at(10*time.Second)))
	b1 := grant("b", "1", "a", key("K3", nil))
	bad := grant("bad", "1", "a", key("K4", nil))
	bad.Spec.Users[0].Keys[0].Options = &nav1.KeyOptions{Command: `sh"`}
	a2 := grant("a", "2", "a", key("K1", nil), key("K5", nil))
	noRV := grant("c", "", "a", key("K6", nil))
	noRVChanged := grant("c", "", "a", key("K7", nil))
	b2 := grant("b", "2", "b", key("K3", nil))
	// Deleted and created again: a new object, whose first version has
	// the number of the old one's.
	a1again := grant("a", "1", "a", key("K8", nil))
	a1again.UID = "obj-a-again"
	// A restored etcd giving a resource version again, to new content.
	a1restored := grant("a", "1", "a", key("K9", nil))
	a1restored.Spec.Hash, a1restored.Spec.Generation = "restored", 5

	steps := []struct {
		name     string
		labels   map[string]string
		rendered []nav1.RenderedNodeAccess
		now      time.Time
		opts     Options
	}{
		{"first plan", pool("a"), []nav1.RenderedNodeAccess{a1, b1, bad}, now, Options{}},
		{"nothing changed", pool("a"), []nav1.RenderedNodeAccess{a1, b1, bad}, now, Options{}},
		{"a key expired", pool("a"), []nav1.RenderedNodeAccess{a1, b1, bad}, now.Add(11 * time.Second), Options{}},
		{"a new version", pool("a"), []nav1.RenderedNodeAccess{a2, b1, bad}, now.Add(11 * time.Second), Options{}},
		{"sshd enforces expiry", pool("a"), []nav1.RenderedNodeAccess{a1, b1}, now, Options{SSHDExpiry: true}},
		{"and no longer", pool("a"), []nav1.RenderedNodeAccess{a1, b1}, now, Options{}},
		{"relabelled", pool("b"), []nav1.RenderedNodeAccess{a1, b1}, now, Options{}},
		{"a grant without a resource version", pool("a"), []nav1.RenderedNodeAccess{a1, noRV}, now, Options{}},
		{"its content changed", pool("a"), []nav1.RenderedNodeAccess{a1, noRVChanged}, now, Options{}},
		{"moved to another pool", pool("a"), []nav1.RenderedNodeAccess{a1, b2}, now, Options{}},
		{"deleted", pool("a"), []nav1.RenderedNodeAccess{b2}, now, Options{}},
		{"created again", pool("a"), []nav1.RenderedNodeAccess{a1again, b2}, now, Options{}},
		{"the old one, once more", pool("a"), []nav1.RenderedNodeAccess{a1, b2}, now, Options{}},
		{"its resource version given again to new content", pool("a"), []nav1.RenderedNodeAccess{a1restored, b2}, now, Options{}},
	}
	var p Planner
	for _, s := range steps {
		got := p.ForNode(s.labels, s.rendered, s.now, s.opts)
		want := ForNode(s.labels, s.rendered, s.now, s.opts)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: the planner's plan\n%+v\nForNode's\n%+v", s.name, got, want)
		}
		if len(p.compiled) > len(s.rendered) {
			t.Fatalf("%s: the planner remembers %d grants, %d are rendered", s.name, len(p.compiled), len(s.rendered))
		}
	}
	// A grant that does not select the node costs its selector alone.
	if c := p.compiled[b2.UID]; c == nil || c.built || c.users != nil {
		t.Fatalf("the planner built the key lines of a grant that selects another pool: %+v", c)
	}
	// The steps saw what a stale memory would have missed.
	if got := len(ForNode(pool("a"), []nav1.RenderedNodeAccess{a1}, now.Add(11*time.Second), Options{}).Accounts["alice"][0].Keys); got != 1 {
		t.Fatalf("after its expiry, a1 gives alice %d keys, want 1", got)
	}
	if g := ForNode(pool("a"), []nav1.RenderedNodeAccess{bad}, now, Options{}).Grants[0]; g.Err == nil || g.Active {
		t.Fatalf("a grant with bad options is active: %+v", g)
	}
}

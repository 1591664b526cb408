package render

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/keypolicy"
)

// overLimit returns a NodeAccess whose inline keys are keep plus enough
// generated keys (from one Secret per account) to pass MaxKeys, and those
// sources.
func overLimit(t *testing.T, keep []string) (*nav1.NodeAccess, map[SourceRef]Source) {
	t.Helper()
	na := &nav1.NodeAccess{ObjectMeta: metav1.ObjectMeta{Name: "big", UID: "uid-big", Generation: 2}, Spec: nav1.NodeAccessSpec{
		NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pool": "a"}},
	}}
	sources := map[SourceRef]Source{}
	alice := nav1.UserAccess{Name: "alice"}
	for _, k := range keep {
		alice.Keys = append(alice.Keys, nav1.AuthorizedKey{Key: k})
	}
	na.Spec.Users = append(na.Spec.Users, alice)
	for u := 0; u < 5; u++ {
		ref := SourceRef{SourceSecret, "ns", fmt.Sprintf("bulk-%d", u), "k"}
		var lines strings.Builder
		for i := 0; i < 900; i++ {
			l, _ := ed(t, "bulk")
			lines.WriteString(l + "\n")
		}
		sources[ref] = Source{Content: lines.String()}
		na.Spec.Users = append(na.Spec.Users, nav1.UserAccess{Name: fmt.Sprintf("bulk%d", u),
			KeysFrom: []nav1.KeySource{{SecretKeyRef: &nav1.ObjectKeySelector{Namespace: ref.Namespace, Name: ref.Name, Key: ref.Key}}}})
	}
	return na, sources
}

func blobs(spec *nav1.RenderedNodeAccessSpec, user string) []string {
	var out []string
	for _, u := range spec.Users {
		if u.Name == user {
			for _, k := range u.Keys {
				out = append(out, k.Data)
			}
		}
	}
	return out
}

// A change that removes access always reaches the nodes, however large the
// rest of the spec: suspend, an earlier expiry, a removed key, a narrower
// selector. Nothing the last accepted version did not grant is added.
func TestRemovalsRenderWhateverTheSize(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	opts := Options{Policy: keypolicy.DefaultPolicy()}
	k1, b1 := ed(t, "one")
	k2, b2 := ed(t, "two")
	k3, _ := ed(t, "three")
	accepted := NodeAccess(&nav1.NodeAccess{ObjectMeta: metav1.ObjectMeta{Name: "big", UID: "uid-big", Generation: 1}, Spec: nav1.NodeAccessSpec{
		NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pool": "a"}},
		Users:        []nav1.UserAccess{{Name: "alice", Keys: []nav1.AuthorizedKey{{Key: k1}, {Key: k2}}}},
	}}, nil, nil, opts, now)
	last := &accepted.Spec

	// Suspend: renders whole, no key, never "too large".
	na, sources := overLimit(t, []string{k1, k2})
	na.Spec.Suspend = true
	if res := NodeAccess(na, sources, last, opts, now); res.TooLarge != nil || !res.Spec.Suspend || len(blobs(&res.Spec, "alice")) != 0 {
		t.Fatalf("suspending an oversized grant: tooLarge=%v suspend=%v alice=%v", res.TooLarge, res.Spec.Suspend, blobs(&res.Spec, "alice"))
	}

	// Over the limit with one key removed and one added: only k1 remains.
	na, sources = overLimit(t, []string{k1, k3})
	res := NodeAccess(na, sources, last, opts, now)
	if res.TooLarge == nil || !res.Narrowed {
		t.Fatalf("want the grant over the limit, narrowed: %v", res.TooLarge)
	}
	if got := blobs(&res.Spec, "alice"); len(got) != 1 || got[0] != b1 {
		t.Fatalf("alice keeps %v, want only %s (k2 removed, k3 not added)", got, b1)
	}
	for u := 0; u < 5; u++ {
		if got := blobs(&res.Spec, fmt.Sprintf("bulk%d", u)); len(got) != 0 {
			t.Fatalf("a new account got %d keys from a refused update", len(got))
		}
	}
	if res.Spec.Hash == "" || res.Spec.Hash == last.Hash {
		t.Fatal("the narrowed grant must carry its own hash")
	}

	// An earlier expiry and a narrower selector, with the same keys.
	na, sources = overLimit(t, []string{k1, k2})
	soon := metav1.NewTime(now.Add(time.Hour))
	na.Spec.ExpiresAt = &soon
	na.Spec.NodeSelector.MatchLabels["zone"] = "z1"
	res = NodeAccess(na, sources, last, opts, now)
	if res.Spec.ExpiresAt == nil || !res.Spec.ExpiresAt.Equal(&soon) {
		t.Errorf("expiry %v, want the new earlier one", res.Spec.ExpiresAt)
	}
	if got := blobs(&res.Spec, "alice"); strings.Join(got, ",") != b1+","+b2 {
		t.Errorf("alice keeps %v, want both keys", got)
	}
	sel, err := metav1.LabelSelectorAsSelector(&res.Spec.NodeSelector)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Matches(labels.Set{"pool": "a"}) || !sel.Matches(labels.Set{"pool": "a", "zone": "z1"}) {
		t.Errorf("selector %s must select only what both versions select", sel)
	}
}

func TestNarrow(t *testing.T) {
	at := func(h int) *metav1.Time { return &metav1.Time{Time: time.Date(2030, 1, 1, h, 0, 0, 0, time.UTC)} }
	key := func(data string, exp *metav1.Time, noPTY bool) nav1.RenderedKey {
		k := nav1.RenderedKey{Type: "ssh-ed25519", Data: data, ExpiresAt: exp}
		if noPTY {
			k.Options = &nav1.KeyOptions{NoPTY: true}
		}
		return k
	}
	last := &nav1.RenderedNodeAccessSpec{
		NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pool": "a"}},
		ExpiresAt:    at(10),
		Users: []nav1.RenderedUser{
			{Name: "alice", Keys: []nav1.RenderedKey{key("A", nil, false), key("B", at(5), false), key("C", nil, false)}},
			{Name: "gone", Keys: []nav1.RenderedKey{key("A", nil, false)}},
		},
	}
	desired := &nav1.RenderedNodeAccessSpec{
		NodeAccessName: "n", NodeAccessUID: "u", Generation: 9,
		NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pool": "b"}},
		Users: []nav1.RenderedUser{
			{Name: "alice", Keys: []nav1.RenderedKey{key("A", at(3), false), key("B", nil, false), key("C", nil, true), key("D", nil, false)}},
			{Name: "new", Keys: []nav1.RenderedKey{key("A", nil, false)}},
		},
	}
	got := Narrow(last, desired)
	if got.NodeAccessName != "n" || got.Generation != 9 || !got.ExpiresAt.Equal(at(10)) {
		t.Errorf("identity or expiry: %+v", got)
	}
	sel, _ := metav1.LabelSelectorAsSelector(&got.NodeSelector)
	if sel.Matches(labels.Set{"pool": "a"}) || sel.Matches(labels.Set{"pool": "b"}) {
		t.Errorf("pool=a AND pool=b selects nothing, got %s", sel)
	}
	var lines []string
	for _, u := range got.Users {
		var ks []string
		for _, k := range u.Keys {
			exp := "never"
			if k.ExpiresAt != nil {
				exp = k.ExpiresAt.UTC().Format("15")
			}
			ks = append(ks, k.Data+"@"+exp)
		}
		lines = append(lines, u.Name+":"+strings.Join(ks, ","))
	}
	// A keeps the earlier expiry (3), B keeps last's (5), C changed options
	// (dropped), D is new (not added); "new" gets no key; "gone" is dropped.
	if want := "alice:A@03,B@05 new:"; strings.Join(lines, " ") != want {
		t.Errorf("narrowed users %q, want %q", strings.Join(lines, " "), want)
	}
	if none := Narrow(nil, desired); len(blobs(&none, "alice")) != 0 || len(none.Users) != 2 {
		t.Errorf("with nothing accepted before, nothing is granted: %+v", none.Users)
	}
}

func TestLedger(t *testing.T) {
	l := NewLedger(ClusterLimits{MaxGrants: 2, MaxBytes: 1000})
	fp := func(bytes int) Footprint { return Footprint{Bytes: bytes} }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(l.Check("a", fp(400)))
	l.Set("a", fp(400))
	must(l.Check("b", fp(400)))
	l.Set("b", fp(400))
	if err := l.Check("c", fp(10)); err == nil || !strings.Contains(err.Error(), "grants") {
		t.Fatalf("a third grant must be refused: %v", err)
	}
	if err := l.Check("a", fp(700)); err == nil || !strings.Contains(err.Error(), "rendered bytes") {
		t.Fatalf("growing past the total must be refused: %v", err)
	}
	must(l.Check("a", fp(300))) // shrinking is always fine
	l.Remove("a")
	must(l.Check("c", fp(500)))
}

// The per-node bounds count, for each node, only the grants that reach it:
// grants on other pools do not take its room, a grant every node receives
// counts everywhere, and an account's bytes add up over the grants that
// select the node, not over the cluster.
func TestLedgerPerNode(t *testing.T) {
	l := NewLedger(ClusterLimits{MaxGrants: 100, MaxBytes: 1 << 20, MaxNodeGrants: 2, MaxNodeBytes: 1000, MaxAccountBytes: 300})
	pool := func(p string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"pool": p}}
	}
	fp := func(sel *metav1.LabelSelector, bytes int, accts map[string]int) Footprint {
		return Footprint{Bytes: bytes, Accounts: accts, Selector: sel}
	}
	var nodes []map[string]string
	for i := range 10 {
		nodes = append(nodes, map[string]string{"pool": fmt.Sprint("p", i%5), "kubernetes.io/hostname": fmt.Sprint("n", i)})
	}
	keys := []string{"pool"}
	add := func(name string, f Footprint) error {
		if err := l.CheckNodes(name, f, nodes, keys); err != nil {
			return err
		}
		l.Set(name, f)
		return nil
	}
	// 300 bytes of ec2-user on each of five pools: 1,500 over the cluster, 300 a node.
	for i := range 5 {
		if err := add(fmt.Sprint("pool-", i), fp(pool(fmt.Sprint("p", i)), 400, map[string]int{"ec2-user": 300})); err != nil {
			t.Fatalf("a grant on its own pool: %v", err)
		}
	}
	err := add("more-p0", fp(pool("p0"), 100, map[string]int{"ec2-user": 10}))
	if err == nil || !strings.Contains(err.Error(), "account ec2-user") || !strings.Contains(err.Error(), "2 nodes") {
		t.Fatalf("a second grant of ec2-user on pool p0 must be refused for its 2 nodes: %v", err)
	}
	// Every node receives a grant without a vocabulary key: two grants a node.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	every := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pool", Operator: metav1.LabelSelectorOpExists}}}
	must(add("every", fp(every, 100, map[string]int{"core": 10})))
	err = add("every-2", fp(every, 100, nil))
	if err == nil || !strings.Contains(err.Error(), "3 grants") || !strings.Contains(err.Error(), "10 nodes") {
		t.Fatalf("a third grant on every node must be refused: %v", err)
	}
	// Bytes a node receives.
	err = add("pool-1", fp(pool("p1"), 1000, map[string]int{"ec2-user": 300}))
	if err == nil || !strings.Contains(err.Error(), "rendered bytes") {
		t.Fatalf("growing pool-1 past its nodes' bytes must be refused: %v", err)
	}
	// Unchanged or smaller, a grant is accepted whatever the others.
	must(l.CheckNodes("pool-1", fp(pool("p1"), 400, map[string]int{"ec2-user": 300}), nodes, keys))
	must(l.CheckNodes("pool-1", fp(pool("p1"), 300, map[string]int{"ec2-user": 200}), nodes, keys))
	// A grant that selects no node costs no node anything.
	must(add("nowhere", fp(pool("none"), 900, map[string]int{"ec2-user": 300})))
}

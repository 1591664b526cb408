package agent

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/authorizedkeys"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// passSource is a source whose Node and rendered grants a benchmark sets.
type passSource struct {
	meta     *nodeMeta
	grants   []nav1.RenderedNodeAccess
	interval time.Duration
}

func (s *passSource) node(context.Context) (*nodeMeta, error) { return s.meta, nil }
func (s *passSource) rendered(context.Context) ([]nav1.RenderedNodeAccess, error) {
	return s.grants, nil
}
func (s *passSource) reportInterval() (time.Duration, bool) { return s.interval, s.interval > 0 }

// benchKey is a distinct, well-formed ed25519 public key blob for n.
func benchKey(n uint64) string {
	blob := []byte{0, 0, 0, 11}
	blob = append(blob, "ssh-ed25519"...)
	blob = append(blob, 0, 0, 0, 32)
	var k [32]byte
	binary.BigEndian.PutUint64(k[:], n)
	return base64.StdEncoding.EncodeToString(append(blob, k[:]...))
}

// BenchmarkPassUnderChurn is one agent pass of the churn scenario of
// make bench: the node carries 10 grants of 20 keys each, all for one
// account, and each pass follows a change that rotates one key of one of
// them. The report write succeeds at once; the published report interval
// (20 s, as at 1,000 nodes) holds the changed report back, as under churn.
func BenchmarkPassUnderChurn(b *testing.B) {
	h := newReuseHost(b)
	src := &passSource{meta: &nodeMeta{}, interval: 20 * time.Second}
	src.meta.Name, src.meta.UID = "node-0", "uid-node-0"
	src.meta.Labels = map[string]string{"pool": "p0"}
	next := uint64(0)
	for g := range 10 {
		name := fmt.Sprintf("churn-%04d", g)
		r := &nav1.RenderedNodeAccess{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "nodeaccess-system"},
			Spec: nav1.RenderedNodeAccessSpec{NodeAccessName: name, NodeAccessUID: "uid-" + name, Generation: 1,
				NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pool": "p0"}}}}
		u := nav1.RenderedUser{Name: "alice"}
		for k := range 20 {
			next++
			u.Keys = append(u.Keys, nav1.RenderedKey{Type: "ssh-ed25519", Data: benchKey(next), Comment: fmt.Sprintf("%s-%d", name, k)})
		}
		r.Spec.Users = []nav1.RenderedUser{u}
		hash, err := desiredstate.Hash(&r.Spec)
		if err != nil {
			b.Fatal(err)
		}
		r.Spec.Hash, r.UID, r.ResourceVersion = hash, types.UID("uid-"+r.Name), "1"
		src.grants = append(src.grants, *r)
	}
	a, err := newAgent(Config{NodeName: "node-0", HostRoot: h.Root, Resync: time.Hour, Heartbeat: time.Hour, ReportDelay: time.Second}, src, nil)
	if err != nil {
		b.Fatal(err)
	}
	a.seeded = true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.reports.run(ctx, func(context.Context, reportJob) (bool, error) { return true, nil }, func() {})
	if _, err := a.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		// The change: a new copy of one grant (as the informer's cache
		// holds a new object), one key rotated, its generation, hash and
		// resource version new.
		g := i % len(src.grants)
		grants := append([]nav1.RenderedNodeAccess(nil), src.grants...)
		r := grants[g].DeepCopy()
		next++
		r.Spec.Users[0].Keys[i%20].Data = benchKey(next)
		r.Spec.Generation++
		r.ResourceVersion = strconv.FormatUint(next, 10)
		if r.Spec.Hash, err = desiredstate.Hash(&r.Spec); err != nil {
			b.Fatal(err)
		}
		grants[g] = *r
		src.grants = grants
		i++
		if _, err := a.Sync(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if got := strings.Count(h.Read("alice"), " "+authorizedkeys.AttributionPrefix); got != 200 {
		b.Fatalf("alice's file holds %d managed keys, want 200", got)
	}
}

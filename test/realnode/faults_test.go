package realnode

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/authorizedkeys"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// manyKeys is how many keys a change in the fault tests replaces at once.
const manyKeys = 200

// keySet is a set of alice's keys: one whose private half the test holds,
// to log in with, and many more.
type keySet struct {
	login string // the private key's path
	pubs  []string
	blobs []string // sorted
}

func newKeySet(t *testing.T, name string) keySet {
	t.Helper()
	login, pub := newKey(t, "alice@"+name)
	ks := keySet{login: login, pubs: []string{pub}}
	for i := range manyKeys - 1 {
		k, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		sk, err := ssh.NewPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		ks.pubs = append(ks.pubs, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sk)))+fmt.Sprintf(" %s-%d", name, i))
	}
	for _, p := range ks.pubs {
		ks.blobs = append(ks.blobs, blobOf(p))
	}
	slices.Sort(ks.blobs)
	return ks
}

func (ks keySet) access() nav1.UserAccess {
	a := nav1.UserAccess{Name: alice.Name}
	for _, p := range ks.pubs {
		a.Keys = append(a.Keys, nav1.AuthorizedKey{Key: p})
	}
	return a
}

// sampler reads alice's authorized_keys back to back while a fault
// happens, and keeps the first sample that is not a whole file holding
// exactly one of the allowed key sets after alice's own lines.
type sampler struct {
	allowed [][]string
	stopc   chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	counts  []int // samples per allowed set
	// firstLast is when a sample first held the last allowed set.
	firstLast time.Time
	bad       error
}

// check is one sample's verdict: the index of the allowed set it holds.
func (s *sampler) check(data []byte) (int, error) {
	blobs, err := splitManaged(data)
	if err != nil {
		return -1, err
	}
	for i, set := range s.allowed {
		if slices.Equal(blobs, set) {
			return i, nil
		}
	}
	return -1, fmt.Errorf("a managed block of %d keys that is neither the old nor the new set", len(blobs))
}

func startSampler(allowed ...[]string) *sampler {
	s := &sampler{allowed: allowed, stopc: make(chan struct{}), done: make(chan struct{}), counts: make([]int, len(allowed))}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stopc:
				return
			default:
			}
			data, err := os.ReadFile(aliceFile)
			i := -1
			if err == nil {
				i, err = s.check(data)
			}
			s.mu.Lock()
			if err != nil && s.bad == nil {
				s.bad = fmt.Errorf("at %s: %w", time.Now().Format(time.StampMilli), err)
			}
			if i >= 0 {
				s.counts[i]++
			}
			if i == len(s.allowed)-1 && s.firstLast.IsZero() {
				s.firstLast = time.Now()
			}
			s.mu.Unlock()
			time.Sleep(time.Millisecond)
		}
	}()
	return s
}

// stop ends the sampling and returns the samples per set and the first
// bad one.
func (s *sampler) stop() ([]int, error) {
	close(s.stopc)
	<-s.done
	return s.counts, s.bad
}

// The sampler the fault tests rely on catches a torn write: it accepts
// the file the agent writes for either key set, and refuses every
// truncation of it and a block mixing the two sets.
func TestSamplerCatchesTornFiles(t *testing.T) {
	a, b := newKeySet(t, "a"), newKeySet(t, "b")
	render := func(ks keySet) []byte {
		section := authorizedkeys.Section{Owner: "faults", UID: "0f3c5a2e-1111-4222-8333-944455556666"}
		for _, p := range ks.pubs {
			f := strings.Fields(p)
			section.Keys = append(section.Keys, authorizedkeys.Key{Type: f[0], Base64: f[1], Comment: f[2]})
		}
		data, err := authorizedkeys.Render(handLines, []authorizedkeys.Section{section})
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	s := &sampler{allowed: [][]string{a.blobs, b.blobs}}
	full := render(a)
	if i, err := s.check(full); i != 0 || err != nil {
		t.Fatalf("the agent's file for the old set: %d, %v", i, err)
	}
	if i, err := s.check(handLines); err == nil {
		t.Fatalf("alice's own lines alone taken for set %d", i)
	}
	for n := range len(full) {
		if i, err := s.check(full[:n]); err == nil {
			t.Fatalf("a file torn at byte %d of %d taken for set %d", n, len(full), i)
		}
	}
	mixed := append([]string(nil), a.pubs[:manyKeys/2]...)
	if i, err := s.check(render(keySet{pubs: append(mixed, b.pubs[manyKeys/2:]...)})); err == nil {
		t.Fatalf("a block mixing both sets taken for set %d", i)
	}
}

// A change of many keys converges, with no torn file at any instant, when
// the agent pod is deleted while it writes, when the kubelet restarts,
// and when containerd restarts: sampled back to back, alice's file is
// always whole, her own lines unchanged, holding the old keys or the new
// ones; then the report says the node is in sync and the logins follow
// the new set. The kubelet and containerd restarts leave the agent's
// container running (same container, no restart), as on a real node.
func TestFaultsDuringAChangeLeaveNoTornFile(t *testing.T) {
	ctx := context.Background()
	sets := []keySet{newKeySet(t, "set0"), newKeySet(t, "set1")}
	create(t, grant("faults", sets[0].access()))
	testenv.Eventually(t, timeout, "faults in sync", inSync("faults"))
	if err := login(alice.Name, sets[0].login); err != nil {
		t.Fatal(err)
	}
	for i, fault := range []struct {
		name string
		// keepsContainer: the agent's container must survive the fault.
		keepsContainer bool
		inject         func(t *testing.T)
	}{
		{name: "agent pod deleted", inject: func(t *testing.T) {
			pod := agentPod(t)
			if err := k8s.Delete(ctx, pod); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "kubelet restarted", keepsContainer: true, inject: func(t *testing.T) {
			node.StopKubelet()
			if err := node.StartKubelet(ctx); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "containerd restarted", keepsContainer: true, inject: func(t *testing.T) {
			node.StopContainerd()
			if err := node.StartContainerd(ctx); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		from, to := sets[i%2], sets[(i+1)%2]
		_, container := agentRestarts(t)
		s := startSampler(from.blobs, to.blobs)
		na := &nav1.NodeAccess{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: "faults"}, na); err != nil {
			t.Fatal(err)
		}
		na.Spec.Users = []nav1.UserAccess{to.access()}
		start := time.Now()
		if err := k8s.Update(ctx, na); err != nil {
			t.Fatal(err)
		}
		fault.inject(t)
		injected := time.Since(start)
		testenv.Eventually(t, timeout, "in sync after the "+fault.name, inSync("faults"))
		took := waitLogin(t, alice.Name, to.login, start, timeout)
		if err := login(alice.Name, from.login); !errors.Is(err, errRefused) {
			t.Errorf("after the %s, the old set's key: %v, want refused", fault.name, err)
		}
		counts, bad := s.stop()
		// Whether the agent wrote the new keys before the fault or after
		// it (a new agent pod, or the same agent once the node's programs
		// were back) is what the fault interleaved with.
		t.Logf("%s %s after the update; the new keys in the file %s after it, logging in after %s; %d samples of the old file, %d of the new",
			fault.name, injected.Round(time.Millisecond), s.firstLast.Sub(start).Round(time.Millisecond), took.Round(time.Millisecond), counts[0], counts[1])
		if bad != nil {
			t.Errorf("during the %s: %v", fault.name, bad)
		}
		if counts[1] == 0 || counts[0]+counts[1] < 100 {
			t.Errorf("during the %s: %v samples; the sampling proves nothing", fault.name, counts)
		}
		if fault.keepsContainer {
			if _, after := agentRestarts(t); after != container {
				t.Errorf("the %s replaced the agent's container %s by %s", fault.name, container, after)
			}
		}
		checkHandWritten(t)
	}
	rep, err := report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := findCondition(rep.Status.Conditions, "Ready"); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("the node's report is not Ready after the faults: %+v", rep.Status.Conditions)
	}
}

func findCondition(cs []metav1.Condition, typ string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

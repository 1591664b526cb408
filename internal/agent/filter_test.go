package agent_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/agent"
	"github.com/nodeaccess/nodeaccess-operator/internal/nodefilter"
)

// received records every response body the agent read from the API server.
type received struct {
	mu     sync.Mutex
	bodies bytes.Buffer
}

func (r *received) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		if err == nil {
			resp.Body = &teeBody{ReadCloser: resp.Body, r: r}
		}
		return resp, err
	})
}

func (r *received) contains(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Contains(r.bodies.Bytes(), []byte(s))
}

type teeBody struct {
	io.ReadCloser
	r *received
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.r.mu.Lock()
	b.r.bodies.Write(p[:n])
	b.r.mu.Unlock()
	return n, err
}

func newKeyData(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(nil)
	must(t, err)
	sp, err := ssh.NewPublicKey(pub)
	must(t, err)
	return base64.StdEncoding.EncodeToString(sp.Marshal())
}

// labelled is g as the manager writes it under the vocabulary keys.
func labelled(g *nav1.RenderedNodeAccess, keys []string) *nav1.RenderedNodeAccess {
	g.Labels = nodefilter.Labels(&g.Spec.NodeSelector, keys)
	return g
}

func publishVocabulary(t *testing.T, keys ...string) {
	t.Helper()
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: nodefilter.ConfigMapName},
		Data:       map[string]string{nodefilter.KeysField: nodefilter.FormatKeys(keys)},
	}
	must(t, k8sClient.Create(context.Background(), cm))
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), cm) })
}

// The API server, not the agent, leaves out the grants for other pools:
// the agent never receives one, while it receives every grant that may
// select its node (labelled for its pool, for any pool, or written without
// labels by an earlier manager). Relabelled, the node drops its old pool's
// grant and takes the new one's, and a grant that selects it before and
// after is in its file at every moment of the switch.
func TestAgentReceivesOnlyTheGrantsThatMaySelectItsNode(t *testing.T) {
	ctx := context.Background()
	keys := []string{"filter-pool"}
	publishVocabulary(t, keys...)
	poolA, poolB, everyPool, legacy := newKeyData(t), newKeyData(t), newKeyData(t), newKeyData(t)
	user := func(data string) nav1.RenderedUser {
		return nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{key(data, "alice")}}
	}
	grants := []*nav1.RenderedNodeAccess{
		labelled(grant("filter-pool-a", map[string]string{"filter-test": "yes", "filter-pool": "a"}, user(poolA)), keys),
		labelled(grant("filter-pool-b", map[string]string{"filter-test": "yes", "filter-pool": "b"}, user(poolB)), keys),
		labelled(grant("filter-every-pool", map[string]string{"filter-test": "yes"}, user(everyPool)), keys),
		grant("filter-unlabelled", map[string]string{"filter-test": "yes"}, user(legacy)),
	}
	for _, g := range grants {
		t.Cleanup(func() { remove(t, g.Name) })
		apply(t, g)
	}

	h := newHost(t)
	createNode(t, "node-filter", map[string]string{"filter-test": "yes", "filter-pool": "a"})
	var got received
	cfg := rest.CopyConfig(env.Config)
	cfg.WrapTransport = got.wrap
	runAgentOn(t, cfg, agent.Config{
		NodeName: "node-filter", Namespace: namespace, HostRoot: h.Root,
		Resync: time.Minute, Heartbeat: 10 * time.Minute,
	}, "0")

	eventually(t, 30*time.Second, "pool a's keys", holdsExactly(h, poolA, everyPool, legacy))
	// A grant the agent received would have reached its informer's list or
	// watch by now: the file was written after both synced.
	if got.contains("filter-pool-b") {
		t.Fatal("the agent of a pool-a node received the grant of pool b")
	}
	for _, name := range []string{"filter-pool-a", "filter-every-pool", "filter-unlabelled"} {
		if !got.contains(name) {
			t.Fatalf("the agent never received %s", name)
		}
	}

	// The switch: sample the file until the new pool's grant is there.
	node := &corev1.Node{}
	must(t, k8sClient.Get(ctx, client.ObjectKey{Name: "node-filter"}, node))
	node.Labels["filter-pool"] = "b"
	must(t, k8sClient.Update(ctx, node))
	switched := holdsExactly(h, poolB, everyPool, legacy)
	deadline := time.Now().Add(30 * time.Second)
	samples := 0
	for switched() != nil {
		samples++
		if managed := h.ManagedKeys("alice"); !slices.Contains(managed, everyPool) || !slices.Contains(managed, legacy) {
			t.Fatalf("while the node changed pools, the file lost a grant that selects it in both: %v", managed)
		}
		if time.Now().After(deadline) {
			t.Fatal(switched())
		}
	}
	if samples == 0 {
		t.Fatal("the file held the new pool's keys before the node was relabelled was seen: the switch was not sampled")
	}
}

func sorted(s ...string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// holdsExactly checks that alice's managed keys are blobs, in any order.
func holdsExactly(h interface{ ManagedKeys(string) []string }, blobs ...string) func() error {
	return func() error {
		managed := sorted(h.ManagedKeys("alice")...)
		if !slices.Equal(managed, sorted(blobs...)) {
			return fmt.Errorf("alice holds managed keys %v, want %v", managed, sorted(blobs...))
		}
		return nil
	}
}

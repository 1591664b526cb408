package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/agentdaemonset"
	"github.com/nodeaccess/nodeaccess-operator/internal/authorizedkeys"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// timeout bounds every wait for a condition: generous, since `make test`
// runs this suite beside others on two shared cores, and a wait ends as soon
// as its condition holds.
const timeout = 90 * time.Second

type sshKey struct{ line, blob string }

func newKey(t testing.TB, comment string) sshKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
	return sshKey{line: line + " " + comment, blob: strings.Fields(line)[1]}
}

func nodeAccess(name string, selector map[string]string, keys ...sshKey) *nav1.NodeAccess {
	na := &nav1.NodeAccess{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: nav1.NodeAccessSpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: selector},
			Users:        []nav1.UserAccess{{Name: "alice"}},
		},
	}
	for _, k := range keys {
		na.Spec.Users[0].Keys = append(na.Spec.Users[0].Keys, nav1.AuthorizedKey{Key: k.line})
	}
	return na
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	must(t, k8s.Create(context.Background(), obj))
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj) })
}

func update(t *testing.T, name string, mutate func(*nav1.NodeAccess)) {
	t.Helper()
	testenv.Eventually(t, timeout, "updating "+name, func() error {
		na := &nav1.NodeAccess{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, na); err != nil {
			return err
		}
		mutate(na)
		return k8s.Update(context.Background(), na)
	})
}

// holds checks alice's managed keys on a node.
func holds(node string, keys ...sshKey) func() error {
	return func() error {
		want := make([]string, 0, len(keys))
		for _, k := range keys {
			want = append(want, k.blob)
		}
		if got := hosts[node].ManagedKeys("alice"); !slices.Equal(got, want) {
			return fmt.Errorf("%s holds %d keys %v, want %d", node, len(got), short(got), len(want))
		}
		return nil
	}
}

func short(blobs []string) []string {
	if len(blobs) > 4 {
		return append(append([]string{}, blobs[:4]...), "...")
	}
	return blobs
}

func ready(name string) func() error {
	return func() error {
		na := &nav1.NodeAccess{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, na); err != nil {
			return err
		}
		c := meta.FindStatusCondition(na.Status.Conditions, nav1.ReadyCondition)
		if c == nil || c.Status != metav1.ConditionTrue || na.Status.ObservedGeneration != na.Generation {
			return fmt.Errorf("not Ready: %+v", c)
		}
		return nil
	}
}

func gone(name string) func() error {
	return func() error {
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, &nav1.NodeAccess{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("%s still there (%v)", name, err)
		}
		return nil
	}
}

func TestGrantLifecycle(t *testing.T) {
	ctx := context.Background()
	k1, k2 := newKey(t, "k1"), newKey(t, "k2")
	create(t, nodeAccess("life", map[string]string{"pool": "a"}, k1))
	testenv.Eventually(t, timeout, "key on pool a", func() error {
		return firstErr(holds("pool-a-1", k1)(), holds("pool-a-2", k1)(), holds("pool-b-1")())
	})
	testenv.Eventually(t, timeout, "Ready", ready("life"))

	update(t, "life", func(na *nav1.NodeAccess) {
		na.Spec.Users[0].Keys = append(na.Spec.Users[0].Keys, nav1.AuthorizedKey{Key: k2.line})
	})
	testenv.Eventually(t, timeout, "second key", func() error { return firstErr(holds("pool-a-1", k1, k2)(), holds("pool-a-2", k1, k2)()) })

	// Relabel pool-a-2 out of the selector.
	node := &corev1.Node{}
	must(t, k8s.Get(ctx, client.ObjectKey{Name: "pool-a-2"}, node))
	node.Labels["pool"] = "c"
	must(t, k8s.Update(ctx, node))
	t.Cleanup(func() {
		must(t, k8s.Get(ctx, client.ObjectKey{Name: "pool-a-2"}, node))
		node.Labels["pool"] = "a"
		_ = k8s.Update(ctx, node)
	})
	testenv.Eventually(t, timeout, "relabelled node revoked", holds("pool-a-2"))

	// Expiry of the whole grant.
	end := metav1.NewTime(time.Now().Add(3 * time.Second).Truncate(time.Second))
	update(t, "life", func(na *nav1.NodeAccess) { na.Spec.ExpiresAt = &end })
	testenv.Eventually(t, timeout, "expired", holds("pool-a-1"))
	if time.Now().Before(end.Time) {
		t.Fatal("revoked before expiry")
	}

	// Delete.
	update(t, "life", func(na *nav1.NodeAccess) { na.Spec.ExpiresAt = nil })
	testenv.Eventually(t, timeout, "back after expiry was lifted", holds("pool-a-1", k1, k2))
	must(t, k8s.Delete(ctx, nodeAccess("life", nil)))
	testenv.Eventually(t, timeout, "deleted", gone("life"))
	must(t, holds("pool-a-1")())
}

// TestAgentKilledMidChangeNeverTearsAFile kills an agent with SIGKILL while
// it applies a change of a thousand keys, reading the file all along: every
// version ever seen is whole (the old keys or the new ones), and the
// restarted agent converges.
func TestAgentKilledMidChangeNeverTearsAFile(t *testing.T) {
	ctx := context.Background()
	const node = "pool-b-1"
	makeKeys := func(prefix string) ([]sshKey, string) {
		var keys []sshKey
		var content strings.Builder
		for i := range 1000 {
			k := newKey(t, fmt.Sprintf("%s-%d", prefix, i))
			keys = append(keys, k)
			content.WriteString(k.line + "\n")
		}
		return keys, content.String()
	}
	oldKeys, oldContent := makeKeys("old")
	newKeys, newContent := makeKeys("new")
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "many-keys"}, Data: map[string][]byte{"keys": []byte(oldContent)}}
	create(t, secret)
	na := nodeAccess("many", map[string]string{"pool": "b"})
	na.Spec.Users[0].KeysFrom = []nav1.KeySource{{SecretKeyRef: &nav1.ObjectKeySelector{Namespace: "default", Name: "many-keys", Key: "keys"}}}
	create(t, na)
	testenv.Eventually(t, timeout, "old keys", holds(node, oldKeys...))

	// Read the file continuously; every version must parse whole.
	var stop atomic.Bool
	var versions, torn atomic.Int64
	var tornExample atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		oldSet, newSet := blobSet(oldKeys), blobSet(newKeys)
		for !stop.Load() {
			data, err := os.ReadFile(hosts[node].KeysFile("alice"))
			if err != nil {
				continue
			}
			versions.Add(1)
			blobs := hosts[node].ManagedKeys("alice")
			if authorizedkeys.Parse(data).Damaged() || !(sameSet(blobs, oldSet) || sameSet(blobs, newSet)) {
				torn.Add(1)
				tornExample.Store(fmt.Sprintf("%d managed keys", len(blobs)))
			}
		}
	}()

	// Change all thousand keys and kill the agent at different moments of
	// the apply: right away, while the manager renders, as the file changes.
	target := newKeys
	for i, delay := range []time.Duration{0, 100 * time.Millisecond, 300 * time.Millisecond} {
		content := newContent
		target = newKeys
		if i%2 == 1 {
			content, target = oldContent, oldKeys
		}
		secret.Data["keys"] = []byte(content)
		must(t, k8s.Update(ctx, secret))
		time.Sleep(delay)
		agents[node].Stop(syscall.SIGKILL)
		var err error
		agents[node], err = startAgent(node)
		must(t, err)
		testenv.Eventually(t, timeout, "converged after the restart", holds(node, target...))
	}
	stop.Store(true)
	wg.Wait()
	if torn.Load() > 0 {
		t.Fatalf("%d of %d versions read were torn, e.g. %v", torn.Load(), versions.Load(), tornExample.Load())
	}
	t.Logf("%d versions read, none torn", versions.Load())
}

func blobSet(keys []sshKey) map[string]bool {
	set := map[string]bool{}
	for _, k := range keys {
		set[k.blob] = true
	}
	return set
}

func sameSet(blobs []string, set map[string]bool) bool {
	if len(blobs) != len(set) {
		return false
	}
	for _, b := range blobs {
		if !set[b] {
			return false
		}
	}
	return true
}

// TestAPIServerRestartUnderLoad restarts kube-apiserver and etcd while
// grants are being created: manager and agents resume, and every key is on
// its nodes exactly once.
func TestAPIServerRestartUnderLoad(t *testing.T) {
	ctx := context.Background()
	var keys []sshKey
	for i := range 6 {
		k := newKey(t, fmt.Sprintf("load-%d", i))
		keys = append(keys, k)
		create(t, nodeAccess(fmt.Sprintf("load-%d", i), map[string]string{"pool": "a"}, k))
		if i == 2 {
			cluster.StopAPIServer()
			cluster.StopEtcd()
			time.Sleep(2 * time.Second)
			must(t, cluster.StartEtcd(ctx))
			must(t, cluster.StartAPIServer(ctx))
		}
	}
	testenv.Eventually(t, 2*timeout, "every key on pool-a-1, once", holds("pool-a-1", keys...))
	for i := range keys {
		testenv.Eventually(t, timeout, "Ready", ready(fmt.Sprintf("load-%d", i)))
	}
	must(t, cluster.Healthy())
}

// TestExpiryWithTheManagerDown: the agents remove an expiring key on time by
// their own clocks.
func TestExpiryWithTheManagerDown(t *testing.T) {
	k := newKey(t, "expiring")
	na := nodeAccess("expiring", map[string]string{"pool": "b"}, k)
	end := metav1.NewTime(time.Now().Add(6 * time.Second).Truncate(time.Second))
	na.Spec.Users[0].Keys[0].ExpiresAt = &end
	create(t, na)
	testenv.Eventually(t, timeout, "key on node", holds("pool-b-1", k))
	testenv.Eventually(t, timeout, "Ready", ready("expiring"))

	manager.Stop(syscall.SIGTERM)
	t.Cleanup(func() {
		var err error
		manager, err = startManager()
		must(t, err)
	})
	testenv.Eventually(t, timeout, "expired with the manager down", holds("pool-b-1"))
	if time.Now().Before(end.Time) {
		t.Fatal("removed before expiry")
	}
}

// TestDaemonSetIsRecreated: deleting the agent DaemonSet makes the manager
// recreate it, and the controller manager puts a pod on every node again.
func TestDaemonSetIsRecreated(t *testing.T) {
	ctx := context.Background()
	key := client.ObjectKey{Namespace: namespace, Name: agentdaemonset.Name}
	ds := &appsv1.DaemonSet{}
	testenv.Eventually(t, timeout, "DaemonSet with a pod on every node", func() error {
		if err := k8s.Get(ctx, key, ds); err != nil {
			return err
		}
		if ds.Status.NumberReady != int32(len(nodes)) {
			return fmt.Errorf("%d of %d agent pods ready", ds.Status.NumberReady, len(nodes))
		}
		return nil
	})
	old := ds.UID
	must(t, k8s.Delete(ctx, ds, client.PropagationPolicy(metav1.DeletePropagationBackground)))
	testenv.Eventually(t, timeout, "recreated with a pod on every node", func() error {
		got := &appsv1.DaemonSet{}
		if err := k8s.Get(ctx, key, got); err != nil {
			return err
		}
		if got.UID == old {
			return fmt.Errorf("not recreated yet")
		}
		if got.Status.NumberReady != int32(len(nodes)) {
			return fmt.Errorf("%d of %d agent pods ready", got.Status.NumberReady, len(nodes))
		}
		return nil
	})
}

// TestDeletedWhileAnAgentIsDown: the keys are revoked on that node when its
// agent returns.
func TestDeletedWhileAnAgentIsDown(t *testing.T) {
	ctx := context.Background()
	const node = "pool-a-1"
	k := newKey(t, "down")
	create(t, nodeAccess("down", map[string]string{"pool": "a"}, k))
	testenv.Eventually(t, timeout, "key on node", holds(node, k))
	testenv.Eventually(t, timeout, "Ready", ready("down"))

	agents[node].Stop(syscall.SIGTERM)
	must(t, holds(node, k)()) // stopping an agent never revokes
	must(t, k8s.Delete(ctx, nodeAccess("down", nil)))
	time.Sleep(2 * time.Second)
	must(t, holds(node, k)())
	if err := gone("down")(); err == nil {
		t.Fatal("the NodeAccess went away while a node still held its keys")
	}
	var err error
	agents[node], err = startAgent(node)
	must(t, err)
	testenv.Eventually(t, timeout, "revoked when the agent returned", holds(node))
	testenv.Eventually(t, timeout, "then the NodeAccess went away", gone("down"))
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

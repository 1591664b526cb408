package controllers_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/controllers"
	"github.com/nodeaccess/nodeaccess-operator/internal/agentdaemonset"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

const timeout = 15 * time.Second

var alice = testenv.Account{Name: "alice", ID: 1001}

// sshKey is a generated public key: the line a user pastes, and its blob.
type sshKey struct {
	line, blob string
}

func newKey(t *testing.T, comment string) sshKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return keyOf(t, pub, comment)
}

func keyOf(t *testing.T, pub any, comment string) sshKey {
	t.Helper()
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
	return sshKey{line: line + " " + comment, blob: strings.Fields(line)[1]}
}

// node is a simulated node: a Node object, a host root and a running agent.
type node struct {
	name  string
	host  *testenv.Host
	agent *testenv.Agent
}

func startNodes(t *testing.T, prefix string, pools ...string) []*node {
	t.Helper()
	var nodes []*node
	for i, pool := range pools {
		n := &node{name: fmt.Sprintf("%s-%d", prefix, i), host: testenv.NewHost(t, alice)}
		obj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: map[string]string{"pool": pool}}}
		must(t, k8sClient.Create(context.Background(), obj))
		t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), obj) })
		n.agent = env.StartAgent(t, n.name, namespace, n.host, 2*time.Second)
		nodes = append(nodes, n)
	}
	return nodes
}

func nodeAccess(name string, pool string, keys ...string) *nav1.NodeAccess {
	na := &nav1.NodeAccess{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: nav1.NodeAccessSpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pool": pool}},
			Users:        []nav1.UserAccess{{Name: "alice"}},
		},
	}
	for _, k := range keys {
		na.Spec.Users[0].Keys = append(na.Spec.Users[0].Keys, nav1.AuthorizedKey{Key: k})
	}
	return na
}

func create(t *testing.T, na *nav1.NodeAccess) {
	t.Helper()
	must(t, k8sClient.Create(context.Background(), na))
	t.Cleanup(func() {
		_ = k8sClient.Delete(context.Background(), na)
		testenv.Eventually(t, 2*timeout, "NodeAccess "+na.Name+" deleted", func() error {
			err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(na), &nav1.NodeAccess{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there: %v", err)
		})
	})
}

// update changes a NodeAccess's spec, retrying on conflicts.
func update(t *testing.T, name string, mutate func(na *nav1.NodeAccess)) {
	t.Helper()
	testenv.Eventually(t, timeout, "updating "+name, func() error {
		na := &nav1.NodeAccess{}
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Name: name}, na); err != nil {
			return err
		}
		mutate(na)
		return k8sClient.Update(context.Background(), na)
	})
}

// holds checks the managed keys of alice on a node.
func holds(n *node, blobs ...string) func() error {
	return func() error {
		if got := n.host.ManagedKeys("alice"); !slices.Equal(got, blobs) {
			return fmt.Errorf("%s holds %v, want %v:\n%s", n.name, got, blobs, n.host.Read("alice"))
		}
		return nil
	}
}

// statusIs checks a NodeAccess's status fields and Ready condition.
func statusIs(name string, selected, inSync, keys int32, readyReason string) func() error {
	return func() error {
		na := &nav1.NodeAccess{}
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Name: name}, na); err != nil {
			return err
		}
		st := na.Status
		ready := meta.FindStatusCondition(st.Conditions, nav1.ReadyCondition)
		if st.ObservedGeneration != na.Generation || st.SelectedNodes != selected || st.NodesInSync != inSync ||
			st.KeysGranted != keys || ready == nil || ready.Reason != readyReason || ready.ObservedGeneration != na.Generation {
			return fmt.Errorf("status %+v; want selected=%d inSync=%d keys=%d ready reason %s at generation %d",
				st, selected, inSync, keys, readyReason, na.Generation)
		}
		return nil
	}
}

// eventsFor lists the reasons of the Events about a NodeAccess.
func eventsFor(name string) func() []string {
	return func() []string {
		var list eventsv1.EventList
		if err := k8sClient.List(context.Background(), &list); err != nil {
			return nil
		}
		var reasons []string
		for _, e := range list.Items {
			if e.Regarding.Kind == "NodeAccess" && e.Regarding.Name == name {
				reasons = append(reasons, e.Reason)
			}
		}
		return reasons
	}
}

func hasEvent(name, reason string) func() error {
	return func() error {
		if reasons := eventsFor(name)(); !slices.Contains(reasons, reason) {
			return fmt.Errorf("no %s event for %s; events: %v", reason, name, reasons)
		}
		return nil
	}
}

func TestGrantLifecycle(t *testing.T) {
	ctx := context.Background()
	nodes := startNodes(t, "life", "a", "a", "b")
	k1, k2 := newKey(t, "k1"), newKey(t, "k2")
	nodes[0].host.WriteKeys(t, "alice", alice.ID, "# hand-written\n"+newKey(t, "mine").line+"\n")
	handWritten := nodes[0].host.Read("alice")

	// Create: the selected nodes only; Ready with every count right.
	create(t, nodeAccess("life", "a", k1.line))
	for _, n := range nodes[:2] {
		testenv.Eventually(t, timeout, "key on "+n.name, holds(n, k1.blob))
	}
	must(t, holds(nodes[2])())
	testenv.Eventually(t, timeout, "Ready", statusIs("life", 2, 2, 1, nav1.AllNodesInSyncReason))
	// The block goes on top; the user's lines follow, byte for byte.
	if !strings.HasSuffix(nodes[0].host.Read("alice"), handWritten) {
		t.Fatalf("hand-written lines changed:\n%s", nodes[0].host.Read("alice"))
	}
	testenv.Eventually(t, timeout, "Granted event", hasEvent("life", "Granted"))
	testenv.Eventually(t, timeout, "metrics", func() error {
		for name, want := range map[string]float64{"nodeaccess_nodes_selected": 2, "nodeaccess_nodes_in_sync": 2, "nodeaccess_keys_granted": 1, "nodeaccess_keys_refused": 0} {
			if got, ok := gauge(name, "life"); !ok || got != want {
				return fmt.Errorf("%s{nodeaccess=life} = %v (found %v), want %v", name, got, ok, want)
			}
		}
		if n := histogramCount("nodeaccess_propagation_seconds"); n == 0 {
			return fmt.Errorf("no propagation time observed")
		}
		return nil
	})

	// The rendered grant is owned by the NodeAccess, in the operator namespace.
	rendered := &nav1.RenderedNodeAccess{}
	must(t, k8sClient.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "life"}, rendered))
	if len(rendered.OwnerReferences) != 1 || rendered.OwnerReferences[0].Kind != "NodeAccess" || rendered.OwnerReferences[0].Name != "life" {
		t.Fatalf("rendered grant owners %+v", rendered.OwnerReferences)
	}

	// Update the keys.
	update(t, "life", func(na *nav1.NodeAccess) {
		na.Spec.Users[0].Keys = append(na.Spec.Users[0].Keys, nav1.AuthorizedKey{Key: k2.line})
	})
	for _, n := range nodes[:2] {
		testenv.Eventually(t, timeout, "second key on "+n.name, holds(n, k1.blob, k2.blob))
	}
	testenv.Eventually(t, timeout, "Ready at the new generation", statusIs("life", 2, 2, 2, nav1.AllNodesInSyncReason))

	// Relabel a node out of the selector: its keys go.
	n1 := &corev1.Node{}
	must(t, k8sClient.Get(ctx, client.ObjectKey{Name: nodes[1].name}, n1))
	n1.Labels["pool"] = "b"
	must(t, k8sClient.Update(ctx, n1))
	testenv.Eventually(t, timeout, "keys removed from the relabelled node", holds(nodes[1]))
	testenv.Eventually(t, timeout, "one node selected", statusIs("life", 1, 1, 2, nav1.AllNodesInSyncReason))

	// Delete: the finalizer holds until the agents report the keys gone.
	na := &nav1.NodeAccess{}
	must(t, k8sClient.Get(ctx, client.ObjectKey{Name: "life"}, na))
	if !slices.Contains(na.Finalizers, controllers.Finalizer) {
		t.Fatalf("finalizer missing: %v", na.Finalizers)
	}
	must(t, k8sClient.Delete(ctx, na))
	testenv.Eventually(t, timeout, "NodeAccess gone", func() error {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: "life"}, &nav1.NodeAccess{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
	// When the object is gone, the keys already are.
	for _, n := range nodes {
		must(t, holds(n)())
	}
	if got := nodes[0].host.Read("alice"); got != handWritten {
		t.Fatalf("after revocation the file must be what the user wrote:\n%q\nwant\n%q", got, handWritten)
	}
	testenv.Eventually(t, timeout, "Revoked event", hasEvent("life", "Revoked"))
	if _, ok := gauge("nodeaccess_nodes_in_sync", "life"); ok {
		t.Error("a deleted grant's metrics remain")
	}
}

// gauge reads a per-grant gauge from controller-runtime's registry.
func gauge(name, nodeAccess string) (float64, bool) {
	families, _ := metrics.Registry.Gather()
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "nodeaccess" && l.GetValue() == nodeAccess {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

func histogramCount(name string) uint64 {
	families, _ := metrics.Registry.Gather()
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

func TestDeletionWaitsForNodesThatStillHoldKeys(t *testing.T) {
	ctx := context.Background()
	nodes := startNodes(t, "held", "held")
	k := newKey(t, "k")
	create(t, nodeAccess("held", "held", k.line))
	testenv.Eventually(t, timeout, "key on node", holds(nodes[0], k.blob))
	testenv.Eventually(t, timeout, "node reported", statusIs("held", 1, 1, 1, nav1.AllNodesInSyncReason))

	// The agent is down: the object stays Terminating, saying why.
	nodes[0].agent.Stop(t)
	na := &nav1.NodeAccess{}
	must(t, k8sClient.Get(ctx, client.ObjectKey{Name: "held"}, na))
	must(t, k8sClient.Delete(ctx, na))
	testenv.Eventually(t, timeout, "Revoking", func() error {
		must(t, k8sClient.Get(ctx, client.ObjectKey{Name: "held"}, na))
		c := meta.FindStatusCondition(na.Status.Conditions, nav1.ProgressingCondition)
		if c == nil || c.Reason != nav1.RevokingReason || len(na.Status.FailingNodes) != 1 || na.Status.FailingNodes[0].Node != nodes[0].name {
			return fmt.Errorf("progressing %+v, failing nodes %+v", c, na.Status.FailingNodes)
		}
		return nil
	})
	time.Sleep(time.Second)
	must(t, k8sClient.Get(ctx, client.ObjectKey{Name: "held"}, na))

	// The agent returns, revokes from the full desired state, and the object goes.
	nodes[0].agent = env.StartAgent(t, nodes[0].name, namespace, nodes[0].host, 2*time.Second)
	testenv.Eventually(t, timeout, "revoked on return", holds(nodes[0]))
	testenv.Eventually(t, timeout, "NodeAccess gone", func() error {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: "held"}, &nav1.NodeAccess{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
}

func TestKeysFromSecretsFollowRotationAndMissingSources(t *testing.T) {
	ctx := context.Background()
	nodes := startNodes(t, "src", "src")
	inline, fromSecret, rotated := newKey(t, "inline"), newKey(t, "secret"), newKey(t, "rotated")
	must(t, client.IgnoreAlreadyExists(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-src"}})))

	na := nodeAccess("src", "src", inline.line)
	na.Spec.Users[0].KeysFrom = []nav1.KeySource{{SecretKeyRef: &nav1.ObjectKeySelector{Namespace: "team-src", Name: "keys", Key: "authorized_keys"}}}
	create(t, na)

	// The namespace has not allowed the operator to read its Secrets:
	// refused, and the inline key still served.
	testenv.Eventually(t, timeout, "inline key served", holds(nodes[0], inline.blob))
	testenv.Eventually(t, timeout, "Degraded: source forbidden", statusIs("src", 1, 1, 1, nav1.KeySourceForbiddenReason))
	testenv.Eventually(t, timeout, "KeySourceForbidden event", hasEvent("src", nav1.KeySourceForbiddenReason))

	// The namespace opts in; the Secret is missing: Degraded with the source named.
	allowSecrets(t, "team-src")
	testenv.Eventually(t, timeout, "Degraded: source missing", statusIs("src", 1, 1, 1, nav1.KeySourceMissingReason))
	testenv.Eventually(t, timeout, "KeySourceMissing event", hasEvent("src", nav1.KeySourceMissingReason))

	// The Secret appears: recovered by itself.
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-src", Name: "keys"},
		Data:       map[string][]byte{"authorized_keys": []byte("# team keys\n" + fromSecret.line + "\n")},
	}
	must(t, k8sClient.Create(ctx, secret))
	testenv.Eventually(t, timeout, "secret key served", holds(nodes[0], inline.blob, fromSecret.blob))
	testenv.Eventually(t, timeout, "Ready", statusIs("src", 1, 1, 2, nav1.AllNodesInSyncReason))

	// Rotated: the new key replaces the old, without touching the NodeAccess.
	// A line that is not a key (a password pasted by mistake) is refused
	// without its text reaching status or an Event.
	secret.Data["authorized_keys"] = []byte(rotated.line + "\npassword=hunter2-correct-horse\n")
	must(t, k8sClient.Update(ctx, secret))
	testenv.Eventually(t, timeout, "rotated key served", holds(nodes[0], inline.blob, rotated.blob))
	testenv.Eventually(t, timeout, "the pasted line refused by line number", func() error {
		got := &nav1.NodeAccess{}
		must(t, k8sClient.Get(ctx, client.ObjectKey{Name: "src"}, got))
		if len(got.Status.RefusedKeys) != 1 || got.Status.RefusedKeys[0].Source != "secret team-src/keys key authorized_keys line 2" {
			return fmt.Errorf("refused %+v", got.Status.RefusedKeys)
		}
		return nil
	})
	testenv.Eventually(t, timeout, "its Warning event", hasEvent("src", nav1.MalformedKeyReason))
	got := &nav1.NodeAccess{}
	must(t, k8sClient.Get(ctx, client.ObjectKey{Name: "src"}, got))
	var events eventsv1.EventList
	must(t, k8sClient.List(ctx, &events))
	for _, text := range append([]string{fmt.Sprintf("%+v", got.Status)}, eventNotes(events)...) {
		if strings.Contains(text, "hunter2") || strings.Contains(text, "correct-horse") {
			t.Fatalf("Secret content leaked: %s", text)
		}
	}

	// Deleted: its keys are revoked, the others stay.
	must(t, k8sClient.Delete(ctx, secret))
	testenv.Eventually(t, timeout, "deleted secret's key revoked", holds(nodes[0], inline.blob))
}

func eventNotes(list eventsv1.EventList) []string {
	var notes []string
	for _, e := range list.Items {
		notes = append(notes, e.Note)
	}
	return notes
}

func TestRefusedKeysAndRootAreReported(t *testing.T) {
	nodes := startNodes(t, "refuse", "refuse")
	good := newKey(t, "good")
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	must(t, err)
	weakKey := keyOf(t, &weak.PublicKey, "weak")

	second := newKey(t, "second")
	nodes[0].host.WriteKeys(t, "alice", alice.ID, "# alice's own\n"+newKey(t, "own").line+"\n")
	handWritten := nodes[0].host.Read("alice")
	// Lines the schema lets through but the key policy refuses.
	na := nodeAccess("refuse", "refuse", good.line, weakKey.line,
		good.line+" "+second.line,                             // a second key hidden in the comment
		second.line+"\u00a0nbsp",                              // a look-alike space (the schema refuses one between type and key)
		"ssh-rsa "+strings.Fields(good.line)[1]+" wrong-type") // type and blob disagree
	na.Spec.Users = append(na.Spec.Users, nav1.UserAccess{Name: "root", Keys: []nav1.AuthorizedKey{{Key: good.line}}})
	create(t, na)

	testenv.Eventually(t, timeout, "good key served", holds(nodes[0], good.blob))
	testenv.Eventually(t, timeout, "refusals in status", func() error {
		got := &nav1.NodeAccess{}
		must(t, k8sClient.Get(context.Background(), client.ObjectKey{Name: "refuse"}, got))
		var reasons []string
		for _, r := range got.Status.RefusedKeys {
			reasons = append(reasons, r.User+"/"+r.Source+"/"+r.Reason)
		}
		want := []string{"alice/keys[1]/WeakKey", "alice/keys[2]/MultipleKeys", "alice/keys[3]/ForbiddenCharacter", "alice/keys[4]/MalformedKey", "root/users[1]/UserRefused"}
		if !slices.Equal(reasons, want) {
			return fmt.Errorf("refusals %v, want %v", reasons, want)
		}
		if ready := meta.FindStatusCondition(got.Status.Conditions, nav1.ReadyCondition); ready == nil || ready.Status != metav1.ConditionFalse {
			return fmt.Errorf("a grant with refusals must not be Ready: %+v", ready)
		}
		return nil
	})
	testenv.Eventually(t, timeout, "WeakKey event", hasEvent("refuse", "WeakKey"))
	testenv.Eventually(t, timeout, "UserRefused event", hasEvent("refuse", "UserRefused"))
	// root's file is never written, and alice's own lines are intact.
	if content := nodes[0].host.Read("root"); content != "" {
		t.Fatalf("root's authorized_keys was written:\n%s", content)
	}
	if content := nodes[0].host.Read("alice"); !strings.HasSuffix(content, handWritten) || strings.Count(content, "\n") != strings.Count(handWritten, "\n")+4 {
		t.Fatalf("alice's file is not her lines plus a block with one key:\n%s", content)
	}
}

func TestOversizedGrantIsRefusedWhole(t *testing.T) {
	ctx := context.Background()
	nodes := startNodes(t, "big", "big")
	first := newKey(t, "first")
	create(t, nodeAccess("big", "big", first.line))
	testenv.Eventually(t, timeout, "first key served", holds(nodes[0], first.blob))

	// 5 Secrets of 1000 keys: over the 4096-key limit of one NodeAccess.
	must(t, client.IgnoreAlreadyExists(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-big"}})))
	allowSecrets(t, "team-big")
	var sources []nav1.KeySource
	for i := range 5 {
		var content strings.Builder
		for j := 0; j < 1000; j++ {
			content.WriteString(newKey(t, fmt.Sprintf("k%d-%d", i, j)).line + "\n")
		}
		name := fmt.Sprintf("keys-%d", i)
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-big", Name: name}, Data: map[string][]byte{"k": []byte(content.String())}}
		must(t, k8sClient.Create(ctx, secret))
		t.Cleanup(func() { _ = k8sClient.Delete(ctx, secret) })
		sources = append(sources, nav1.KeySource{SecretKeyRef: &nav1.ObjectKeySelector{Namespace: "team-big", Name: name, Key: "k"}})
	}
	update(t, "big", func(na *nav1.NodeAccess) { na.Spec.Users[0].KeysFrom = sources })
	testenv.Eventually(t, timeout, "Degraded TooManyKeys", func() error {
		na := &nav1.NodeAccess{}
		must(t, k8sClient.Get(ctx, client.ObjectKey{Name: "big"}, na))
		c := meta.FindStatusCondition(na.Status.Conditions, nav1.DegradedCondition)
		if c == nil || c.Reason != "TooManyKeys" || !strings.Contains(c.Message, "at most 4096") || c.ObservedGeneration != na.Generation {
			return fmt.Errorf("degraded %+v", c)
		}
		return nil
	})
	// Never a partial grant: the node keeps exactly the last accepted keys.
	time.Sleep(time.Second)
	must(t, holds(nodes[0], first.blob)())
}

func TestExpiryOfOneKeyAndOfTheGrant(t *testing.T) {
	nodes := startNodes(t, "exp", "exp")
	stay, goes := newKey(t, "stay"), newKey(t, "goes")
	keyEnd := metav1.NewTime(time.Now().Add(3 * time.Second).Truncate(time.Second))
	grantEnd := metav1.NewTime(keyEnd.Add(6 * time.Second))
	na := nodeAccess("exp", "exp", stay.line)
	na.Spec.Users[0].Keys = append(na.Spec.Users[0].Keys, nav1.AuthorizedKey{Key: goes.line, ExpiresAt: &keyEnd})
	na.Spec.ExpiresAt = &grantEnd
	create(t, na)

	testenv.Eventually(t, timeout, "both keys", holds(nodes[0], stay.blob, goes.blob))
	testenv.Eventually(t, timeout, "key expired", holds(nodes[0], stay.blob))
	if time.Now().Before(keyEnd.Time) {
		t.Fatal("key removed before its expiry")
	}
	testenv.Eventually(t, timeout, "status after key expiry", statusIs("exp", 1, 1, 1, nav1.AllNodesInSyncReason))
	testenv.Eventually(t, timeout, "grant expired", holds(nodes[0]))
	if time.Now().Before(grantEnd.Time) {
		t.Fatal("grant removed before its expiry")
	}
	testenv.Eventually(t, timeout, "Expired", statusIs("exp", 1, 1, 0, nav1.ExpiredReason))
	testenv.Eventually(t, timeout, "Expired event", hasEvent("exp", "Expired"))
}

func TestOverlappingGrantsShareAnAccount(t *testing.T) {
	nodes := startNodes(t, "overlap", "x", "y")
	shared, onlyX := newKey(t, "shared"), newKey(t, "only-x")
	create(t, nodeAccess("overlap-x", "x", shared.line, onlyX.line))
	both := nodeAccess("overlap-all", "x", shared.line)
	both.Spec.NodeSelector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pool", Operator: metav1.LabelSelectorOpIn, Values: []string{"x", "y"}}}}
	create(t, both)

	// The shared key appears once on the node both select, attributed to both.
	testenv.Eventually(t, timeout, "x holds both", holds(nodes[0], shared.blob, onlyX.blob))
	testenv.Eventually(t, timeout, "y holds the shared key", holds(nodes[1], shared.blob))
	if content := nodes[0].host.Read("alice"); !strings.Contains(content, "nodeaccess=overlap-all,overlap-x") {
		t.Fatalf("shared key not attributed to both grants:\n%s", content)
	}

	// Deleting one grant keeps the key the other still grants.
	must(t, k8sClient.Delete(context.Background(), nodeAccess("overlap-x", "x")))
	testenv.Eventually(t, timeout, "x keeps the shared key", holds(nodes[0], shared.blob))
	must(t, holds(nodes[1], shared.blob)())
}

func TestAgentDaemonSetIsCreatedAndRepaired(t *testing.T) {
	ctx := context.Background()
	key := client.ObjectKey{Namespace: namespace, Name: agentdaemonset.Name}
	ds := &appsv1.DaemonSet{}
	testenv.Eventually(t, timeout, "DaemonSet created", func() error { return k8sClient.Get(ctx, key, ds) })
	if img := ds.Spec.Template.Spec.Containers[0].Image; img != agentImage {
		t.Fatalf("agent image %q, want %q", img, agentImage)
	}
	// An edit is undone.
	ds.Spec.Template.Spec.Containers[0].Image = "evil.example.com/agent:latest"
	must(t, k8sClient.Update(ctx, ds))
	testenv.Eventually(t, timeout, "edit undone", func() error {
		got := &appsv1.DaemonSet{}
		if err := k8sClient.Get(ctx, key, got); err != nil {
			return err
		}
		if img := got.Spec.Template.Spec.Containers[0].Image; img != agentImage {
			return fmt.Errorf("image %q", img)
		}
		return nil
	})
	// A deletion is undone.
	old := ds.UID
	must(t, k8sClient.Delete(ctx, ds))
	testenv.Eventually(t, timeout, "DaemonSet recreated", func() error {
		got := &appsv1.DaemonSet{}
		if err := k8sClient.Get(ctx, key, got); err != nil {
			return err
		}
		if got.UID == old {
			return fmt.Errorf("not yet recreated")
		}
		return nil
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestNodeThatCannotApplyIsReportedFailing(t *testing.T) {
	nodes := startNodes(t, "fail", "fail")
	k := newKey(t, "k")
	na := nodeAccess("fail", "fail", k.line)
	na.Spec.Users[0].Name = "bob" // no such account on the node
	create(t, na)
	testenv.Eventually(t, timeout, "failing node in status", func() error {
		got := &nav1.NodeAccess{}
		must(t, k8sClient.Get(context.Background(), client.ObjectKey{Name: "fail"}, got))
		degraded := meta.FindStatusCondition(got.Status.Conditions, nav1.DegradedCondition)
		if len(got.Status.FailingNodes) != 1 || got.Status.FailingNodes[0].Node != nodes[0].name ||
			got.Status.FailingNodes[0].Reason != "UserNotFound" || got.Status.NodesInSync != 0 ||
			degraded == nil || degraded.Reason != nav1.NodesFailingReason {
			return fmt.Errorf("status %+v", got.Status)
		}
		return nil
	})
	testenv.Eventually(t, timeout, "NodesFailing event", hasEvent("fail", nav1.NodesFailingReason))
}

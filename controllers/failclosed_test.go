package controllers_test

// The manager says "revoked" and "in sync" only on proof, removes access
// whatever else is wrong with an update, and reports its own failures.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/controllers"
	"github.com/nodeaccess/nodeaccess-operator/internal/agentdaemonset"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

func gone(name string) func() error {
	return func() error {
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Name: name}, &nav1.NodeAccess{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	}
}

// eventNote returns the note of the first Event with reason about name.
func eventNote(name, reason string) string {
	var list eventsv1.EventList
	_ = k8sClient.List(context.Background(), &list)
	for _, e := range list.Items {
		if e.Regarding.Kind == "NodeAccess" && e.Regarding.Name == name && e.Reason == reason {
			return e.Note
		}
	}
	return ""
}

// A node whose agent cannot read alice's file cannot prove the keys gone:
// the NodeAccess waits, saying so, and is never reported revoked on that
// node's word. Mended in time, the keys go and the revocation is proven;
// left alone, the NodeAccess is released at the timeout with a Warning
// naming the node, whose agent keeps listing the grant and removes the keys
// once it can.
func TestRevocationWaitsForProof(t *testing.T) {
	for _, mendInTime := range []bool{true, false} {
		name := fmt.Sprintf("proof-%v", mendInTime)
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			nodes := startNodes(t, name, name)
			k := newKey(t, "k")
			create(t, nodeAccess(name, name, k.line))
			testenv.Eventually(t, timeout, "key on node", holds(nodes[0], k.blob))
			testenv.Eventually(t, timeout, "Ready", statusIs(name, 1, 1, 1, nav1.AllNodesInSyncReason))
			na := &nav1.NodeAccess{}
			must(t, k8sClient.Get(ctx, client.ObjectKey{Name: name}, na))
			uid := string(na.UID)

			home := filepath.Join(nodes[0].host.Root, "home", "alice")
			must(t, os.Chmod(home, 0o775))
			t.Cleanup(func() { _ = os.Chmod(home, 0o755) })
			deleted := time.Now()
			must(t, k8sClient.Delete(ctx, na))
			testenv.Eventually(t, timeout, "Revoking, the node failing as possibly holding the keys", func() error {
				got := &nav1.NodeAccess{}
				if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, got); err != nil {
					return err
				}
				c := meta.FindStatusCondition(got.Status.Conditions, nav1.ProgressingCondition)
				if c == nil || c.Reason != nav1.RevokingReason || len(got.Status.FailingNodes) != 1 ||
					got.Status.FailingNodes[0].Node != nodes[0].name || got.Status.FailingNodes[0].Reason != nav1.PossiblyHeldReason {
					return fmt.Errorf("progressing %+v, failing %+v", c, got.Status.FailingNodes)
				}
				return nil
			})
			if !strings.Contains(nodes[0].host.Read("alice"), k.blob) {
				t.Fatal("the key left a home the agent may not write")
			}
			if err := hasEvent(name, nav1.RevokedEventReason)(); err == nil {
				t.Fatal("Revoked while a node could not prove the keys gone")
			}

			if mendInTime {
				must(t, os.Chmod(home, 0o755))
				testenv.Eventually(t, timeout, "keys removed once readable", holds(nodes[0]))
				testenv.Eventually(t, timeout, "NodeAccess gone", gone(name))
				if time.Since(deleted) >= revocationTimeout {
					t.Fatal("released by the timeout, not by the proof")
				}
				testenv.Eventually(t, timeout, "Revoked event", hasEvent(name, nav1.RevokedEventReason))
				return
			}
			testenv.Eventually(t, revocationTimeout+timeout, "released at the timeout", gone(name))
			// The deletion timestamp is whole seconds, up to one before the request.
			if time.Since(deleted) < revocationTimeout-time.Second {
				t.Fatalf("released after %s, before the timeout of %s", time.Since(deleted), revocationTimeout)
			}
			testenv.Eventually(t, timeout, "RevocationUnconfirmed naming the node", func() error {
				if note := eventNote(name, nav1.RevocationUnconfirmedEventReason); !strings.Contains(note, nodes[0].name) {
					return fmt.Errorf("event note %q", note)
				}
				return nil
			})
			if err := hasEvent(name, nav1.RevokedEventReason)(); err == nil {
				t.Fatal("Revoked event for an unconfirmed revocation")
			}
			// The node's report still lists the grant, and its agent removes the keys when it can.
			report := &nav1.NodeAccessReport{}
			must(t, k8sClient.Get(ctx, client.ObjectKey{Name: nodes[0].name}, report))
			listed := false
			for _, g := range report.Status.Grants {
				listed = listed || (g.UID == uid && !g.Applied && g.Reason == nav1.PossiblyHeldReason)
			}
			if !listed {
				t.Fatalf("the report forgot the leftover grant: %+v", report.Status.Grants)
			}
			must(t, os.Chmod(home, 0o755))
			testenv.Eventually(t, timeout, "keys removed by the agent later", holds(nodes[0]))
			testenv.Eventually(t, timeout, "and the report clean", func() error {
				must(t, k8sClient.Get(ctx, client.ObjectKey{Name: nodes[0].name}, report))
				for _, g := range report.Status.Grants {
					if g.UID == uid {
						return fmt.Errorf("still listed: %+v", g)
					}
				}
				return nil
			})
		})
	}
}

// bulkSecret creates a Secret of n generated keys in ns and returns its source.
func bulkSecret(t *testing.T, ns, name string, n int) nav1.KeySource {
	t.Helper()
	var content strings.Builder
	for j := 0; j < n; j++ {
		content.WriteString(newKey(t, fmt.Sprintf("%s-%d", name, j)).line + "\n")
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string][]byte{"k": []byte(content.String())}}
	must(t, k8sClient.Create(context.Background(), secret))
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), secret) })
	return nav1.KeySource{SecretKeyRef: &nav1.ObjectKeySelector{Namespace: ns, Name: name, Key: "k"}}
}

func teamNamespace(t *testing.T, ns string) {
	t.Helper()
	must(t, client.IgnoreAlreadyExists(k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})))
	allowSecrets(t, ns)
}

// A change that removes access reaches the nodes even when the rest of the
// update is refused as too large: suspend, and an earlier expiry.
func TestRemovalsReachTheNodesWhateverTheSize(t *testing.T) {
	nodes := startNodes(t, "shrink", "shrink")
	teamNamespace(t, "team-shrink")
	var bulk []nav1.KeySource
	for i := range 5 {
		bulk = append(bulk, bulkSecret(t, "team-shrink", fmt.Sprintf("bulk-%d", i), 1000))
	}
	k := newKey(t, "k")
	create(t, nodeAccess("shrink", "shrink", k.line))
	testenv.Eventually(t, timeout, "key on node", holds(nodes[0], k.blob))

	// Over the key limit, and suspended: the keys go.
	update(t, "shrink", func(na *nav1.NodeAccess) {
		na.Spec.Users[0].KeysFrom = bulk
		na.Spec.Suspend = true
	})
	testenv.Eventually(t, timeout, "suspended keys removed", holds(nodes[0]))
	testenv.Eventually(t, timeout, "Suspended, proven", statusIs("shrink", 1, 1, 0, nav1.SuspendedReason))

	// Resumed while still over the limit: nothing the last accepted version
	// did not grant comes back.
	update(t, "shrink", func(na *nav1.NodeAccess) { na.Spec.Suspend = false })
	testenv.Eventually(t, timeout, "TooManyKeys, granting nothing", statusIs("shrink", 1, 1, 0, nav1.TooManyKeysReason))
	must(t, holds(nodes[0])())

	// Back under the limit, then over it again with an earlier expiry: the
	// key stays until that expiry, then goes by the agent's clock.
	update(t, "shrink", func(na *nav1.NodeAccess) { na.Spec.Users[0].KeysFrom = nil })
	testenv.Eventually(t, timeout, "key back", holds(nodes[0], k.blob))
	end := metav1.NewTime(time.Now().Add(4 * time.Second).Truncate(time.Second))
	update(t, "shrink", func(na *nav1.NodeAccess) {
		na.Spec.Users[0].KeysFrom = bulk
		na.Spec.ExpiresAt = &end
	})
	testenv.Eventually(t, timeout, "Degraded TooManyKeys", func() error {
		na := &nav1.NodeAccess{}
		must(t, k8sClient.Get(context.Background(), client.ObjectKey{Name: "shrink"}, na))
		if c := meta.FindStatusCondition(na.Status.Conditions, nav1.DegradedCondition); c == nil || c.Reason != nav1.TooManyKeysReason {
			return fmt.Errorf("degraded %+v", c)
		}
		return nil
	})
	must(t, holds(nodes[0], k.blob)())
	testenv.Eventually(t, timeout, "key removed at the earlier expiry", holds(nodes[0]))
	if time.Now().Before(end.Time) {
		t.Fatal("removed before the expiry")
	}
}

// Keys for one account over the grants that select one node are bounded at
// render time: a grant that would take alice's file on a node past the
// bound is refused in status and an Event before any node sees it.
func TestAccountOverflowIsRefusedAtRenderTime(t *testing.T) {
	nodes := startNodes(t, "overflow", "overflow")
	teamNamespace(t, "team-overflow")
	a := nodeAccess("overflow-a", "overflow")
	a.Spec.Users[0].KeysFrom = []nav1.KeySource{bulkSecret(t, "team-overflow", "a", 1000)}
	create(t, a)
	testenv.Eventually(t, timeout, "the first grant Ready", statusIs("overflow-a", 1, 1, 1000, nav1.AllNodesInSyncReason))

	b := nodeAccess("overflow-b", "overflow")
	b.Spec.Users[0].KeysFrom = []nav1.KeySource{bulkSecret(t, "team-overflow", "b1", 800), bulkSecret(t, "team-overflow", "b2", 700)}
	create(t, b)
	testenv.Eventually(t, timeout, "the second refused for alice's bound", func() error {
		na := &nav1.NodeAccess{}
		must(t, k8sClient.Get(context.Background(), client.ObjectKey{Name: "overflow-b"}, na))
		c := meta.FindStatusCondition(na.Status.Conditions, nav1.DegradedCondition)
		if c == nil || c.Reason != nav1.ClusterLimitReason || !strings.Contains(c.Message, "account alice") {
			return fmt.Errorf("degraded %+v", c)
		}
		return nil
	})
	testenv.Eventually(t, timeout, "ClusterLimitExceeded event", hasEvent("overflow-b", nav1.ClusterLimitReason))
	if got := len(nodes[0].host.ManagedKeys("alice")); got != 1000 {
		t.Fatalf("alice holds %d keys, want only the first grant's 1000", got)
	}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: "overflow-b"}, &nav1.RenderedNodeAccess{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the refused grant was rendered for the agents (%v)", err)
	}

	// The bound is per node: the same keys for alice on another pool's
	// nodes take no room from this one's.
	other := startNodes(t, "overflow-other", "overflow-other")
	c := nodeAccess("overflow-c", "overflow-other")
	c.Spec.Users[0].KeysFrom = b.Spec.Users[0].KeysFrom
	create(t, c)
	testenv.Eventually(t, timeout, "the same keys accepted on another pool", statusIs("overflow-c", 1, 1, 1500, nav1.AllNodesInSyncReason))
	if got := len(other[0].host.ManagedKeys("alice")); got != 1500 {
		t.Fatalf("alice holds %d keys on the other pool, want 1500", got)
	}
}

// An error the manager meets reaches status and an Event instead of leaving
// a stale Ready; it recovers by itself once the error is gone. The error is
// real: an admission policy makes the API server refuse the manager's
// write of the rendered grant.
func TestReconcileErrorsReachStatus(t *testing.T) {
	ctx := context.Background()
	startNodes(t, "doomed", "doomed")
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "test-refuse-doomed"},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{"nodeaccess.io"}, APIVersions: []string{"*"}, Resources: []string{"renderednodeaccesses"}},
				},
			}}},
			Validations: []admissionregistrationv1.Validation{{Expression: "object.metadata.name != 'doomed'", Message: "the test refuses this write"}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "test-refuse-doomed"},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: policy.Name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}},
	}
	must(t, k8sClient.Create(ctx, policy))
	must(t, k8sClient.Create(ctx, binding))
	t.Cleanup(func() { _ = k8sClient.Delete(ctx, binding); _ = k8sClient.Delete(ctx, policy) })
	// The policy is in force once it refuses a write of ours.
	testenv.Eventually(t, timeout, "the policy in force", func() error {
		probe := &nav1.RenderedNodeAccess{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "doomed"},
			Spec: nav1.RenderedNodeAccessSpec{NodeAccessName: "doomed", NodeAccessUID: "probe", Hash: "h"}}
		if err := k8sClient.Create(ctx, probe); err == nil {
			_ = k8sClient.Delete(ctx, probe)
			return fmt.Errorf("not yet")
		}
		return nil
	})

	k := newKey(t, "k")
	create(t, nodeAccess("doomed", "doomed", k.line))
	testenv.Eventually(t, timeout, "ReconcileFailed in Ready and Degraded", func() error {
		na := &nav1.NodeAccess{}
		must(t, k8sClient.Get(ctx, client.ObjectKey{Name: "doomed"}, na))
		for _, ct := range []string{nav1.ReadyCondition, nav1.DegradedCondition} {
			c := meta.FindStatusCondition(na.Status.Conditions, ct)
			if c == nil || c.Reason != nav1.ReconcileFailedReason || !strings.Contains(c.Message, "the test refuses this write") {
				return fmt.Errorf("%s %+v", ct, c)
			}
		}
		if na.Status.ObservedGeneration == na.Generation {
			return fmt.Errorf("observedGeneration advanced on a failure")
		}
		return nil
	})
	testenv.Eventually(t, timeout, "ReconcileFailed event", hasEvent("doomed", nav1.ReconcileFailedReason))

	must(t, k8sClient.Delete(ctx, binding))
	testenv.Eventually(t, timeout, "recovered", statusIs("doomed", 1, 1, 1, nav1.AllNodesInSyncReason))
}

// The agent DaemonSet's status changes with every pod; only a change to
// what the manager sets makes it write the DaemonSet again.
func TestAgentDaemonSetIsReappliedOnlyOnDrift(t *testing.T) {
	ctx := context.Background()
	key := client.ObjectKey{Namespace: namespace, Name: agentdaemonset.Name}
	ds := &appsv1.DaemonSet{}
	testenv.Eventually(t, timeout, "DaemonSet created", func() error { return k8sClient.Get(ctx, key, ds) })
	applies := func() int { return writes.matching("PATCH", "daemonsets/"+agentdaemonset.Name) }
	// edit changes the spec and waits for the manager to undo it: once it
	// has, the manager has seen every change to the DaemonSet before it.
	edit := func() {
		must(t, k8sClient.Get(ctx, key, ds))
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
	}
	edit()
	before := applies()
	for i := 1; i <= 5; i++ {
		testenv.Eventually(t, timeout, "updating the DaemonSet's status", func() error {
			if err := k8sClient.Get(ctx, key, ds); err != nil {
				return err
			}
			ds.Status.DesiredNumberScheduled, ds.Status.NumberReady = int32(i), int32(i)
			return k8sClient.Status().Update(ctx, ds)
		})
	}
	edit()
	if n := applies() - before; n != 1 {
		t.Fatalf("the manager wrote the DaemonSet %d times for 5 status changes and 1 edit; want once", n)
	}
}

func ptr[T any](v T) *T { return &v }

// The manager itself puts in place the policy that binds each agent to its
// own node's report, with only its shipped permissions, and puts it back when
// it is deleted or edited: no install, OLM's included, depends on a manual step.
func TestManagerInstallsTheAgentReportPolicy(t *testing.T) {
	ctx := context.Background()
	want, _ := agentdaemonset.ReportPolicy(namespace)
	key := client.ObjectKey{Name: agentdaemonset.ReportPolicyName}
	inPlace := func() error {
		p := &admissionregistrationv1.ValidatingAdmissionPolicy{}
		if err := k8sClient.Get(ctx, key, p); err != nil {
			return err
		}
		if p.Spec.MatchConditions[0].Expression != want.Spec.MatchConditions[0].Expression || len(p.Spec.Validations) != 2 {
			return fmt.Errorf("policy %+v", p.Spec)
		}
		return k8sClient.Get(ctx, key, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{})
	}
	testenv.Eventually(t, timeout, "policy and binding in place", inPlace)

	must(t, k8sClient.Delete(ctx, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: agentdaemonset.ReportPolicyName}}))
	testenv.Eventually(t, timeout, "binding recreated", inPlace)
	p := &admissionregistrationv1.ValidatingAdmissionPolicy{}
	must(t, k8sClient.Get(ctx, key, p))
	p.Spec.MatchConditions[0].Expression = "false"
	must(t, k8sClient.Update(ctx, p))
	testenv.Eventually(t, timeout, "edit undone", inPlace)
}

// The manager adds its finalizer with a patch that fails on a concurrent
// change: when another controller removes its own finalizer between the
// manager's read and its write, the manager's write must not put it back (a
// merge patch of the whole list would; the API server itself refuses new
// finalizers on an object being deleted, which covers the removal). The race
// is provoked for real: the other removal is made just before the manager's
// request reaches the API server.
func TestFinalizerPatchNeverBringsAnotherBack(t *testing.T) {
	ctx := context.Background()
	startNodes(t, "fin", "fin")
	k := newKey(t, "k")
	var raced int
	writes.beforeWrites(func(req *http.Request) {
		if req.Method != http.MethodPatch || !strings.HasSuffix(req.URL.Path, "/nodeaccesses/fin") || raced > 0 {
			return
		}
		raced++
		testenv.Eventually(t, timeout, "the other controller removing its finalizer", func() error {
			got := &nav1.NodeAccess{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: "fin"}, got); err != nil {
				return err
			}
			got.Finalizers = slices.DeleteFunc(got.Finalizers, func(f string) bool { return f == "example.com/keep" })
			return k8sClient.Update(ctx, got)
		})
	})
	t.Cleanup(func() { writes.beforeWrites(nil) })
	na := nodeAccess("fin", "fin", k.line)
	na.Finalizers = []string{"example.com/keep"}
	create(t, na)
	testenv.Eventually(t, timeout, "Ready", statusIs("fin", 1, 1, 1, nav1.AllNodesInSyncReason))
	got := &nav1.NodeAccess{}
	must(t, k8sClient.Get(ctx, client.ObjectKey{Name: "fin"}, got))
	if raced != 1 {
		t.Fatalf("the race was provoked %d times; the test proved nothing", raced)
	}
	if !slices.Equal(got.Finalizers, []string{controllers.Finalizer}) {
		t.Fatalf("finalizers %v: another controller's removed finalizer came back", got.Finalizers)
	}
}

// A report's grant list is atomic, so the API server takes a report that
// lists a grant twice (no agent writes one). Such a node counts as in
// sync only when both entries say the same rendering is applied, a
// failing entry's reason stands, and a revocation is proven only when
// both entries say no key is left.
func TestAGrantListedTwiceCountsOnlyWhenBothEntriesAgree(t *testing.T) {
	const name, node = "twice", "twice-0"
	ctx := context.Background()
	must(t, k8sClient.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{"pool": name}}}))
	t.Cleanup(func() {
		_ = k8sClient.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}})
		_ = k8sClient.Delete(ctx, &nav1.NodeAccessReport{ObjectMeta: metav1.ObjectMeta{Name: node}})
	})
	create(t, nodeAccess(name, name, newKey(t, "k").line))
	var g nav1.GrantReport
	testenv.Eventually(t, timeout, "rendered", func() error {
		na, rendered := &nav1.NodeAccess{}, &nav1.RenderedNodeAccess{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, na); err != nil {
			return err
		}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, rendered); err != nil {
			return err
		}
		g = nav1.GrantReport{Name: name, UID: string(na.UID), Generation: na.Generation, Hash: rendered.Spec.Hash, Keys: 1, Applied: true, Accounts: []string{"alice"}}
		return nil
	})
	report := func(grants ...nav1.GrantReport) {
		t.Helper()
		r := &nav1.NodeAccessReport{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: node}, r); err != nil {
			r = &nav1.NodeAccessReport{ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: nav1.NodeAccessReportSpec{NodeName: node}}
			must(t, k8sClient.Create(ctx, r))
		}
		r.Status.Grants = grants
		must(t, k8sClient.Status().Update(ctx, r))
	}
	status := func(inSync int32, failing string) func() error {
		return func() error {
			na := &nav1.NodeAccess{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, na); err != nil {
				return err
			}
			st := na.Status
			got := ""
			for _, f := range st.FailingNodes {
				got += f.Node + ":" + f.Reason
			}
			if st.ObservedGeneration != na.Generation || st.SelectedNodes != 1 || st.NodesInSync != inSync || got != failing {
				return fmt.Errorf("%d of %d in sync, failing %q; want %d, failing %q", st.NodesInSync, st.SelectedNodes, got, inSync, failing)
			}
			return nil
		}
	}

	stale, failing := g, g
	stale.Hash = "an-older-rendering"
	failing.Applied, failing.Keys, failing.Reason = false, 0, nav1.ChangedDuringEditReason
	// Each pair in both orders, back in sync in between: neither the
	// first entry nor the last may decide.
	for _, pair := range [][2]nav1.GrantReport{{g, stale}, {stale, g}, {g, failing}, {failing, g}} {
		report(g)
		testenv.Eventually(t, timeout, "in sync with one entry", status(1, ""))
		report(pair[0], pair[1])
		if pair[0].Applied && pair[1].Applied {
			testenv.Eventually(t, timeout, "not in sync when the entries disagree on the rendering", status(0, ""))
		} else {
			testenv.Eventually(t, timeout, "not in sync, the failing entry's reason shown", status(0, node+":"+nav1.ChangedDuringEditReason))
		}
	}

	// The revocation: both entries must say the revoked rendering is
	// applied with no key left.
	na := &nav1.NodeAccess{}
	must(t, k8sClient.Get(ctx, client.ObjectKey{Name: name}, na))
	must(t, k8sClient.Delete(ctx, na))
	var revoked nav1.GrantReport
	testenv.Eventually(t, timeout, "the revocation rendered", func() error {
		rendered := &nav1.RenderedNodeAccess{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, rendered); err != nil {
			return err
		}
		if rendered.Spec.Hash == g.Hash {
			return errors.New("still the grant's rendering")
		}
		revoked = g
		revoked.Hash, revoked.Keys = rendered.Spec.Hash, 0
		return nil
	})
	held := revoked
	held.Keys = 1
	for _, pair := range [][2]nav1.GrantReport{{revoked, held}, {held, revoked}} {
		report(pair[0], pair[1])
		testenv.Eventually(t, timeout, "Revoking, the node failing as still holding a key", func() error {
			got := &nav1.NodeAccess{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, got); err != nil {
				return err
			}
			if len(got.Status.FailingNodes) != 1 || got.Status.FailingNodes[0].Node != node || got.Status.FailingNodes[0].Reason != nav1.RevocationFailedReason {
				return fmt.Errorf("failing %+v", got.Status.FailingNodes)
			}
			return nil
		})
		if err := gone(name)(); err == nil {
			t.Fatal("released while one entry says a key is left")
		}
		// Between the two orders, a report the manager reads as pending
		// for another reason, so that the next one is seen anew.
		waiting := revoked
		waiting.Hash = "an-older-rendering"
		report(waiting)
		testenv.Eventually(t, timeout, "Revoking, waiting for the node", func() error {
			got := &nav1.NodeAccess{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, got); err != nil {
				return err
			}
			if len(got.Status.FailingNodes) != 1 || got.Status.FailingNodes[0].Reason != nav1.WaitingForNodesReason {
				return fmt.Errorf("failing %+v", got.Status.FailingNodes)
			}
			return nil
		})
	}
	report(revoked, revoked)
	testenv.Eventually(t, timeout, "released once both entries say no key is left", gone(name))
}

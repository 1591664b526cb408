package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/render"
)

// reconcileDelete revokes a deleted NodeAccess. Its rendered grant becomes
// a revocation (render.Revoked: suspended, no key), so every agent removes
// the keys; the object stays (Terminating) until every node the grant
// selects has reported that revocation applied, and no node reports the
// grant's keys as held or possibly held: what a node cannot prove is never
// counted as gone. When RevocationTimeout passes first, the NodeAccess is
// released anyway (so CRD deletion and upgrades are not blocked forever),
// with a RevocationUnconfirmed Warning naming the nodes; their agents keep
// listing the grant and keep trying to remove its keys.
func (r *NodeAccessReconciler) reconcileDelete(ctx context.Context, s *scope) (ctrl.Result, error) {
	na := s.na
	if !controllerutil.ContainsFinalizer(na, Finalizer) {
		return ctrl.Result{}, nil
	}
	last, err := r.lastRendered(ctx, na)
	if err != nil {
		return ctrl.Result{}, err
	}
	var lastSpec *nav1.RenderedNodeAccessSpec
	if last != nil {
		lastSpec = &last.Spec
	}
	revoked := render.Revoked(na, lastSpec)
	if last == nil || last.Spec.Hash != revoked.Hash || len(last.OwnerReferences) > 0 {
		// Not owned by the NodeAccess: a foreground deletion's garbage
		// collection must not take the revocation away before it is proven.
		if err := r.writeRendered(ctx, na, &revoked, false); err != nil {
			return ctrl.Result{}, err
		}
		r.Recorder.Eventf(na, nil, corev1.EventTypeNormal, nav1.RevokingReason, "Revoke",
			"Asked every node to remove the keys of %d accounts", len(revoked.Users))
	}

	obs, err := r.observe(ctx, na)
	if err != nil {
		return ctrl.Result{}, err
	}
	pending := pendingRevocation(&revoked, obs)
	waited := s.now.Sub(na.DeletionTimestamp.Time)
	if len(pending) > 0 && waited < r.RevocationTimeout {
		st := revokingStatus(na, pending, s.now)
		s.status = &st
		// Node reports wake this up; the requeue bounds the wait.
		return ctrl.Result{RequeueAfter: r.RevocationTimeout - waited}, nil
	}

	if len(pending) > 0 {
		revocationsUnconfirmed.Inc()
		r.Recorder.Eventf(na, nil, corev1.EventTypeWarning, nav1.RevocationUnconfirmedEventReason, "Revoke",
			"Released after %s with %d nodes that have not proven the keys gone: %s; their agents keep trying to remove them",
			r.RevocationTimeout.Round(time.Second), len(pending), describePending(pending, 10))
	} else {
		r.Recorder.Eventf(na, nil, corev1.EventTypeNormal, nav1.RevokedEventReason, "Revoke", "Every node proved the keys gone")
	}
	gone := &nav1.RenderedNodeAccess{ObjectMeta: metav1.ObjectMeta{Name: na.Name, Namespace: r.Namespace}}
	if err := client.IgnoreNotFound(r.Client.Delete(ctx, gone)); err != nil {
		return ctrl.Result{}, fmt.Errorf("deleting rendered grant: %w", err)
	}
	r.ledger.forget(na.Name)
	r.forgetMetrics(na.Name, string(na.UID))
	patch := client.MergeFromWithOptions(na.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(na, Finalizer)
	if err := r.Client.Patch(ctx, na, patch); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(fmt.Errorf("removing finalizer: %w", err))
	}
	return ctrl.Result{}, nil
}

// pendingRevocation lists the nodes that have not proven a deleted grant's
// keys gone, each with why: a node the revocation selects must report its
// hash applied with no key; any node that reports the grant otherwise
// (keys held, possibly held, failing) is pending whatever it selects.
// Nodes that no longer exist took their keys with them.
func pendingRevocation(revoked *nav1.RenderedNodeAccessSpec, obs observation) map[string]nav1.NodeFailure {
	selector, selErr := metav1.LabelSelectorAsSelector(&revoked.NodeSelector)
	pending := map[string]nav1.NodeFailure{}
	for _, n := range obs.nodes {
		g, reported := obs.reports[n.name]
		selected := selErr == nil && selector.Matches(labels.Set(n.labels))
		switch {
		case reported && (g.Keys > 0 || !g.Applied):
			f := nav1.NodeFailure{Node: n.name, Reason: g.Reason, Message: g.Message}
			if f.Reason == "" {
				f.Reason, f.Message = nav1.RevocationFailedReason, fmt.Sprintf("reports %d keys", g.Keys)
			}
			pending[n.name] = f
		case selected && (!reported || g.Hash != revoked.Hash):
			pending[n.name] = nav1.NodeFailure{Node: n.name, Reason: nav1.WaitingForNodesReason,
				Message: "has not yet reported the keys removed"}
		}
	}
	return pending
}

// revokingStatus is the status of a NodeAccess waiting for nodes to prove
// its keys gone; the nodes are listed in failingNodes, not in messages.
func revokingStatus(na *nav1.NodeAccess, pending map[string]nav1.NodeFailure, now time.Time) nav1.NodeAccessStatus {
	st := *na.Status.DeepCopy()
	st.FailingNodes = nil
	for _, name := range sortedNames(pending) {
		if len(st.FailingNodes) == nav1.MaxFailingNodes {
			break
		}
		f := pending[name]
		f.Message = truncate(f.Message, 1024)
		st.FailingNodes = append(st.FailingNodes, f)
	}
	stamp := metav1.NewTime(now)
	msg := fmt.Sprintf("waiting for %d nodes to prove the keys removed; see status.failingNodes", len(pending))
	for _, c := range []metav1.Condition{
		{Type: nav1.ProgressingCondition, Status: metav1.ConditionTrue, Reason: nav1.RevokingReason, Message: msg},
		{Type: nav1.ReadyCondition, Status: metav1.ConditionFalse, Reason: nav1.RevokingReason, Message: "the NodeAccess is being deleted; " + msg},
	} {
		c.ObservedGeneration, c.LastTransitionTime = na.Generation, stamp
		meta.SetStatusCondition(&st.Conditions, c)
	}
	return st
}

func sortedNames(pending map[string]nav1.NodeFailure) []string {
	names := make([]string, 0, len(pending))
	for n := range pending {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// describePending names at most n nodes with their reasons.
func describePending(pending map[string]nav1.NodeFailure, n int) string {
	names := sortedNames(pending)
	var parts []string
	for i, name := range names {
		if i == n {
			parts = append(parts, fmt.Sprintf("and %d more", len(names)-n))
			break
		}
		parts = append(parts, fmt.Sprintf("%s (%s)", name, pending[name].Reason))
	}
	return strings.Join(parts, ", ")
}

// summarize names at most n items.
func summarize(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:n], ", ") + fmt.Sprintf(" and %d more", len(items)-n)
}

// deleteOrphan deletes the rendered grant named like a NodeAccess that no
// longer exists: a revocation the NodeAccess does not own is left when the
// NodeAccess was released by hand (its finalizer removed). The NodeAccess
// is looked up on the API server itself, not in the cache, before.
func (r *NodeAccessReconciler) deleteOrphan(ctx context.Context, name string) error {
	rendered := &nav1.RenderedNodeAccess{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: name}, rendered); err != nil {
		return client.IgnoreNotFound(err)
	}
	live := &nav1.NodeAccess{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Name: name}, live)
	switch {
	case err == nil && string(live.UID) == rendered.Spec.NodeAccessUID:
		return nil
	case err != nil && !apierrors.IsNotFound(err):
		return fmt.Errorf("reading NodeAccess %s: %w", name, err)
	case err == nil:
		return nil // a new NodeAccess of that name: its reconcile replaces it
	}
	if err := client.IgnoreNotFound(r.Client.Delete(ctx, rendered)); err != nil {
		return fmt.Errorf("deleting rendered grant %s: %w", name, err)
	}
	r.ledger.forget(name)
	return nil
}

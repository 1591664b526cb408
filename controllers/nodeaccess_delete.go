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
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// reconcileDelete revokes a deleted NodeAccess: its rendered grant goes at
// once, so every agent removes the keys; the object stays (Terminating) until
// no live node reports holding them, or RevocationTimeout passes. A node that
// is down then revokes when its agent returns, since agents apply the full
// desired state; a node that is gone takes its report with it.
func (r *NodeAccessReconciler) reconcileDelete(ctx context.Context, na *nav1.NodeAccess) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(na, Finalizer) {
		return ctrl.Result{}, nil
	}
	// Delete the rendered grant: whenever the cache holds it, and once in
	// any case (one written just before the deletion may not be in the
	// cache yet). Later passes, which every node report wakes, send nothing.
	rendered := &nav1.RenderedNodeAccess{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: na.Name}, rendered)
	_, sent := r.deletesSent.Load(na.UID)
	switch {
	case err != nil && !apierrors.IsNotFound(err):
		return ctrl.Result{}, fmt.Errorf("reading rendered grant: %w", err)
	case err == nil && !rendered.DeletionTimestamp.IsZero():
	case err == nil || !sent:
		gone := &nav1.RenderedNodeAccess{ObjectMeta: metav1.ObjectMeta{Name: na.Name, Namespace: r.Namespace}}
		if err := client.IgnoreNotFound(r.Client.Delete(ctx, gone)); err != nil {
			return ctrl.Result{}, fmt.Errorf("deleting rendered grant: %w", err)
		}
		r.deletesSent.Store(na.UID, struct{}{})
	}

	obs, err := r.observe(ctx, na)
	if err != nil {
		return ctrl.Result{}, err
	}
	holding := make([]string, 0, len(obs.reports))
	for node, g := range obs.reports {
		if g.Keys > 0 || !g.Applied {
			holding = append(holding, node)
		}
	}
	sort.Strings(holding)

	waited := r.now().Sub(na.DeletionTimestamp.Time)
	if len(holding) > 0 && waited < r.RevocationTimeout {
		st := *na.Status.DeepCopy()
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: nav1.ProgressingCondition, Status: metav1.ConditionTrue, Reason: nav1.RevokingReason,
			Message:            fmt.Sprintf("waiting for %d nodes to remove the keys: %s", len(holding), summarize(holding, 10)),
			ObservedGeneration: na.Generation,
		})
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: nav1.ReadyCondition, Status: metav1.ConditionFalse, Reason: nav1.RevokingReason,
			Message: "the NodeAccess is being deleted", ObservedGeneration: na.Generation,
		})
		if err := r.patchStatus(ctx, na, st); err != nil {
			return ctrl.Result{}, err
		}
		// Node reports wake this up; the requeue bounds the wait.
		return ctrl.Result{RequeueAfter: r.RevocationTimeout - waited}, nil
	}

	if len(holding) > 0 {
		r.Recorder.Eventf(na, nil, corev1.EventTypeWarning, "RevocationTimedOut", "Revoke",
			"Gave up waiting after %s for %d nodes: %s; they revoke the keys when their agent returns",
			r.RevocationTimeout.Round(time.Second), len(holding), summarize(holding, 10))
	} else {
		r.Recorder.Eventf(na, nil, corev1.EventTypeNormal, "Revoked", "Revoke", "Every node removed the keys")
	}
	r.forgetMetrics(na.Name, string(na.UID))
	r.deletesSent.Delete(na.UID)
	patch := client.MergeFrom(na.DeepCopy())
	controllerutil.RemoveFinalizer(na, Finalizer)
	if err := r.Client.Patch(ctx, na, patch); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(fmt.Errorf("removing finalizer: %w", err))
	}
	return ctrl.Result{}, nil
}

// summarize names at most n items.
func summarize(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:n], ", ") + fmt.Sprintf(" and %d more", len(items)-n)
}

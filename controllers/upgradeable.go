package controllers

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	operatorsv2 "github.com/operator-framework/api/pkg/operators/v2"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/agentdaemonset"
)

// Reasons of the Upgradeable condition the manager sets on its OperatorCondition.
const (
	UpgradeableReason            = "NothingInFlight"
	RevocationInProgressReason   = "RevocationInProgress"
	AgentRolloutInProgressReason = "AgentRolloutInProgress"
)

// upgradeableResync rechecks the condition now and then, in case someone
// else rewrote it; every change that matters arrives as an event.
const upgradeableResync = 10 * time.Minute

// UpgradeableReconciler tells OLM, through the OperatorCondition OLM created
// for this operator's CSV (named by $OPERATOR_CONDITION_NAME), when replacing
// the operator would be unsafe: Upgradeable is False while a deleted
// NodeAccess waits for nodes to confirm that they removed its keys (a new
// manager would finish the revocation, but the operator that started it
// should), and while the agent DaemonSet is mid-rollout (an upgrade would
// start a second rollout over a half-finished one). OLM keeps the next CSV
// Pending until it turns True again.
//
// OLM grants the operator get, update and patch on that one object, not
// list or watch, so it is read through the API reader and never cached.
type UpgradeableReconciler struct {
	Client    client.Client
	APIReader client.Reader
	// Namespace is the operator's namespace, where the OperatorCondition and
	// the agent DaemonSet live.
	Namespace string
	// ConditionName is the OperatorCondition's name.
	ConditionName string
}

// SetupWithManager registers the controller: one event at start, then any
// NodeAccess entering or leaving deletion and any change of the DaemonSet.
func (r *UpgradeableReconciler) SetupWithManager(mgr ctrl.Manager) error {
	req := ctrl.Request{NamespacedName: types.NamespacedName{Namespace: r.Namespace, Name: r.ConditionName}}
	toCondition := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []ctrl.Request {
		return []ctrl.Request{req}
	})
	start := make(chan event.GenericEvent, 1)
	start <- event.GenericEvent{Object: &operatorsv2.OperatorCondition{}}
	deletionChanged := predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !e.ObjectOld.GetDeletionTimestamp().Equal(e.ObjectNew.GetDeletionTimestamp()) ||
				!slices.Equal(e.ObjectOld.GetFinalizers(), e.ObjectNew.GetFinalizers())
		},
	}
	isAgent := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.Namespace && o.GetName() == agentdaemonset.Name
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("upgradeable").
		WatchesRawSource(source.Channel(start, toCondition)).
		Watches(&nav1.NodeAccess{}, toCondition, builder.WithPredicates(deletionChanged)).
		Watches(&appsv1.DaemonSet{}, toCondition, builder.WithPredicates(isAgent)).
		Complete(r)
}

// Reconcile writes the Upgradeable condition into the OperatorCondition's
// spec, where OLM reads what the operator says, when it differs.
func (r *UpgradeableReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	want, err := r.upgradeable(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	oc := &operatorsv2.OperatorCondition{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: r.ConditionName}, oc); err != nil {
		if apierrors.IsNotFound(err) {
			ctrl.LoggerFrom(ctx).Info("OperatorCondition not found; OLM creates it with the CSV", "name", r.ConditionName)
			return ctrl.Result{RequeueAfter: time.Minute}, nil
		}
		return ctrl.Result{}, fmt.Errorf("reading OperatorCondition: %w", err)
	}
	if have := meta.FindStatusCondition(oc.Spec.Conditions, operatorsv2.Upgradeable); have != nil &&
		have.Status == want.Status && have.Reason == want.Reason && have.Message == want.Message {
		return ctrl.Result{RequeueAfter: upgradeableResync}, nil
	}
	patch := client.MergeFromWithOptions(oc.DeepCopy(), client.MergeFromWithOptimisticLock{})
	meta.SetStatusCondition(&oc.Spec.Conditions, want)
	if err := r.Client.Patch(ctx, oc, patch); err != nil {
		return ctrl.Result{}, fmt.Errorf("setting Upgradeable=%s on OperatorCondition: %w", want.Status, err)
	}
	ctrl.LoggerFrom(ctx).Info("Told OLM", "upgradeable", want.Status, "reason", want.Reason, "message", want.Message)
	return ctrl.Result{RequeueAfter: upgradeableResync}, nil
}

// upgradeable decides the condition from the cache.
func (r *UpgradeableReconciler) upgradeable(ctx context.Context) (metav1.Condition, error) {
	list := &nav1.NodeAccessList{}
	if err := r.Client.List(ctx, list); err != nil {
		return metav1.Condition{}, fmt.Errorf("listing NodeAccess: %w", err)
	}
	var revoking []string
	for i := range list.Items {
		na := &list.Items[i]
		if na.DeletionTimestamp != nil && slices.Contains(na.Finalizers, Finalizer) {
			revoking = append(revoking, na.Name)
		}
	}
	if len(revoking) > 0 {
		sort.Strings(revoking)
		return metav1.Condition{
			Type: operatorsv2.Upgradeable, Status: metav1.ConditionFalse, Reason: RevocationInProgressReason,
			Message: fmt.Sprintf("waiting for nodes to confirm the revocation of %d deleted NodeAccess: %s", len(revoking), summarize(revoking, 5)),
		}, nil
	}

	ds := &appsv1.DaemonSet{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: agentdaemonset.Name}, ds)
	if client.IgnoreNotFound(err) != nil {
		return metav1.Condition{}, fmt.Errorf("reading agent DaemonSet: %w", err)
	}
	// Mid-rollout means pods of an older template are still scheduled; pods
	// that are merely unavailable (a node down) do not hold an upgrade back.
	if err == nil && (ds.Status.ObservedGeneration < ds.Generation || ds.Status.UpdatedNumberScheduled < ds.Status.DesiredNumberScheduled) {
		return metav1.Condition{
			Type: operatorsv2.Upgradeable, Status: metav1.ConditionFalse, Reason: AgentRolloutInProgressReason,
			Message: fmt.Sprintf("the agent DaemonSet is rolling out: %d of %d nodes run the current agent",
				ds.Status.UpdatedNumberScheduled, ds.Status.DesiredNumberScheduled),
		}, nil
	}
	return metav1.Condition{
		Type: operatorsv2.Upgradeable, Status: metav1.ConditionTrue, Reason: UpgradeableReason,
		Message: "no revocation or agent rollout in flight",
	}, nil
}

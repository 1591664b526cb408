package controllers

import (
	"context"
	"fmt"
	"sync/atomic"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/nodeaccess/nodeaccess-operator/internal/agentdaemonset"
)

// +kubebuilder:rbac:groups=apps,namespace=nodeaccess-system,resources=daemonsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,namespace=nodeaccess-system,resources=deployments,verbs=get;list;watch

// AgentDaemonSetReconciler keeps the agent DaemonSet as agentdaemonset
// renders it: created at start, repaired when edited or deleted. It is owned
// by the operator's Deployment, so uninstalling the operator removes it.
type AgentDaemonSetReconciler struct {
	Client  client.Client
	Options agentdaemonset.Options
	// OwnerDeployment is the operator Deployment's name in Options.Namespace;
	// when it does not exist (the manager runs outside the cluster), the
	// DaemonSet has no owner.
	OwnerDeployment string

	// written is the resourceVersion of the DaemonSet as the manager last
	// wrote it: an event for exactly that object is the manager's own write.
	written atomic.Value
}

// SetupWithManager registers the controller; one event at start creates the DaemonSet.
func (r *AgentDaemonSetReconciler) SetupWithManager(mgr ctrl.Manager) error {
	start := make(chan event.GenericEvent, 1)
	start <- event.GenericEvent{Object: &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: agentdaemonset.Name, Namespace: r.Options.Namespace}}}
	isAgent := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.Options.Namespace && o.GetName() == agentdaemonset.Name
	})
	// Only a change to what the manager sets (its spec, labels and
	// annotations) or a deletion calls for a repair; the DaemonSet's status
	// changes at every pod start and must not cause a write.
	drift := predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}, predicate.AnnotationChangedPredicate{})
	return ctrl.NewControllerManagedBy(mgr).
		Named("agentdaemonset").
		For(&appsv1.DaemonSet{}, builder.WithPredicates(isAgent, drift)).
		WatchesRawSource(source.Channel(start, &handler.EnqueueRequestForObject{})).
		Complete(r)
}

// Reconcile applies the desired DaemonSet; server-side apply makes this a
// no-op when nothing differs, and undoes edits to the fields the manager sets.
func (r *AgentDaemonSetReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if req.Name != agentdaemonset.Name || req.Namespace != r.Options.Namespace {
		return ctrl.Result{}, nil
	}
	current := &appsv1.DaemonSet{}
	err := r.Client.Get(ctx, req.NamespacedName, current)
	if client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("reading agent daemonset: %w", err)
	}
	if err == nil && r.written.Load() == current.ResourceVersion {
		return ctrl.Result{}, nil // the manager's own write: nothing drifted since
	}
	ds := agentdaemonset.DaemonSet(r.Options)
	if r.OwnerDeployment != "" {
		owner := &appsv1.Deployment{}
		err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Options.Namespace, Name: r.OwnerDeployment}, owner)
		switch {
		case err == nil:
			ds.OwnerReferences = []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "Deployment", Name: owner.Name, UID: owner.UID,
				Controller: ptrTo(true), BlockOwnerDeletion: ptrTo(true),
			}}
		case !apierrors.IsNotFound(err):
			return ctrl.Result{}, fmt.Errorf("reading operator deployment: %w", err)
		}
	}
	applied, err := applyObjectResult(ctx, r.Client, ds)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("applying agent daemonset: %w", err)
	}
	r.written.Store(applied.GetResourceVersion())
	return ctrl.Result{}, nil
}

var _ reconcile.Reconciler = &AgentDaemonSetReconciler{}

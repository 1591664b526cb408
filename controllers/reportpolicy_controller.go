package controllers

import (
	"context"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// Creating an admission policy cannot be limited by name in RBAC: the
// manager may create any ValidatingAdmissionPolicy and binding, which can
// only deny requests, never grant anything; it may change or delete only
// its own. docs/security.md weighs it.
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingadmissionpolicies;validatingadmissionpolicybindings,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingadmissionpolicies;validatingadmissionpolicybindings,resourceNames=nodeaccess-agent-own-report,verbs=update;patch;delete

// ReportPolicyReconciler keeps the admission policy that lets each agent
// write only its own node's report (agentdaemonset.ReportPolicy) in place:
// created at start, repaired when edited or deleted. A registry+v1 bundle
// cannot carry such a policy, so every install, OLM's too, gets it from the
// manager without a manual step.
type ReportPolicyReconciler struct {
	Client client.Client
	// Namespace is the operator's, where the agents' service account is.
	Namespace string
}

// SetupWithManager registers the controller; one event at start creates the policy.
func (r *ReportPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	start := make(chan event.GenericEvent, 1)
	start <- event.GenericEvent{Object: &admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: agentdaemonset.ReportPolicyName}}}
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetName() == agentdaemonset.ReportPolicyName })
	return ctrl.NewControllerManagedBy(mgr).
		Named("reportpolicy").
		For(&admissionregistrationv1.ValidatingAdmissionPolicy{}, builder.WithPredicates(ours)).
		Watches(&admissionregistrationv1.ValidatingAdmissionPolicyBinding{}, &handler.EnqueueRequestForObject{}, builder.WithPredicates(ours)).
		WatchesRawSource(source.Channel(start, &handler.EnqueueRequestForObject{})).
		Complete(r)
}

// Reconcile applies the policy and its binding; server-side apply makes it a
// no-op when nothing differs, and undoes edits to what the manager sets.
func (r *ReportPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if req.Name != agentdaemonset.ReportPolicyName {
		return ctrl.Result{}, nil
	}
	policy, binding := agentdaemonset.ReportPolicy(r.Namespace)
	if err := applyObject(ctx, r.Client, policy); err != nil {
		return ctrl.Result{}, fmt.Errorf("applying the agents' report policy: %w", err)
	}
	if err := applyObject(ctx, r.Client, binding); err != nil {
		return ctrl.Result{}, fmt.Errorf("applying the agents' report policy binding: %w", err)
	}
	return ctrl.Result{}, nil
}

var _ reconcile.Reconciler = &ReportPolicyReconciler{}

package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/nodeaccess/nodeaccess-operator/internal/nodefilter"
)

// DefaultStatusWritesPerSecond is the manager's --status-writes-per-second.
const DefaultStatusWritesPerSecond = 25

// DefaultReportWritesPerSecond is the manager's --report-writes-per-second.
const DefaultReportWritesPerSecond = 50

// pacingFieldOwner owns the report interval of the filter's ConfigMap; the
// vocabulary's writes (FieldOwner) own its keys, so neither removes the other.
const pacingFieldOwner = "nodeaccess-manager-report-pacing"

// ReportPacingReconciler publishes the report interval for the cluster's
// size (nodefilter.NextReportInterval) in the ConfigMap of the filter's
// vocabulary: under sustained churn the nodes' report writes stay within
// WritesPerSecond whatever the number of nodes. It writes only when a node
// count crosses a step, and puts the value back when the ConfigMap is
// deleted (a withdrawn vocabulary) or edited.
type ReportPacingReconciler struct {
	Client    client.Client
	APIReader client.Reader
	Namespace string
	// WritesPerSecond is the budget of the nodes' report writes; zero or
	// less publishes nothing (agents keep their own --report-interval).
	WritesPerSecond float64
}

var pacingRequest = reconcile.Request{NamespacedName: types.NamespacedName{Name: "report-pacing"}}

// SetupWithManager registers the controller: a Node added or deleted, and
// any change of the ConfigMap, lead to one reconcile.
func (r *ReportPacingReconciler) SetupWithManager(mgr ctrl.Manager) error {
	toPacing := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{pacingRequest}
	})
	// A Node's updates (its status, every few seconds) do not change the count.
	nodeCount := predicate.Funcs{UpdateFunc: func(event.UpdateEvent) bool { return false }}
	return ctrl.NewControllerManagedBy(mgr).
		Named("reportpacing").
		Watches(&corev1.Node{}, toPacing, builder.OnlyMetadata, builder.WithPredicates(nodeCount)).
		Watches(&corev1.ConfigMap{}, toPacing, builder.OnlyMetadata, builder.WithPredicates(filterConfigMapOnly(r.Namespace))).
		Complete(r)
}

// Reconcile publishes the interval for the number of Nodes when it differs
// from the one in the ConfigMap.
func (r *ReportPacingReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	nodes := &metav1.PartialObjectMetadataList{}
	nodes.SetGroupVersionKind(nodeListGVK)
	if err := r.Client.List(ctx, nodes, client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, fmt.Errorf("listing nodes: %w", err)
	}
	cm := &corev1.ConfigMap{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: nodefilter.ConfigMapName}, cm); client.IgnoreNotFound(err) != nil {
		return reconcile.Result{}, fmt.Errorf("reading %s: %w", nodefilter.ConfigMapName, err)
	}
	field, present := cm.Data[nodefilter.ReportIntervalField]
	published, valid := nodefilter.ParseReportInterval(field)
	if !valid {
		published = 0
	}
	want := nodefilter.NextReportInterval(published, len(nodes.Items), r.WritesPerSecond)
	if want == 0 {
		return reconcile.Result{}, r.withdraw(ctx, present)
	}
	if valid && want == published {
		return reconcile.Result{}, nil
	}
	if err := r.apply(ctx, map[string]string{nodefilter.ReportIntervalField: nodefilter.FormatReportInterval(want)}); err != nil {
		return reconcile.Result{}, err
	}
	ctrl.LoggerFrom(ctx).Info("Published the agents' report interval", "reportInterval", want.String(), "nodes", len(nodes.Items), "reportWritesPerSecond", r.WritesPerSecond)
	return reconcile.Result{}, nil
}

// withdraw removes the interval this manager published, if any (no budget).
func (r *ReportPacingReconciler) withdraw(ctx context.Context, present bool) error {
	if !present {
		return nil
	}
	return r.apply(ctx, nil)
}

// apply writes the pacing fields of the ConfigMap, and only those.
func (r *ReportPacingReconciler) apply(ctx context.Context, data map[string]string) error {
	cm := &corev1.ConfigMap{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: r.Namespace, Name: nodefilter.ConfigMapName,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "nodeaccess-operator"},
		},
		Data: data,
	}
	if err := applyAs(ctx, r.Client, cm, pacingFieldOwner); err != nil {
		return fmt.Errorf("publishing the agents' report interval: %w", err)
	}
	return nil
}

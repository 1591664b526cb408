package controllers

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/agentdaemonset"
)

// DefaultReportStaleAfter is how old a node report's heartbeat may be before
// the node counts as without report: agents renew it every 10 minutes
// (their --heartbeat), so this is two missed heartbeats and some slack.
const DefaultReportStaleAfter = 30 * time.Minute

// AgentMetricsReconciler exports whether the agents are there: the agent
// DaemonSet's desired and ready pods, and the Linux nodes (those the
// DaemonSet selects) whose agent is not reporting. Every event collapses
// into one request; a pass reads the cache only.
type AgentMetricsReconciler struct {
	Client client.Client
	// Namespace is the operator's namespace, where the agent DaemonSet lives.
	Namespace string
	// StaleAfter is how old a report's heartbeat may be.
	StaleAfter time.Duration
	// Delay folds bursts of events (a thousand reports) into one pass.
	Delay time.Duration

	now func() time.Time
}

// agentMetricsRequest is the one request of the controller.
var agentMetricsRequest = reconcile.Request{NamespacedName: types.NamespacedName{Name: "agents"}}

// SetupWithManager registers the controller: one pass at start, then on
// any change of the agent DaemonSet (its status too), of a node report, or
// of a Node's existence or labels.
func (r *AgentMetricsReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.now == nil {
		r.now = time.Now
	}
	if r.StaleAfter <= 0 {
		r.StaleAfter = DefaultReportStaleAfter
	}
	start := make(chan event.GenericEvent, 1)
	start <- event.GenericEvent{Object: &appsv1.DaemonSet{}}
	isAgent := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.Namespace && o.GetName() == agentdaemonset.Name
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("agentmetrics").
		WatchesRawSource(source.Channel(start, r.enqueue())).
		Watches(&appsv1.DaemonSet{}, r.enqueue(), builder.WithPredicates(isAgent)).
		Watches(&nav1.NodeAccessReport{}, r.enqueue()).
		Watches(&corev1.Node{}, r.enqueue(), builder.OnlyMetadata, builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Complete(r)
}

// enqueue maps every event to the one request, after Delay.
func (r *AgentMetricsReconciler) enqueue() handler.EventHandler {
	add := func(q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		q.AddAfter(agentMetricsRequest, r.Delay)
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, _ event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q)
		},
		UpdateFunc: func(_ context.Context, _ event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q)
		},
		DeleteFunc: func(_ context.Context, _ event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q)
		},
		GenericFunc: func(_ context.Context, _ event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q)
		},
	}
}

// Reconcile sets the agent gauges, and comes back when the next report
// would turn stale.
func (r *AgentMetricsReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	ds := &appsv1.DaemonSet{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: agentdaemonset.Name}, ds)
	if client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("reading agent daemonset: %w", err)
	}
	// Without the DaemonSet nothing is desired; the nodes without report say the rest.
	agentsDesired.Set(float64(ds.Status.DesiredNumberScheduled))
	agentsReady.Set(float64(ds.Status.NumberReady))

	nodes := &metav1.PartialObjectMetadataList{}
	nodes.SetGroupVersionKind(nodeListGVK)
	if err := r.Client.List(ctx, nodes, client.MatchingLabels{corev1.LabelOSStable: "linux"}, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing nodes: %w", err)
	}
	var reports nav1.NodeAccessReportList
	if err := r.Client.List(ctx, &reports, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing node reports: %w", err)
	}
	count := countNodesWithoutReport(nodes.Items, reports.Items, r.now(), r.StaleAfter)
	nodesWithoutReport.WithLabelValues(noReportReason).Set(float64(count.missing))
	nodesWithoutReport.WithLabelValues(staleReportReason).Set(float64(count.stale))
	return ctrl.Result{RequeueAfter: count.nextStale}, nil
}

// reportCount is what countNodesWithoutReport found.
type reportCount struct {
	// missing counts nodes without a report of the current Node object.
	missing int
	// stale counts nodes whose report's heartbeat is older than the bound.
	stale int
	// nextStale is how long until the freshest-expiring report turns stale
	// (at most the bound itself).
	nextStale time.Duration
}

// countNodesWithoutReport counts the nodes whose agent is not reporting. A
// report counts only when it is owned by the current Node of that name (a
// report left by an earlier Node of the same name says nothing of this
// one), and only as fresh as the later of its heartbeat and last change; a
// report with neither is stale.
func countNodesWithoutReport(nodes []metav1.PartialObjectMetadata, reports []nav1.NodeAccessReport, now time.Time, staleAfter time.Duration) reportCount {
	byName := make(map[string]*nav1.NodeAccessReport, len(reports))
	for i := range reports {
		byName[reports[i].Name] = &reports[i]
	}
	c := reportCount{nextStale: staleAfter}
	for _, n := range nodes {
		rep := byName[n.Name]
		if rep == nil || !ownedBy(rep, n.UID) {
			c.missing++
			continue
		}
		var last time.Time
		for _, t := range []*metav1.Time{rep.Status.HeartbeatTime, rep.Status.LastChangeTime} {
			if t != nil && t.After(last) {
				last = t.Time
			}
		}
		left := last.Add(staleAfter).Sub(now)
		if last.IsZero() || left <= 0 {
			c.stale++
			continue
		}
		if left < c.nextStale {
			c.nextStale = left
		}
	}
	c.nextStale += time.Second // past the instant, not at it
	return c
}

func ownedBy(o metav1.Object, uid types.UID) bool {
	for _, ref := range o.GetOwnerReferences() {
		if ref.UID == uid {
			return true
		}
	}
	return false
}

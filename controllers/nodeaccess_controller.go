// Package controllers holds the manager's reconcilers. They are thin: read,
// call the pure logic of internal/render and the status functions, apply,
// report.
package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/nodefilter"
	"github.com/nodeaccess/nodeaccess-operator/internal/render"
)

const (
	// FieldOwner is the server-side apply field manager of the manager's writes.
	FieldOwner = "nodeaccess-manager"
	// Finalizer holds a deleted NodeAccess until its keys are gone from the nodes.
	Finalizer = "nodeaccess.io/revoke-keys"
	// sourcesIndex indexes NodeAccess objects by the key sources they name.
	sourcesIndex = "nodeaccess.io/sources"
	// reportedIndex indexes node reports by the UIDs of the grants they report.
	reportedIndex = "nodeaccess.io/reported-grants"
	// workers reconcile different NodeAccess objects at once: a grant's
	// change does not wait behind the status batches of others.
	workers = 16
	// defaultForbiddenRecheck is how often a NodeAccess naming a Secret the
	// manager may not read looks again (the namespace may have allowed it since).
	defaultForbiddenRecheck = 30 * time.Second
	// overLimitRecheck is how often a NodeAccess refused by the cluster's
	// limits looks again (other grants may have made room).
	overLimitRecheck = time.Minute
)

// +kubebuilder:rbac:groups=nodeaccess.io,resources=nodeaccesses,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=nodeaccess.io,resources=nodeaccesses/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=nodeaccess.io,resources=nodeaccesses/finalizers,verbs=update
// +kubebuilder:rbac:groups=nodeaccess.io,resources=nodeaccessreports,verbs=get;list;watch
// +kubebuilder:rbac:groups=nodeaccess.io,namespace=nodeaccess-system,resources=renderednodeaccesses,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// NodeAccessReconciler renders each NodeAccess for the agents and reports
// what the nodes applied.
type NodeAccessReconciler struct {
	Client client.Client
	// APIReader reads key sources directly: Secret and ConfigMap data is never cached.
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	// Namespace is the operator's namespace, where rendered grants live.
	Namespace string
	// Render holds the key policy and whether root may be granted.
	Render render.Options
	// Limits bound what the agents hold over all grants.
	Limits render.ClusterLimits
	// RevocationTimeout bounds how long a deleted NodeAccess waits for nodes
	// to prove its keys gone before it is released anyway.
	RevocationTimeout time.Duration
	// StatusDelay batches node reports: a burst of reports within it causes one status write.
	StatusDelay time.Duration
	// StatusWritesPerSecond is the budget of the report-driven status
	// writes over all NodeAccess: each one's reports are folded over
	// NodeAccess count / budget when that is longer than StatusDelay (see
	// statusDelay). Zero or less: StatusDelay alone.
	StatusWritesPerSecond float64
	// ForbiddenRecheck is how often a NodeAccess naming a Secret the manager
	// may not read looks again.
	ForbiddenRecheck time.Duration

	now         func() time.Time
	propagation propagation
	// logins counts and announces the logins the nodes report.
	logins *loginObserver
	// secrets watches Secrets in the namespaces that allowed the manager.
	secrets *secretWatches
	// ledger adds up what every rendered grant costs the agents.
	ledger ledger
	// filter chooses the labels of the agents' watch filter.
	filter *nodeFilter
	// grants is the number of NodeAccess at the last count (countGrants).
	grants atomic.Int64
}

// maxStatusDelay bounds the paced status delay: the cluster limit of
// 1,000 NodeAccess at the default budget.
const maxStatusDelay = 40 * time.Second

// statusDelay is how long the reports concerning one NodeAccess are folded
// into one reconcile and status write: StatusDelay, or, with more
// NodeAccess than StatusWritesPerSecond × StatusDelay, NodeAccess count /
// StatusWritesPerSecond (at most maxStatusDelay). Under churn every report
// moves the in-sync count of each NodeAccess selecting its node, so each
// NodeAccess's status was written once per StatusDelay: at 1,000 nodes
// and 100 NodeAccess the manager wrote about as many statuses as the
// nodes wrote reports, each costing the API server as much as one.
// Changes of a NodeAccess itself are not delayed.
func (r *NodeAccessReconciler) statusDelay() time.Duration {
	d := r.StatusDelay
	if r.StatusWritesPerSecond > 0 {
		paced := time.Duration(float64(r.grants.Load()) / r.StatusWritesPerSecond * float64(time.Second))
		d = max(d, min(paced, maxStatusDelay))
	}
	return d
}

// scope is what one reconcile of one NodeAccess read and decided.
type scope struct {
	na  *nav1.NodeAccess
	now time.Time
	// status is the status to write, once a phase computed it.
	status *nav1.NodeAccessStatus
}

// SetupWithManager registers the controller and its watches.
func (r *NodeAccessReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.now == nil {
		r.now = time.Now
	}
	if r.Limits == (render.ClusterLimits{}) {
		r.Limits = render.DefaultClusterLimits
	}
	if r.ForbiddenRecheck <= 0 {
		r.ForbiddenRecheck = defaultForbiddenRecheck
	}
	if r.filter == nil {
		r.filter = &nodeFilter{reader: r.APIReader, namespace: r.Namespace}
	}
	r.logins = newLoginObserver(r.now())
	ctx := context.Background()
	if err := mgr.GetFieldIndexer().IndexField(ctx, &nav1.NodeAccess{}, sourcesIndex, func(o client.Object) []string {
		var keys []string
		for _, ref := range render.Sources(o.(*nav1.NodeAccess)) {
			keys = append(keys, sourceIndexKey(ref.Kind, ref.Namespace, ref.Name))
		}
		return keys
	}); err != nil {
		return fmt.Errorf("indexing key sources: %w", err)
	}
	// A status pass reads the reports naming its grant, not every report.
	if err := mgr.GetFieldIndexer().IndexField(ctx, &nav1.NodeAccessReport{}, reportedIndex, func(o client.Object) []string {
		grants := o.(*nav1.NodeAccessReport).Status.Grants
		uids := make([]string, 0, len(grants))
		for _, g := range grants {
			uids = append(uids, g.UID)
		}
		return uids
	}); err != nil {
		return fmt.Errorf("indexing node reports: %w", err)
	}
	secrets, err := newSecretWatches(mgr, r.forSource(render.SourceSecret), r.ForbiddenRecheck)
	if err != nil {
		return err
	}
	r.secrets = secrets
	r.ledger = ledger{limits: r.Limits, client: r.Client, namespace: r.Namespace, filter: r.filter}
	if err := mgr.Add(secrets); err != nil {
		return fmt.Errorf("adding the Secret watches: %w", err)
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("nodeaccess").
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		// Every change at once, but status-only updates (our own status
		// writes) after StatusDelay: the cache may lag behind a write, and
		// that later reconcile corrects a status computed from stale data,
		// without each write during a burst of reports causing another.
		For(&nav1.NodeAccess{}, builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool { return !statusOnly(e) },
		})).
		Watches(&nav1.NodeAccess{}, r.delayed(self), builder.WithPredicates(predicate.Funcs{
			CreateFunc:  func(event.CreateEvent) bool { return false },
			DeleteFunc:  func(event.DeleteEvent) bool { return false },
			GenericFunc: func(event.GenericEvent) bool { return false },
			UpdateFunc:  statusOnly,
		})).
		Watches(&nav1.RenderedNodeAccess{}, handler.EnqueueRequestsFromMapFunc(renderedGrant)).
		WatchesRawSource(source.Channel(secrets.events, &handler.EnqueueRequestForObject{})).
		Watches(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(r.forSource(render.SourceConfigMap)), builder.OnlyMetadata).
		// Node heartbeats are not label changes: only these reach the queue.
		Watches(&corev1.Node{}, r.delayed(r.allNodeAccesses), builder.OnlyMetadata,
			builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Watches(&nav1.NodeAccessReport{}, r.delayed(r.reportedGrants)).
		Complete(r)
}

// Reconcile follows one skeleton: get, then delete or normal, with the
// status written by a deferred function whatever happened, so that an
// error reaches status and an Event instead of leaving a stale Ready.
func (r *NodeAccessReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	na := &nav1.NodeAccess{}
	if err := r.Client.Get(ctx, req.NamespacedName, na); err != nil {
		if apierrors.IsNotFound(err) {
			r.forgetMetrics(req.Name, "") // gone without this manager releasing it
			return ctrl.Result{}, r.deleteOrphan(ctx, req.Name)
		}
		return ctrl.Result{}, err
	}
	defer r.countGrants(ctx)
	s := &scope{na: na, now: r.now()}
	defer func() {
		if err := r.writeStatus(ctx, s, retErr); err != nil && retErr == nil {
			retErr = err
		}
	}()
	if !na.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, s)
	}
	if err := r.addFinalizer(ctx, na); err != nil {
		return ctrl.Result{}, err
	}
	return r.reconcileNormal(ctx, s)
}

// addFinalizer adds the finalizer with a patch that fails on a concurrent
// change, rather than one that replaces the whole list.
func (r *NodeAccessReconciler) addFinalizer(ctx context.Context, na *nav1.NodeAccess) error {
	if controllerutil.ContainsFinalizer(na, Finalizer) {
		return nil
	}
	patch := client.MergeFromWithOptions(na.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.AddFinalizer(na, Finalizer)
	if err := r.Client.Patch(ctx, na, patch); err != nil {
		return fmt.Errorf("adding finalizer: %w", err)
	}
	return nil
}

// reconcileNormal renders the grant, applies it when it changed, and
// computes the status.
func (r *NodeAccessReconciler) reconcileNormal(ctx context.Context, s *scope) (ctrl.Result, error) {
	na := s.na
	sources, err := r.readSources(ctx, na)
	if err != nil {
		return ctrl.Result{}, err
	}
	last, err := r.lastRendered(ctx, na)
	if err != nil {
		return ctrl.Result{}, err
	}
	var lastSpec *nav1.RenderedNodeAccessSpec
	if last != nil {
		lastSpec = &last.Spec
	}
	res := render.NodeAccess(na, sources, lastSpec, r.Render, s.now)
	overLimit, err := r.ledger.admit(ctx, na.Name, &res, lastSpec)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !res.Narrowed || last != nil {
		if err := r.applyRendered(ctx, na, last, &res.Spec); err != nil {
			return ctrl.Result{}, err
		}
	}
	obs, err := r.observe(ctx, na)
	if err != nil {
		return ctrl.Result{}, err
	}
	status := computeStatus(na, &res, overLimit, obs, s.now)
	s.status = &status
	r.logins.observe(r.Recorder, na, obs.logins, s.now)
	r.recordMetrics(na.Name, string(na.UID), res.Spec.Hash, status.SelectedNodes, status.NodesInSync, status.KeysGranted, len(status.RefusedKeys), s.now)

	var result ctrl.Result
	if res.NextExpiry != nil {
		result.RequeueAfter = res.NextExpiry.Sub(s.now) + 10*time.Millisecond
	}
	recheck := func(after time.Duration) {
		if result.RequeueAfter == 0 || result.RequeueAfter > after {
			result.RequeueAfter = after
		}
	}
	if len(res.Forbidden) > 0 {
		recheck(r.ForbiddenRecheck)
	}
	if overLimit != nil {
		recheck(overLimitRecheck)
	}
	return result, nil
}

// lastRendered returns the rendered grant the agents hold now, or nil.
func (r *NodeAccessReconciler) lastRendered(ctx context.Context, na *nav1.NodeAccess) (*nav1.RenderedNodeAccess, error) {
	rendered := &nav1.RenderedNodeAccess{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: na.Name}, rendered)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading rendered grant: %w", err)
	case rendered.Spec.NodeAccessUID != string(na.UID):
		return nil, nil // left by an earlier NodeAccess of the same name
	}
	return rendered, nil
}

// applyRendered writes the rendered grant only when its content or source
// generation changed: one write per NodeAccess change, whatever the number of nodes.
func (r *NodeAccessReconciler) applyRendered(ctx context.Context, na *nav1.NodeAccess, existing *nav1.RenderedNodeAccess, spec *nav1.RenderedNodeAccessSpec) error {
	if existing != nil && existing.Spec.Hash == spec.Hash && existing.Spec.Generation == spec.Generation &&
		existing.Spec.NodeAccessUID == spec.NodeAccessUID && len(existing.OwnerReferences) > 0 {
		return nil
	}
	if err := r.writeRendered(ctx, na, spec, true); err != nil {
		return err
	}
	r.propagation.rendered(string(na.UID), spec.Hash, r.now())
	keys := 0
	for _, u := range spec.Users {
		keys += len(u.Keys)
	}
	r.Recorder.Eventf(na, nil, corev1.EventTypeNormal, nav1.RenderedEventReason, "Render",
		"Rendered generation %d for the agents: %d accounts, %d keys", na.Generation, len(spec.Users), keys)
	return nil
}

// writeRendered server-side applies the rendered grant, owned by the
// NodeAccess (garbage-collected with it) or not (a revocation in progress),
// with the labels of the agents' watch filter.
func (r *NodeAccessReconciler) writeRendered(ctx context.Context, na *nav1.NodeAccess, spec *nav1.RenderedNodeAccessSpec, owned bool) error {
	var owners []metav1.OwnerReference
	if owned {
		owners = []metav1.OwnerReference{{
			APIVersion: nav1.GroupVersion.String(), Kind: "NodeAccess", Name: na.Name, UID: na.UID,
			Controller: ptrTo(true), BlockOwnerDeletion: ptrTo(true),
		}}
	}
	// Read from the API server, not the cache, and only while a
	// vocabulary is published: whether it carries the filter's marker then
	// decides whether this write may carry it.
	unmarked := func() (bool, error) {
		current := &nav1.RenderedNodeAccess{}
		err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: na.Name}, current)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("reading rendered grant: %w", err)
		}
		return current.Labels[nodefilter.Marker] == "", nil
	}
	labels, done, err := r.filter.labelsFor(ctx, &spec.NodeSelector, unmarked)
	if err != nil {
		return err
	}
	defer done()
	if err := applyObject(ctx, r.Client, renderedObject(na.Name, r.Namespace, spec, owners, labels)); err != nil {
		return fmt.Errorf("writing rendered grant: %w", err)
	}
	return nil
}

// renderedObject is the rendered grant as the manager applies it.
func renderedObject(name, namespace string, spec *nav1.RenderedNodeAccessSpec, owners []metav1.OwnerReference, filterLabels map[string]string) *nav1.RenderedNodeAccess {
	labels := map[string]string{"app.kubernetes.io/managed-by": "nodeaccess-operator"}
	maps.Copy(labels, filterLabels)
	return &nav1.RenderedNodeAccess{
		TypeMeta: metav1.TypeMeta{APIVersion: nav1.GroupVersion.String(), Kind: "RenderedNodeAccess"},
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: namespace, Labels: labels, OwnerReferences: owners,
		},
		Spec: *spec,
	}
}

// renderedGrant maps a rendered grant to its NodeAccess, by name: a
// revocation in progress has no owner reference.
func renderedGrant(_ context.Context, o client.Object) []reconcile.Request {
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: o.GetName()}}}
}

// forSource maps a changed Secret or ConfigMap to the NodeAccess objects naming it.
func (r *NodeAccessReconciler) forSource(kind render.SourceKind) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		return r.requestsFor(ctx, client.MatchingFields{sourcesIndex: sourceIndexKey(kind, o.GetNamespace(), o.GetName())})
	}
}

// allNodeAccesses maps a node event to every NodeAccess.
func (r *NodeAccessReconciler) allNodeAccesses(ctx context.Context, _ client.Object) []reconcile.Request {
	return r.requestsFor(ctx)
}

// requestsFor lists the NodeAccess objects matching opts, as requests.
func (r *NodeAccessReconciler) requestsFor(ctx context.Context, opts ...client.ListOption) []reconcile.Request {
	var list nav1.NodeAccessList
	if err := r.Client.List(ctx, &list, append(opts, client.UnsafeDisableDeepCopy)...); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing NodeAccess objects to reconcile")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, na := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: na.Name}})
	}
	return reqs
}

// reportedGrants maps a node report to the NodeAccess objects it mentions.
func (r *NodeAccessReconciler) reportedGrants(_ context.Context, o client.Object) []reconcile.Request {
	report, ok := o.(*nav1.NodeAccessReport)
	if !ok {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(report.Status.Grants))
	for _, g := range report.Status.Grants {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: g.Name}})
	}
	return reqs
}

// statusOnly is true for an update that changed nothing but the status.
func statusOnly(e event.UpdateEvent) bool {
	o, n := e.ObjectOld, e.ObjectNew
	return o.GetGeneration() == n.GetGeneration() &&
		o.GetDeletionTimestamp().Equal(n.GetDeletionTimestamp()) &&
		slices.Equal(o.GetFinalizers(), n.GetFinalizers()) &&
		maps.Equal(o.GetLabels(), n.GetLabels()) &&
		maps.Equal(o.GetAnnotations(), n.GetAnnotations())
}

// self maps an object to its own request.
func self(_ context.Context, o client.Object) []reconcile.Request {
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: o.GetName()}}}
}

// delayed enqueues the mapped requests after statusDelay, at low priority.
// Requests for the same object within that window collapse into one, so a
// thousand node reports arriving together cost one reconcile and one status
// write; and a change of a NodeAccess's spec, queued at the default
// priority, is reconciled (and reaches the nodes) before the status work of
// every other grant that waits in the queue.
func (r *NodeAccessReconciler) delayed(mapFn handler.MapFunc) handler.EventHandler {
	add := func(ctx context.Context, o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		pq, prioritized := q.(priorityqueue.PriorityQueue[reconcile.Request])
		for _, req := range mapFn(ctx, o) {
			if prioritized {
				pq.AddWithOpts(priorityqueue.AddOpts{After: r.statusDelay(), Priority: ptrTo(handler.LowPriority)}, req)
			} else {
				q.AddAfter(req, r.statusDelay())
			}
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.Object, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.ObjectOld, q)
			add(ctx, e.ObjectNew, q)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.Object, q)
		},
	}
}

// countGrants sets the number of NodeAccess objects from the cache, and
// stops watching Secrets in namespaces no NodeAccess names any more.
func (r *NodeAccessReconciler) countGrants(ctx context.Context) {
	var list nav1.NodeAccessList
	if err := r.Client.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return
	}
	grantsTotal.Set(float64(len(list.Items)))
	r.grants.Store(int64(len(list.Items)))
	named := map[string]bool{}
	for i := range list.Items {
		for _, ref := range render.Sources(&list.Items[i]) {
			if ref.Kind == render.SourceSecret {
				named[ref.Namespace] = true
			}
		}
	}
	r.secrets.keepOnly(named)
}

func sourceIndexKey(kind render.SourceKind, namespace, name string) string {
	return string(kind) + "/" + namespace + "/" + name
}

func ptrTo[T any](v T) *T { return &v }

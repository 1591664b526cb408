package controllers

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/nodefilter"
)

// +kubebuilder:rbac:groups="",namespace=nodeaccess-system,resources=configmaps,verbs=create;update;patch;delete

// DefaultFilterSwitchGrace is how long the manager leaves agents to drop
// the vocabulary before it relabels the rendered grants it had left
// unlabelled (see NodeFilterReconciler).
const DefaultFilterSwitchGrace = 30 * time.Second

// DefaultFilterSettleDelay is how long new vocabulary keys wait before they
// are published.
const DefaultFilterSettleDelay = 10 * time.Second

// nodeFilter is the vocabulary of the rendered grants' filter labels, as
// the manager's writes use it. Every write of a rendered grant holds a read
// lock from choosing its labels until the API server answered, so once
// setPending returns, every later write carries the pending keys.
type nodeFilter struct {
	reader    client.Reader
	namespace string

	mu     sync.RWMutex
	loaded bool
	// published are the keys of the ConfigMap agents read; pending are the
	// keys about to be published; retired are the keys the last publish
	// dropped, still written until the next one, since agents that have
	// not yet seen the new ConfigMap still filter by them.
	published, pending, retired []string
	// mine is what this manager published last (valid when mineKnown): a
	// ConfigMap found different was changed by someone else.
	mine      []string
	mineKnown bool
}

// labelsFor returns, with the read lock held until done is called, the
// filter labels of a rendered grant of sel. A grant a manager wrote without
// the Marker keeps none while a vocabulary is published: adding the Marker
// then would move it from one of the agents' watches to the other, and an
// agent could act between the two events. unmarked says whether the grant
// exists without the Marker; it is asked only then, under the lock.
func (f *nodeFilter) labelsFor(ctx context.Context, sel *metav1.LabelSelector, unmarked func() (bool, error)) (map[string]string, func(), error) {
	if err := f.load(ctx); err != nil {
		return nil, nil, err
	}
	f.mu.RLock()
	if len(f.published) > 0 && unmarked != nil {
		legacy, err := unmarked()
		if err != nil {
			f.mu.RUnlock()
			return nil, nil, err
		}
		if legacy {
			return map[string]string{}, f.mu.RUnlock, nil
		}
	}
	return nodefilter.Labels(sel, f.labelKeys()), f.mu.RUnlock, nil
}

// labelKeys are the keys every write labels: published, pending and
// retired. Call with the lock held.
func (f *nodeFilter) labelKeys() []string {
	return union(union(f.published, f.pending), f.retired)
}

// keys are the vocabulary keys agents may filter by: published or pending.
func (f *nodeFilter) keys(ctx context.Context) ([]string, error) {
	if err := f.load(ctx); err != nil {
		return nil, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.labelKeys(), nil
}

// load reads the published vocabulary once, before the first write.
func (f *nodeFilter) load(ctx context.Context) error {
	f.mu.RLock()
	loaded := f.loaded
	f.mu.RUnlock()
	if loaded {
		return nil
	}
	keys, _, err := f.read(ctx)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.loaded {
		f.published, f.loaded = keys, true
	}
	return nil
}

// read returns the published vocabulary straight from the API server.
func (f *nodeFilter) read(ctx context.Context) ([]string, bool, error) {
	cm := &corev1.ConfigMap{}
	err := f.reader.Get(ctx, types.NamespacedName{Namespace: f.namespace, Name: nodefilter.ConfigMapName}, cm)
	if apierrors.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading the node filter vocabulary: %w", err)
	}
	return nodefilter.ParseKeys(cm.Data[nodefilter.KeysField]), true, nil
}

// publishedKeys are the keys this manager knows published.
func (f *nodeFilter) publishedKeys() []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.Clone(f.published)
}

// settled reports whether keys are published by this manager, and no other
// keys pending.
func (f *nodeFilter) settled(keys []string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.loaded && f.pending == nil && slices.Equal(f.published, keys)
}

func (f *nodeFilter) setPending(keys []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending = keys
}

// observe records the vocabulary read from the API server, leaving what is
// pending as it is.
func (f *nodeFilter) observe(keys []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.published, f.loaded = keys, true
}

// setPublished records a vocabulary this manager wrote: the keys it drops
// are retired (still written) until the next publish.
func (f *nodeFilter) setPublished(keys []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.retired = slices.DeleteFunc(slices.Clone(f.published), func(k string) bool { return slices.Contains(keys, k) })
	f.published, f.pending, f.loaded = keys, nil, true
	f.mine, f.mineKnown = slices.Clone(keys), true
}

// tampered reports whether published, read from the API server, is not
// what this manager last published, and what that was.
func (f *nodeFilter) tampered(published []string) ([]string, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.Clone(f.mine), f.mineKnown && !slices.Equal(published, f.mine)
}

// filterConfigMapOnly passes the events of the filter's ConfigMap
// (nodefilter.ConfigMapName in namespace) and of no other.
func filterConfigMapOnly(namespace string) predicate.Predicate {
	return predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == namespace && o.GetName() == nodefilter.ConfigMapName
	})
}

func union(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// NodeFilterReconciler publishes the vocabulary of the agents' watch filter
// (package nodefilter) in the ConfigMap nodefilter.ConfigMapName: the node
// label keys the NodeAccess selectors constrain to one value. It publishes
// a vocabulary only once every labelled rendered grant carries its labels,
// so that no agent's watch misses a grant that selects its node:
//
//  1. the new keys become pending: every write from then on carries them;
//  2. every labelled rendered grant, read from the API server, that lacks
//     them is written again with them;
//  3. the ConfigMap is written.
//
// Rendered grants without the Marker (written by a manager that predates the
// filter) reach every agent through the agents' second watch. They are
// labelled only while no vocabulary is published: when some exist under a
// published vocabulary, the vocabulary is withdrawn first, and they are
// labelled SwitchGrace later, once agents watch everything again.
type NodeFilterReconciler struct {
	Client    client.Client
	APIReader client.Reader
	Namespace string
	// SwitchGrace is how long agents are given to see a withdrawn vocabulary.
	SwitchGrace time.Duration
	// SettleDelay is how long new keys must be called for before they are
	// published.
	SettleDelay time.Duration

	filter *nodeFilter
	// withdrawnAt is when this manager withdrew the vocabulary.
	withdrawnAt time.Time
	// growing is the larger vocabulary waiting for SettleDelay since growingSince.
	growing      []string
	growingSince time.Time
	now          func() time.Time
}

var (
	// filterRequest is the one request of the controller, and
	// filterChangedRequest the same when the ConfigMap itself changed:
	// then the API server's copy is read whatever this manager published.
	filterRequest        = reconcile.Request{NamespacedName: types.NamespacedName{Name: "vocabulary"}}
	filterChangedRequest = reconcile.Request{NamespacedName: types.NamespacedName{Name: "vocabulary-changed"}}
)

// SetupWithManager registers the controller: every NodeAccess event and
// every change of the ConfigMap lead to one reconcile of the vocabulary.
func (r *NodeFilterReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.now == nil {
		r.now = time.Now
	}
	if r.SwitchGrace <= 0 {
		r.SwitchGrace = DefaultFilterSwitchGrace
	}
	if r.SettleDelay <= 0 {
		r.SettleDelay = DefaultFilterSettleDelay
	}
	toVocabulary := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{filterRequest}
	})
	changed := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{filterChangedRequest}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("nodefilter").
		Watches(&nav1.NodeAccess{}, toVocabulary, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.ConfigMap{}, changed, builder.OnlyMetadata, builder.WithPredicates(filterConfigMapOnly(r.Namespace))).
		// A rendered grant written without the labels (by an earlier manager).
		Watches(&nav1.RenderedNodeAccess{}, toVocabulary, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetLabels()[nodefilter.Marker] == ""
		}))).
		Complete(r)
}

// Reconcile brings the published vocabulary to what the selectors need.
// When this manager published it and its cache shows every rendered grant
// labelled for it, that costs no request.
func (r *NodeFilterReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	list := &nav1.NodeAccessList{}
	if err := r.Client.List(ctx, list); err != nil {
		return ctrl.Result{}, err
	}
	selectors := make([]*metav1.LabelSelector, 0, len(list.Items))
	for i := range list.Items {
		selectors = append(selectors, &list.Items[i].Spec.NodeSelector)
	}
	needed := nodefilter.Vocabulary(selectors)
	desired := nodefilter.Keep(needed, r.filter.publishedKeys())
	if req != filterChangedRequest && r.filter.settled(desired) {
		cached := &nav1.RenderedNodeAccessList{}
		if err := r.Client.List(ctx, cached, client.InNamespace(r.Namespace)); err != nil {
			return ctrl.Result{}, err
		}
		if !slices.ContainsFunc(cached.Items, func(g nav1.RenderedNodeAccess) bool {
			return !nodefilter.Labelled(g.Labels, &g.Spec.NodeSelector, desired)
		}) {
			return ctrl.Result{}, nil
		}
	}

	published, exists, err := r.filter.read(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	if mine, changed := r.filter.tampered(published); changed {
		// Written by someone else: every rendered grant carries this
		// manager's keys, so they are put back as they were.
		log.Info("The node filter vocabulary was changed by someone else; putting it back", "found", published, "labelKeys", mine)
		return ctrl.Result{}, r.publish(ctx, mine)
	}
	r.filter.observe(published)
	desired = nodefilter.Keep(needed, published)
	// New keys wait until the selectors have called for them for
	// SettleDelay: the first grant of a new key reaches every agent anyway
	// (unfiltered on that key), and the agents' switch to the new
	// vocabulary, a list of their grants each, then does not compete with
	// its delivery, and several new keys make one switch.
	if grows := slices.ContainsFunc(desired, func(k string) bool { return !slices.Contains(published, k) }); grows {
		if !slices.Equal(r.growing, desired) {
			r.growing, r.growingSince = desired, r.now()
		}
		if wait := r.SettleDelay - r.now().Sub(r.growingSince); wait > 0 {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
	}
	// Pending before the list: every write that ends after this carries
	// the keys, and every write that ended before is in the list.
	r.filter.setPending(desired)
	rendered := &nav1.RenderedNodeAccessList{}
	if err := r.APIReader.List(ctx, rendered, client.InNamespace(r.Namespace)); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing rendered grants: %w", err)
	}
	unmarked := 0
	for i := range rendered.Items {
		if rendered.Items[i].Labels[nodefilter.Marker] == "" {
			unmarked++
		}
	}
	if unmarked > 0 && len(published) > 0 {
		log.Info("Withdrawing the node filter vocabulary to label rendered grants written without it", "grants", unmarked)
		r.withdrawnAt = r.now()
		return ctrl.Result{RequeueAfter: r.SwitchGrace}, r.publish(ctx, nil)
	}
	if unmarked > 0 {
		if wait := r.SwitchGrace - r.now().Sub(r.withdrawnAt); wait > 0 {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
	}

	relabelled := 0
	for i := range rendered.Items {
		g := &rendered.Items[i]
		if nodefilter.Labelled(g.Labels, &g.Spec.NodeSelector, desired) {
			continue
		}
		if err := r.relabel(ctx, g); err != nil {
			return ctrl.Result{}, err
		}
		relabelled++
	}
	if relabelled > 0 {
		// Published on the next pass, once a fresh list shows them all labelled.
		log.V(1).Info("Labelled rendered grants for the node filter", "grants", relabelled)
		return ctrl.Result{Requeue: true}, nil
	}
	if slices.Equal(published, desired) && (exists || len(desired) == 0) {
		r.filter.setPublished(desired)
		return ctrl.Result{}, nil
	}
	if err := r.publish(ctx, desired); err != nil {
		return ctrl.Result{}, err
	}
	log.Info("Published the node filter vocabulary", "labelKeys", desired)
	return ctrl.Result{}, nil
}

// relabel writes a rendered grant again, unchanged but for its filter
// labels, provided nobody changed it since it was read.
func (r *NodeFilterReconciler) relabel(ctx context.Context, g *nav1.RenderedNodeAccess) error {
	labels, done, err := r.filter.labelsFor(ctx, &g.Spec.NodeSelector, nil)
	if err != nil {
		return err
	}
	defer done()
	obj := renderedObject(g.Name, r.Namespace, &g.Spec, g.OwnerReferences, labels)
	obj.ResourceVersion = g.ResourceVersion
	if err := applyObject(ctx, r.Client, obj); err != nil {
		return fmt.Errorf("labelling rendered grant %s: %w", g.Name, err)
	}
	return nil
}

// publish writes the vocabulary; an empty one deletes the ConfigMap, and
// agents then watch every rendered grant.
func (r *NodeFilterReconciler) publish(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: nodefilter.ConfigMapName}}
		if err := r.Client.Delete(ctx, cm); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("withdrawing the node filter vocabulary: %w", err)
		}
		r.filter.setPublished(nil)
		return nil
	}
	cm := &corev1.ConfigMap{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: r.Namespace, Name: nodefilter.ConfigMapName,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "nodeaccess-operator"},
		},
		Data: map[string]string{nodefilter.KeysField: nodefilter.FormatKeys(keys)},
	}
	if err := applyObject(ctx, r.Client, cm); err != nil {
		return fmt.Errorf("publishing the node filter vocabulary: %w", err)
	}
	r.filter.setPublished(keys)
	return nil
}

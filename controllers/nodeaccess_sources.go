package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	authorizationclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/render"
)

// +kubebuilder:rbac:groups=authorization.k8s.io,resources=selfsubjectaccessreviews,verbs=create

// readSources reads the content of every key source straight from the API
// server. A missing object or data key is left out of the map; a Secret in
// a namespace that has not allowed the manager to read its Secrets, or any
// source the API server refuses to show it, is marked forbidden.
func (r *NodeAccessReconciler) readSources(ctx context.Context, na *nav1.NodeAccess) (map[render.SourceRef]render.Source, error) {
	out := map[render.SourceRef]render.Source{}
	for _, ref := range render.Sources(na) {
		key := types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}
		var obj client.Object
		switch ref.Kind {
		case render.SourceSecret:
			allowed, err := r.secrets.allowed(ctx, ref.Namespace)
			if err != nil {
				return nil, fmt.Errorf("checking whether namespace %s allows reading its Secrets: %w", ref.Namespace, err)
			}
			if !allowed {
				out[ref] = render.Source{Forbidden: true}
				continue
			}
			obj = &corev1.Secret{}
		case render.SourceConfigMap:
			obj = &corev1.ConfigMap{}
		default:
			continue
		}
		err := r.APIReader.Get(ctx, key, obj)
		switch {
		case apierrors.IsNotFound(err):
			continue
		case apierrors.IsForbidden(err):
			out[ref] = render.Source{Forbidden: true}
			continue
		case err != nil:
			return nil, fmt.Errorf("reading %s: %w", ref, err)
		}
		switch o := obj.(type) {
		case *corev1.Secret:
			if v, ok := o.Data[ref.Key]; ok {
				out[ref] = render.Source{Content: string(v)}
			}
		case *corev1.ConfigMap:
			if v, ok := o.Data[ref.Key]; ok {
				out[ref] = render.Source{Content: v}
			} else if b, ok := o.BinaryData[ref.Key]; ok {
				out[ref] = render.Source{Content: string(b)}
			}
		}
	}
	return out, nil
}

var secretsGVR = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// secretWatches gives the manager Secrets only where a namespace allowed
// it. The manager holds no cluster-wide right on Secrets: a namespace opts
// in by binding the shipped nodeaccess-key-source-reader ClusterRole to the
// manager's account with a RoleBinding. For each namespace a NodeAccess
// names, it asks the API server whether the manager may get, list and watch
// Secrets there (a SelfSubjectAccessReview, which needs no right), and if so
// runs a metadata-only informer on that namespace's Secrets, whose events
// reconcile the NodeAccess objects naming them (a rotated Secret reaches
// the nodes without any change to the NodeAccess). Secret data is never
// cached: readSources reads it when a NodeAccess needs it.
type secretWatches struct {
	metadata metadata.Interface
	reviews  authorizationclient.SelfSubjectAccessReviewInterface
	mapFn    handler.MapFunc
	// events carries the NodeAccess objects to reconcile.
	events chan event.GenericEvent

	// recheck is how long a namespace's refusal is believed.
	recheck time.Duration

	mu      sync.Mutex
	ctx     context.Context
	watched map[string]context.CancelFunc
	// denied holds when each namespace last refused the manager.
	denied map[string]time.Time
}

func newSecretWatches(mgr ctrl.Manager, mapFn handler.MapFunc, recheck time.Duration) (*secretWatches, error) {
	md, err := metadata.NewForConfig(mgr.GetConfig())
	if err != nil {
		return nil, fmt.Errorf("building the metadata client: %w", err)
	}
	authz, err := authorizationclient.NewForConfig(mgr.GetConfig())
	if err != nil {
		return nil, fmt.Errorf("building the authorization client: %w", err)
	}
	return &secretWatches{
		metadata: md, reviews: authz.SelfSubjectAccessReviews(), mapFn: mapFn,
		events: make(chan event.GenericEvent, 1024), recheck: recheck,
		watched: map[string]context.CancelFunc{}, denied: map[string]time.Time{},
	}, nil
}

// Start holds the manager's context for the informers, until it ends.
func (w *secretWatches) Start(ctx context.Context) error {
	w.mu.Lock()
	w.ctx = ctx
	w.mu.Unlock()
	<-ctx.Done()
	return nil
}

// allowed says whether the manager may read Secrets in namespace, and from
// then on watches them there. A refusal is believed for w.recheck.
func (w *secretWatches) allowed(ctx context.Context, namespace string) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.watched[namespace]; ok {
		return true, nil
	}
	if at, ok := w.denied[namespace]; ok && time.Since(at) < w.recheck {
		return false, nil
	}
	if w.ctx == nil {
		return false, errors.New("the Secret watches have not started")
	}
	for _, verb := range []string{"get", "list", "watch"} {
		review, err := w.reviews.Create(ctx, &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: namespace, Verb: verb, Resource: "secrets"},
		}}, metav1.CreateOptions{})
		if err != nil {
			return false, err
		}
		if !review.Status.Allowed {
			w.denied[namespace] = time.Now()
			return false, nil
		}
	}
	delete(w.denied, namespace)
	inf := metadatainformer.NewFilteredMetadataInformer(w.metadata, secretsGVR, namespace, 0, cache.Indexers{}, nil).Informer()
	notify := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if o, ok := obj.(*metav1.PartialObjectMetadata); ok {
			for _, req := range w.mapFn(w.ctx, o) {
				w.events <- event.GenericEvent{Object: &nav1.NodeAccess{ObjectMeta: metav1.ObjectMeta{Name: req.Name}}}
			}
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    notify,
		UpdateFunc: func(_, obj any) { notify(obj) },
		DeleteFunc: notify,
	}); err != nil {
		return false, fmt.Errorf("watching Secrets in %s: %w", namespace, err)
	}
	ictx, cancel := context.WithCancel(w.ctx)
	w.watched[namespace] = cancel
	go inf.RunWithContext(ictx)
	ctrl.LoggerFrom(ctx).Info("Watching Secrets", "namespace", namespace)
	return true, nil
}

// keepOnly stops watching the namespaces that are not named.
func (w *secretWatches) keepOnly(named map[string]bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ns, stop := range w.watched {
		if !named[ns] {
			stop()
			delete(w.watched, ns)
		}
	}
	for ns := range w.denied {
		if !named[ns] {
			delete(w.denied, ns)
		}
	}
}

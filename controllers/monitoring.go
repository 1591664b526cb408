package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/nodeaccess/nodeaccess-operator/internal/monitoring"
)

// +kubebuilder:rbac:groups=monitoring.coreos.com,namespace=nodeaccess-system,resources=prometheusrules;servicemonitors,verbs=get;list;watch;create;patch

const (
	// DefaultMonitoringRecheck is how often the manager looks for the
	// Prometheus operator's CRDs while they are not served.
	DefaultMonitoringRecheck = time.Minute
	// monitoringResync re-applies the objects now and then once they are
	// installed (a no-op when nothing drifted), and notices CRDs removed.
	monitoringResync = 10 * time.Minute
	// monitoringSettle is how long after the watches start the objects are
	// checked every monitoringSettleRecheck: while the API server sets up
	// newly created CRDs it ends their watches, and an object changed or
	// deleted before a watch is back gives no event.
	monitoringSettle        = time.Minute
	monitoringSettleRecheck = 5 * time.Second
)

// MonitoringReconciler installs the PrometheusRule and the ServiceMonitor of
// internal/monitoring in the operator's namespace, but only while the
// Prometheus operator's CRDs (monitoring.coreos.com/v1 prometheusrules and
// servicemonitors) are served: it asks discovery at start and every
// Recheck, so a cluster without them is left alone, and the objects appear
// once someone installs the Prometheus operator. That is why they are not
// in the OLM bundle: OLM fails a whole install when a bundle object's CRD is
// missing. Once they are served, it watches the two objects and repairs
// them when edited or deleted (server-side apply, the manager's field
// owner). They are owned by the operator's Deployment, like the agent
// DaemonSet, so uninstalling the operator removes them.
type MonitoringReconciler struct {
	Client client.Client
	// Discovery tells which APIs the API server serves.
	Discovery discovery.DiscoveryInterface
	// Cache holds the two objects, in the operator's namespace only (the
	// manager may read them nowhere else).
	Cache cache.Cache
	// Objects are the options of the two objects (namespace, labels).
	Objects monitoring.Options
	// OwnerDeployment is the operator Deployment's name; when it does not
	// exist (the manager runs outside the cluster), the objects have no owner.
	OwnerDeployment string
	// Recheck is how often discovery is asked again while the CRDs are missing.
	Recheck time.Duration

	controller controller.Controller
	// mu guards what follows; the controller runs one reconcile at a time,
	// but the watches are added from it.
	mu sync.Mutex
	// watchedSince is when the watches on the two objects were started
	// (zero before).
	watchedSince time.Time
	// served is what the last check found (nil before the first).
	served *bool
}

// monitoringRequest is the one request of the controller.
var monitoringRequest = reconcile.Request{NamespacedName: types.NamespacedName{Name: "monitoring"}}

// monitoringKinds are the kinds the manager installs, by resource name.
var monitoringKinds = map[string]string{
	monitoringv1.PrometheusRuleName: monitoringv1.PrometheusRuleKind,
	monitoringv1.ServiceMonitorName: monitoringv1.ServiceMonitorsKind,
}

// SetupMonitoring registers the controller that installs the alerts and the
// ServiceMonitor, with a cache of its own limited to the operator's namespace.
func SetupMonitoring(mgr ctrl.Manager, opts Options) error {
	c, err := cache.New(mgr.GetConfig(), cache.Options{
		HTTPClient: mgr.GetHTTPClient(), Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(),
		DefaultNamespaces: map[string]cache.Config{opts.Namespace: {}},
	})
	if err != nil {
		return fmt.Errorf("creating the monitoring objects' cache: %w", err)
	}
	if err := mgr.Add(c); err != nil {
		return fmt.Errorf("adding the monitoring objects' cache: %w", err)
	}
	dc, err := discovery.NewDiscoveryClientForConfigAndClient(mgr.GetConfig(), mgr.GetHTTPClient())
	if err != nil {
		return fmt.Errorf("creating a discovery client: %w", err)
	}
	r := &MonitoringReconciler{
		Client: mgr.GetClient(), Discovery: dc, Cache: c,
		Objects:         monitoring.Options{Namespace: opts.Namespace, Labels: opts.MonitoringLabels},
		OwnerDeployment: opts.OperatorDeployment, Recheck: opts.MonitoringRecheck,
	}
	return r.SetupWithManager(mgr)
}

// SetupWithManager registers the controller: one request at start; the
// watches on the objects are added once their CRDs are served.
func (r *MonitoringReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Recheck <= 0 {
		r.Recheck = DefaultMonitoringRecheck
	}
	start := make(chan event.GenericEvent, 1)
	start <- event.GenericEvent{Object: &metav1.PartialObjectMetadata{}}
	c, err := ctrl.NewControllerManagedBy(mgr).
		Named("monitoring").
		WatchesRawSource(source.Channel(start, toMonitoringRequest())).
		Build(r)
	if err != nil {
		return fmt.Errorf("setting up the monitoring controller: %w", err)
	}
	r.controller = c
	return nil
}

func toMonitoringRequest() handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{monitoringRequest}
	})
}

// Reconcile checks that the CRDs are served, then applies both objects.
func (r *MonitoringReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	served, err := r.crdsServed()
	if err != nil {
		return ctrl.Result{}, err
	}
	r.mu.Lock()
	changed := r.served == nil || *r.served != served
	r.served = &served
	r.mu.Unlock()
	if !served {
		if changed {
			log.Info("Not installing the alerts and the ServiceMonitor: the Prometheus operator's CRDs are not served",
				"group", monitoringv1.SchemeGroupVersion.String(), "recheck", r.Recheck.String())
		}
		return ctrl.Result{RequeueAfter: r.Recheck}, nil
	}
	if err := r.watch(); err != nil {
		return ctrl.Result{}, err
	}
	owner, err := r.owner(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	for _, obj := range []client.Object{monitoring.PrometheusRule(r.Objects), monitoring.ServiceMonitor(r.Objects)} {
		obj.SetOwnerReferences(owner)
		if err := applyObject(ctx, r.Client, obj); err != nil {
			return ctrl.Result{}, fmt.Errorf("applying %s %s: %w", obj.GetObjectKind().GroupVersionKind().Kind, obj.GetName(), err)
		}
	}
	if changed {
		log.Info("Installed the alerts and the ServiceMonitor", "namespace", r.Objects.Namespace,
			"prometheusRule", monitoring.RuleName, "serviceMonitor", monitoring.ServiceMonitorName)
	}
	r.mu.Lock()
	settling := time.Since(r.watchedSince) < monitoringSettle
	r.mu.Unlock()
	if settling {
		return ctrl.Result{RequeueAfter: monitoringSettleRecheck}, nil
	}
	return ctrl.Result{RequeueAfter: monitoringResync}, nil
}

// crdsServed asks discovery whether both resources are served.
func (r *MonitoringReconciler) crdsServed() (bool, error) {
	list, err := r.Discovery.ServerResourcesForGroupVersion(monitoringv1.SchemeGroupVersion.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("asking discovery for %s: %w", monitoringv1.SchemeGroupVersion, err)
	}
	found := 0
	for _, res := range list.APIResources {
		if kind, ok := monitoringKinds[res.Name]; ok && res.Kind == kind {
			found++
		}
	}
	return found == len(monitoringKinds), nil
}

// watch starts, once, the watches that repair the objects when they change
// or go.
func (r *MonitoringReconciler) watch() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.watchedSince.IsZero() {
		return nil
	}
	names := map[string]string{monitoringv1.PrometheusRuleKind: monitoring.RuleName, monitoringv1.ServiceMonitorsKind: monitoring.ServiceMonitorName}
	for kind, name := range names {
		obj := &metav1.PartialObjectMetadata{}
		obj.SetGroupVersionKind(monitoringv1.SchemeGroupVersion.WithKind(kind))
		ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetNamespace() == r.Objects.Namespace && o.GetName() == name
		})
		if err := r.controller.Watch(source.Kind[client.Object](r.Cache, obj, toMonitoringRequest(), ours)); err != nil {
			return fmt.Errorf("watching %s: %w", kind, err)
		}
	}
	r.watchedSince = time.Now()
	return nil
}

// owner is the owner reference to the operator's Deployment, or none when
// it does not exist.
func (r *MonitoringReconciler) owner(ctx context.Context) ([]metav1.OwnerReference, error) {
	if r.OwnerDeployment == "" {
		return nil, nil
	}
	dep := &appsv1.Deployment{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Objects.Namespace, Name: r.OwnerDeployment}, dep)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading operator deployment: %w", err)
	}
	return []metav1.OwnerReference{{
		// No blockOwnerDeletion: nothing needs to wait for these objects,
		// and setting it needs more than read access to the Deployment.
		APIVersion: "apps/v1", Kind: "Deployment", Name: dep.Name, UID: dep.UID, Controller: ptrTo(true),
	}}, nil
}

package agent

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// ServeOptions are the agent's HTTP endpoints; "0" disables one.
type ServeOptions struct {
	ProbeAddr   string
	MetricsAddr string
}

// NewManager returns a controller manager running one agent. Its cache holds
// exactly two things: the agent's own Node, and the rendered grants of the
// operator namespace. Nothing else is read, and no Secret is ever reachable.
func NewManager(restCfg *rest.Config, cfg Config, serve ServeOptions) (ctrl.Manager, error) {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(nav1.AddToScheme(scheme))
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                 scheme,
		HealthProbeBindAddress: serve.ProbeAddr,
		Metrics:                metricsserver.Options{BindAddress: serve.MetricsAddr},
		Cache: cache.Options{
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Node{}:             {Field: fields.OneTermEqualSelector("metadata.name", cfg.NodeName)},
				&nav1.RenderedNodeAccess{}: {Namespaces: map[string]cache.Config{cfg.Namespace: {}}},
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	a, err := New(cfg, mgr.GetClient())
	if err != nil {
		return nil, err
	}
	if err := a.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if serve.ProbeAddr != "0" {
		if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
			return nil, fmt.Errorf("adding health check: %w", err)
		}
		if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
			return nil, fmt.Errorf("adding readiness check: %w", err)
		}
	}
	return mgr, nil
}

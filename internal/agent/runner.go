package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
	"github.com/nodeaccess/nodeaccess-operator/internal/nodefilter"
)

// ServeOptions are the agent's HTTP endpoints; "0" disables one.
type ServeOptions struct {
	// ProbeAddr serves /healthz (the process is alive) and /readyz (its
	// informers have synced).
	ProbeAddr string
}

// Runner runs one agent: informers of its own Node (by a field selector),
// of the vocabulary of the grant filter (one ConfigMap) and of the rendered
// grants of one namespace that may concern the node, one reconcile loop,
// the file watcher and the probes. Nothing else is read, and no Secret is ever
// reachable.
type Runner struct {
	agent      *Agent
	serve      ServeOptions
	nodes      cache.Store
	vocabulary cache.Store
	grants     *grantWatches
	informers  []cache.Controller
	// refilter holds at most one pending change of the grant watches' selectors.
	refilter chan struct{}
	// kick holds at most one pending pass: bursts of events collapse into one.
	kick  chan struct{}
	ready atomic.Bool
}

// NewRunner returns a Runner for cfg against the API server of restCfg.
func NewRunner(restCfg *rest.Config, cfg Config, serve ServeOptions) (*Runner, error) {
	if cfg.Resync <= 0 || cfg.Heartbeat <= 0 || cfg.ReportDelay < 0 {
		return nil, errors.New("resync and heartbeat must be positive, and the report delay not negative")
	}
	api, err := newAPIClient(restCfg, cfg.NodeName)
	if err != nil {
		return nil, err
	}
	r := &Runner{serve: serve, kick: make(chan struct{}, 1), refilter: make(chan struct{}, 1)}
	// Of its Node the agent uses the name, UID and labels: status updates
	// (the kubelet's, every few minutes) start no pass.
	nodeEvents := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) {
			r.trigger()
			r.changeFilter()
		},
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*nodeMeta)
			n, ok2 := obj.(*nodeMeta)
			if !ok1 || !ok2 || o.UID != n.UID || !maps.Equal(o.Labels, n.Labels) {
				r.trigger()
				r.changeFilter()
			}
		},
		DeleteFunc: func(any) {
			r.trigger()
			r.changeFilter()
		},
	}
	vocabularyEvents := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { r.changeFilter() },
		UpdateFunc: func(any, any) { r.changeFilter() },
		DeleteFunc: func(any) { r.changeFilter() },
	}
	// The API server sends an agent the events of the grants that may
	// select its node (see grantWatches); only those of grants that select
	// it, before or after the change, start a pass (and every deletion).
	grantEvents := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.triggerIf(obj) },
		UpdateFunc: func(old, obj any) { r.triggerIf(old, obj) },
		// A deleted grant may have keys left here that an earlier pass
		// could not remove, whatever it selects now.
		DeleteFunc: func(any) { r.trigger() },
	}
	inform := func(lw cache.ListerWatcher, obj runtime.Object, handler cache.ResourceEventHandler) cache.Store {
		store, ctl := cache.NewInformerWithOptions(cache.InformerOptions{ListerWatcher: lw, ObjectType: obj, Handler: handler, Transform: slim})
		r.informers = append(r.informers, ctl)
		return store
	}
	r.nodes = inform(cache.NewListWatchFromClient(api.core, "nodes", "",
		fields.OneTermEqualSelector("metadata.name", cfg.NodeName)), &nodeMeta{}, nodeEvents)
	r.vocabulary = inform(vocabularyListWatch(api, cfg.Namespace), &configMap{}, vocabularyEvents)
	r.grants = &grantWatches{api: api, namespace: cfg.Namespace, handler: grantEvents}
	if r.agent, err = newAgent(cfg, storeSource{r}, api); err != nil {
		return nil, err
	}
	return r, nil
}

// triggerIf starts a pass when any of objs, versions of one grant, concerns
// the node, or when that cannot be told (the node is not known yet, or a
// deletion was missed and only its key is left).
func (r *Runner) triggerIf(objs ...any) {
	node, _ := storeSource{r}.node(context.Background())
	for _, obj := range objs {
		g, ok := obj.(*nav1.RenderedNodeAccess)
		if node == nil || !ok || desiredstate.Concerns(node.Labels, g) {
			r.trigger()
			return
		}
	}
}

// changeFilter asks for the grant watches' selectors to be computed again.
func (r *Runner) changeFilter() {
	select {
	case r.refilter <- struct{}{}:
	default:
	}
}

// filterLoop keeps the grant watches' selectors those of the node's labels
// and the vocabulary, starting a pass after each change.
func (r *Runner) filterLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.refilter:
		}
		if r.grants.ensure(ctx, r.selectors()) {
			r.trigger()
		}
	}
}

// selectors are the grant watches' selectors for what the informers hold now.
func (r *Runner) selectors() []string {
	var nodeLabels map[string]string
	if n, _ := (storeSource{r}).node(context.Background()); n != nil {
		nodeLabels = n.Labels
	}
	return selectors(nodeLabels, vocabulary(r.vocabulary))
}

func (r *Runner) trigger() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Start runs the agent until ctx ends, then waits for everything it started.
// On return every file is left as it is: stopping never revokes access.
func (r *Runner) Start(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// Stop everything started, then wait for it: also when a pass panics.
	defer func() {
		cancel()
		wg.Wait()
	}()

	if r.serve.ProbeAddr != "" && r.serve.ProbeAddr != "0" {
		srv, err := r.probes()
		if err != nil {
			return err
		}
		wg.Go(func() {
			<-ctx.Done()
			_ = srv.Close()
		})
	}
	for _, inf := range r.informers {
		wg.Go(func() { inf.RunWithContext(ctx) })
	}
	wg.Go(func() { r.agent.files.run(ctx, r.trigger) })
	wg.Go(func() { r.agent.sshd.run(ctx, r.trigger) })
	wg.Go(func() { r.agent.logins.run(ctx, r.trigger) })
	wg.Go(func() { r.agent.reports.run(ctx, r.agent.doReport, r.trigger) })

	synced := make([]cache.InformerSynced, 0, len(r.informers))
	for _, inf := range r.informers {
		synced = append(synced, inf.HasSynced)
	}
	// Nothing is written, and so nothing removed, before every informer
	// holds the whole of what it watches.
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil
	}
	defer r.grants.stopAll()
	if !r.grants.ensure(ctx, r.selectors()) {
		return nil
	}
	wg.Go(func() { r.filterLoop(ctx) })
	r.ready.Store(true)
	log.Info("Informers synced; keeping the node's files")
	return r.loop(ctx)
}

// loop runs a pass at once, at every event, when the last pass said the
// next one is due, and after a failure with a backoff that doubles from
// 50 ms up to the resync interval. It ends with ErrPasswdReplaced when the
// host's account database was replaced under a single-file mount.
func (r *Runner) loop(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx)
	backoff := time.Duration(0)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		case <-timer.C:
		}
		after, err := r.agent.Sync(ctx)
		if errors.Is(err, ErrPasswdReplaced) {
			return err
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			backoff = nextBackoff(backoff, r.agent.cfg.Resync)
			after = backoff
			log.Error(err, "Pass failed; retrying", "after", after)
		} else {
			backoff = 0
		}
		timer.Reset(after)
	}
}

// probes starts the probe server: /healthz answers while the process runs,
// /readyz once the informers have synced.
func (r *Runner) probes() (*http.Server, error) {
	ln, err := net.Listen("tcp", r.serve.ProbeAddr)
	if err != nil {
		return nil, fmt.Errorf("serving probes: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !r.ready.Load() {
			http.Error(w, "informers not synced", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = ln.Close()
		}
	}()
	return srv, nil
}

// slim drops from cached objects what the agent never reads: all of a
// Node but its name, UID and labels (a real Node's status is tens of KiB),
// all of a ConfigMap but the vocabulary and the report interval, and every
// object's managed fields.
func slim(obj any) (any, error) {
	switch o := obj.(type) {
	case *nodeMeta:
		return &nodeMeta{ObjectMeta: metav1.ObjectMeta{
			Name: o.Name, UID: o.UID, Labels: o.Labels, ResourceVersion: o.ResourceVersion,
		}}, nil
	case *configMap:
		return &configMap{
			ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace, ResourceVersion: o.ResourceVersion},
			Data: map[string]string{
				nodefilter.KeysField:           o.Data[nodefilter.KeysField],
				nodefilter.ReportIntervalField: o.Data[nodefilter.ReportIntervalField],
			},
		}, nil
	case metav1.Object:
		o.SetManagedFields(nil)
	}
	return obj, nil
}

// storeSource reads the Runner's informer stores.
type storeSource struct{ r *Runner }

func (s storeSource) node(context.Context) (*nodeMeta, error) {
	obj, ok, err := s.r.nodes.GetByKey(s.r.agent.cfg.NodeName) // a cluster-scoped key is the name
	if err != nil || !ok {
		return nil, err
	}
	n, _ := obj.(*nodeMeta)
	return n, nil
}

func (s storeSource) rendered(context.Context) ([]nav1.RenderedNodeAccess, error) {
	return s.r.grants.list(), nil
}

func (s storeSource) reportInterval() (time.Duration, bool) {
	return publishedReportInterval(s.r.vocabulary)
}

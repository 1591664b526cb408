package agent

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/nodefilter"
)

// grantWatches are the agent's watches of the rendered grants. The API
// server filters them (package nodefilter): with a published vocabulary,
// one watch selects the labelled grants that may select the node and a
// second the grants written without labels; without one, a single watch
// takes every grant. When the node's labels or the vocabulary change, the
// new watches are started and synced before they replace the old ones, so
// a pass never sees a grant missing that still concerns the node.
type grantWatches struct {
	api       *apiClient
	namespace string
	handler   cache.ResourceEventHandler

	mu     sync.RWMutex
	active []*grantWatch
}

// grantWatch is one watch of the rendered grants, by one label selector.
type grantWatch struct {
	selector string
	store    cache.Store
	ctl      cache.Controller
	stop     context.CancelFunc
}

// selectors are the label selectors the agent watches the rendered grants
// by, for its node's labels and the vocabulary (nil: none published).
func selectors(nodeLabels map[string]string, keys []string) []string {
	if len(keys) == 0 {
		return []string{""}
	}
	return []string{nodefilter.Selector(nodeLabels, keys).String(), nodefilter.LegacySelector().String()}
}

// ensure makes the active watches those of want: it starts the missing
// ones, waits until they hold the whole of what they select, then swaps
// them in and stops the others. It returns false when ctx ended first.
func (g *grantWatches) ensure(ctx context.Context, want []string) bool {
	g.mu.RLock()
	have := map[string]*grantWatch{}
	for _, w := range g.active {
		have[w.selector] = w
	}
	g.mu.RUnlock()
	if len(have) == len(want) && !slices.ContainsFunc(want, func(s string) bool { return have[s] == nil }) {
		return true
	}
	next := make([]*grantWatch, 0, len(want))
	var started []*grantWatch
	for _, s := range want {
		if w := have[s]; w != nil {
			next = append(next, w)
			continue
		}
		w := g.start(ctx, s)
		started = append(started, w)
		next = append(next, w)
	}
	for _, w := range started {
		if !cache.WaitForCacheSync(ctx.Done(), w.ctl.HasSynced) {
			for _, w := range started {
				w.stop()
			}
			return false
		}
	}
	g.mu.Lock()
	old := g.active
	g.active = next
	g.mu.Unlock()
	for _, w := range old {
		if !slices.Contains(next, w) {
			w.stop()
		}
	}
	logr.FromContextOrDiscard(ctx).V(1).Info("Watching rendered grants", "selectors", want)
	return true
}

func (g *grantWatches) start(ctx context.Context, selector string) *grantWatch {
	lw := cache.NewFilteredListWatchFromClient(g.api.nav, "renderednodeaccesses", g.namespace, func(opts *metav1.ListOptions) {
		opts.LabelSelector = selector
	})
	store, ctl := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw, ObjectType: &nav1.RenderedNodeAccess{}, Handler: g.handler, Transform: slim,
	})
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctl.RunWithContext(ctx)
	}()
	return &grantWatch{selector: selector, store: store, ctl: ctl, stop: func() { cancel(); <-done }}
}

// list returns every rendered grant the active watches hold.
func (g *grantWatches) list() []nav1.RenderedNodeAccess {
	g.mu.RLock()
	defer g.mu.RUnlock()
	// A grant moving from one watch to the other can be in both stores
	// until the first one's deletion arrives: only its newest version counts.
	newest := map[string]*nav1.RenderedNodeAccess{}
	var names []string
	for _, w := range g.active {
		for _, obj := range w.store.List() {
			r, ok := obj.(*nav1.RenderedNodeAccess)
			if !ok {
				continue
			}
			if have := newest[r.Name]; have == nil {
				names = append(names, r.Name)
				newest[r.Name] = r
			} else if resourceVersion(r) > resourceVersion(have) {
				newest[r.Name] = r
			}
		}
	}
	out := make([]nav1.RenderedNodeAccess, 0, len(names))
	for _, name := range names {
		out = append(out, *newest[name])
	}
	return out
}

// resourceVersion orders two versions of one object; the API server's
// resource versions are opaque, but those of etcd are increasing integers
// (an unparsable one counts as oldest).
func resourceVersion(r *nav1.RenderedNodeAccess) uint64 {
	v, _ := strconv.ParseUint(r.ResourceVersion, 10, 64)
	return v
}

// stopAll stops every watch.
func (g *grantWatches) stopAll() {
	g.mu.Lock()
	old := g.active
	g.active = nil
	g.mu.Unlock()
	for _, w := range old {
		w.stop()
	}
}

// vocabularyListWatch watches the one ConfigMap of the vocabulary. An agent
// whose account may not read it (installed with the RBAC of a release that
// had no filter) sees no vocabulary and watches every grant; it logs that
// once and asks nothing more.
func vocabularyListWatch(api *apiClient, namespace string) cache.ListerWatcher {
	byName := fields.OneTermEqualSelector("metadata.name", nodefilter.ConfigMapName).String()
	var forbidden sync.Once
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = byName
			list := &configMapList{}
			err := api.core.Get().Namespace(namespace).Resource("configmaps").
				VersionedParams(&opts, metav1.ParameterCodec).Do(ctx).Into(list)
			if apierrors.IsForbidden(err) {
				forbidden.Do(func() {
					logr.FromContextOrDiscard(ctx).Info("May not read the node filter vocabulary; watching every rendered grant", "configMap", nodefilter.ConfigMapName)
				})
				return &configMapList{ListMeta: metav1.ListMeta{ResourceVersion: "forbidden"}}, nil
			}
			return list, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			if opts.ResourceVersion == "forbidden" {
				return never(ctx), nil
			}
			opts.FieldSelector = byName
			opts.Watch = true
			return api.core.Get().Namespace(namespace).Resource("configmaps").
				VersionedParams(&opts, metav1.ParameterCodec).Watch(ctx)
		},
	}
}

// never is a watch that sends nothing until it is stopped or ctx ends.
func never(ctx context.Context) watch.Interface {
	w := watch.NewFake()
	go func() {
		<-ctx.Done()
		w.Stop()
	}()
	return w
}

// publishedReportInterval returns the report interval the manager published
// in store, if it published a valid one (nodefilter.ParseReportInterval).
func publishedReportInterval(store cache.Store) (time.Duration, bool) {
	if cm := filterConfigMap(store); cm != nil {
		return nodefilter.ParseReportInterval(cm.Data[nodefilter.ReportIntervalField])
	}
	return 0, false
}

// filterConfigMap returns the filter's ConfigMap in store, or nil.
func filterConfigMap(store cache.Store) *configMap {
	for _, obj := range store.List() {
		if cm, ok := obj.(*configMap); ok && cm.Name == nodefilter.ConfigMapName {
			return cm
		}
	}
	return nil
}

// vocabulary returns the published vocabulary in store (nil when none is).
func vocabulary(store cache.Store) []string {
	if cm := filterConfigMap(store); cm != nil {
		return nodefilter.ParseKeys(cm.Data[nodefilter.KeysField])
	}
	return nil
}

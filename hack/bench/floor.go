package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// floorNamespace holds the floor's ConfigMaps.
const floorNamespace = "bench-floor"

// floor measures the watch fan-out floor on this control plane: watchers,
// each on its own connection (agentConfig), watch one small ConfigMap by
// field selector; it is updated `updates` times, one at a time, each once
// every watcher has received the one before. A sample is, per update and
// watcher, the time from the update call to the event's arrival. A change
// of the product travels the same way (an object written, then watched), so
// this is what its latencies are compared with.
func (b *bench) floor(scenario, object string, watchers, updates int) (Result, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cms, err := corev1client.NewForConfig(b.cluster.Config)
	if err != nil {
		return Result{}, err
	}
	_, err = cms.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: floorNamespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return Result{}, fmt.Errorf("creating the floor's namespace: %w", err)
	}
	cm, err := cms.ConfigMaps(floorNamespace).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: object}, Data: map[string]string{"update": "-1"},
	}, metav1.CreateOptions{})
	if err != nil {
		return Result{}, fmt.Errorf("creating the floor's ConfigMap: %w", err)
	}
	// arrived[u][i] is when watcher i received update u (written by that
	// watcher only); got[u] counts them, and all[u] closes at the last.
	arrived := make([][]time.Time, updates)
	got := make([]atomic.Int64, updates)
	all := make([]chan struct{}, updates)
	for u := range updates {
		arrived[u] = make([]time.Time, watchers)
		all[u] = make(chan struct{})
	}
	ids := make([]string, watchers)
	for i := range ids {
		ids[i] = strconv.Itoa(i)
	}
	var mu sync.Mutex
	var opened []watch.Interface
	var wg sync.WaitGroup
	defer func() {
		mu.Lock()
		for _, w := range opened {
			w.Stop()
		}
		mu.Unlock()
		wg.Wait()
	}()
	// Every watch on a connection of its own, from the ConfigMap's version;
	// when Watch returns, the server has answered it.
	if err := parallel(ids, 50, func(id string) error {
		cfg := agentConfig(b.agentBase, id)
		cfg.UserAgent = "bench-floor/" + object + "/" + id // not counted as an agent's
		c, err := corev1client.NewForConfig(cfg)
		if err != nil {
			return err
		}
		w, err := c.ConfigMaps(floorNamespace).Watch(ctx, metav1.ListOptions{
			FieldSelector:   fields.OneTermEqualSelector("metadata.name", object).String(),
			ResourceVersion: cm.ResourceVersion,
		})
		if err != nil {
			return err
		}
		mu.Lock()
		opened = append(opened, w)
		mu.Unlock()
		i, _ := strconv.Atoi(id)
		wg.Go(func() {
			for ev := range w.ResultChan() {
				at := time.Now()
				obj, ok := ev.Object.(*corev1.ConfigMap)
				if !ok {
					continue
				}
				u, err := strconv.Atoi(obj.Data["update"])
				if err != nil || u < 0 || u >= updates || !arrived[u][i].IsZero() {
					continue
				}
				arrived[u][i] = at
				if got[u].Add(1) == int64(watchers) {
					close(all[u])
				}
			}
		})
		return nil
	}); err != nil {
		return Result{}, fmt.Errorf("opening the floor's watches: %w", err)
	}
	samples := make([]time.Duration, 0, watchers*updates)
	for u := range updates {
		cm.Data["update"] = strconv.Itoa(u)
		from := time.Now()
		if cm, err = cms.ConfigMaps(floorNamespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			return Result{}, fmt.Errorf("updating the floor's ConfigMap: %w", err)
		}
		select {
		case <-all[u]:
		case <-time.After(2 * time.Minute):
			return Result{}, fmt.Errorf("%s: %d of %d watchers received update %d within 2m", scenario, got[u].Load(), watchers, u)
		}
		for _, at := range arrived[u] {
			samples = append(samples, at.Sub(from))
		}
	}
	r := Result{Scenario: scenario, Changes: updates, Samples: len(samples), Watchers: watchers,
		Note: fmt.Sprintf("%d watchers, each on its own connection, of one ConfigMap updated %d times", watchers, updates)}
	r.P50ms, r.P95ms, r.P99ms, r.MaxMs = percentiles(samples)
	return r, nil
}

package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// statusWatcher records, from a watch of every NodeAccess, when each one's
// status counted every selected node in sync, and at which generation: how
// far the reports (which the agents coalesce and delay) and the manager's
// status (batched by --status-delay) lag the files.
type statusWatcher struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex
	// inSync lists, per NodeAccess, the moments its status showed every
	// selected node in sync, with the generation it described.
	inSync map[string][]syncedAt
	// seen is signalled (without blocking) at every recorded moment.
	seen chan struct{}
}

type syncedAt struct {
	at         time.Time
	generation int64
}

// statusChange is one churn change: the NodeAccess's generation after it,
// and when the last node's file showed it.
type statusChange struct {
	name       string
	generation int64
	// sent and returned bound the change's API call.
	sent, returned time.Time
	filesAt        time.Time
}

func watchStatus(ctx context.Context, cfg *rest.Config) (*statusWatcher, error) {
	c := rest.CopyConfig(cfg)
	c.UserAgent = "bench-driver"
	k8s, err := client.NewWithWatch(c, client.Options{Scheme: benchScheme})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &statusWatcher{cancel: cancel, done: make(chan struct{}), inSync: map[string][]syncedAt{}, seen: make(chan struct{}, 1)}
	w, err := k8s.Watch(ctx, &nav1.NodeAccessList{})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watching NodeAccess status: %w", err)
	}
	go func() {
		defer close(s.done)
		for {
			s.record(w)
			w.Stop()
			if ctx.Err() != nil {
				return
			}
			// The server ended the watch: open another (moments in
			// between are lost, and then show as a longer lag).
			if w, err = k8s.Watch(ctx, &nav1.NodeAccessList{}); err != nil {
				return
			}
		}
	}()
	return s, nil
}

func (s *statusWatcher) record(w watch.Interface) {
	for ev := range w.ResultChan() {
		at := time.Now()
		na, ok := ev.Object.(*nav1.NodeAccess)
		if !ok || ev.Type == watch.Deleted {
			continue
		}
		st := na.Status
		if st.SelectedNodes == 0 || st.NodesInSync != st.SelectedNodes {
			continue
		}
		s.mu.Lock()
		s.inSync[na.Name] = append(s.inSync[na.Name], syncedAt{at: at, generation: st.ObservedGeneration})
		s.mu.Unlock()
		select {
		case s.seen <- struct{}{}:
		default:
		}
	}
}

func (s *statusWatcher) stop() {
	s.cancel()
	<-s.done
}

// lags returns, per change, the time from its files to the first moment
// its NodeAccess was in sync at its generation or a later one (a later
// change's sync covers it: reports are coalesced), waiting up to timeout
// for the last ones; missing counts changes never seen in sync.
func (s *statusWatcher) lags(changes []statusChange, timeout time.Duration) (lags []time.Duration, missing int) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		lags, missing = s.match(changes)
		if missing == 0 {
			return lags, 0
		}
		select {
		case <-s.seen:
		case <-deadline.C:
			return lags, missing
		}
	}
}

func (s *statusWatcher) match(changes []statusChange) (lags []time.Duration, missing int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range changes {
		found := false
		for _, m := range s.inSync[c.name] {
			if m.generation >= c.generation {
				lags = append(lags, max(0, m.at.Sub(c.filesAt)))
				found = true
				break
			}
		}
		if !found {
			missing++
		}
	}
	return lags, missing
}

package main

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"time"
)

// tracker times file writes: a wait expects a key to appear in (or vanish
// from) every one of a set of nodes' files, and records when each did.
type tracker struct {
	mu sync.Mutex
	// byNode holds, per node, the waits still pending on it: a write is
	// checked against its own node's waits only.
	byNode map[string]map[*wait]struct{}
}

type wait struct {
	blob    []byte
	present bool
	from    time.Time
	mu      sync.Mutex
	pending int
	got     []time.Duration
	all     chan struct{}
}

func newTracker() *tracker { return &tracker{byNode: map[string]map[*wait]struct{}{}} }

// expect registers a wait; its clock starts now, before the API call.
func (t *tracker) expect(blob string, present bool, nodes []string) *wait {
	w := &wait{blob: []byte(blob), present: present, from: time.Now(), pending: len(nodes), all: make(chan struct{})}
	if len(nodes) == 0 {
		close(w.all)
		return w
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range nodes {
		set := t.byNode[n]
		if set == nil {
			set = map[*wait]struct{}{}
			t.byNode[n] = set
		}
		set[w] = struct{}{}
	}
	return w
}

// onWrite is a node's agent.Config.OnWrite.
func (t *tracker) onWrite(node string) func(string, []byte) {
	return func(acct string, content []byte) {
		at := time.Now()
		if acct != account {
			return
		}
		t.mu.Lock()
		waits := make([]*wait, 0, len(t.byNode[node]))
		for w := range t.byNode[node] {
			waits = append(waits, w)
		}
		t.mu.Unlock()
		for _, w := range waits {
			if bytes.Contains(content, w.blob) != w.present {
				continue
			}
			t.mu.Lock()
			_, still := t.byNode[node][w]
			delete(t.byNode[node], w)
			t.mu.Unlock()
			if !still {
				continue
			}
			w.mu.Lock()
			w.got = append(w.got, at.Sub(w.from))
			if w.pending--; w.pending == 0 {
				close(w.all)
			}
			w.mu.Unlock()
		}
	}
}

func (w *wait) done(timeout time.Duration) ([]time.Duration, error) {
	select {
	case <-w.all:
	case <-time.After(timeout):
		w.mu.Lock()
		defer w.mu.Unlock()
		return nil, fmt.Errorf("%d nodes never wrote the change within %s", w.pending, timeout)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.got), nil
}

func percentiles(d []time.Duration) (p50, p95, p99, maxMs float64) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	at := func(q float64) float64 {
		i := int(q*float64(len(d))+0.5) - 1
		i = min(max(i, 0), len(d)-1)
		return float64(d[i].Microseconds()) / 1000
	}
	return at(0.50), at(0.95), at(0.99), float64(d[len(d)-1].Microseconds()) / 1000
}

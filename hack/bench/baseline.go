package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeaccess/nodeaccess-operator/internal/agent"
)

// baseline runs polling agents on nodes of their own: the same agent code,
// reading through a client without cache or watches, and applying every
// pollEvery from a random phase, as independent DaemonSet pods would.
func (b *bench) baseline() (Result, error) {
	ctx := context.Background()
	n := b.o.baselineNodes
	fmt.Printf("    baseline: %d agents polling every %s\n", n, b.o.pollEvery)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("poll-%05d", i)
	}
	if err := parallel(names, 50, func(name string) error {
		return b.k8s.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/os": "linux", "baseline": "yes"}}})
	}); err != nil {
		return Result{}, err
	}
	pollCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for _, name := range names {
		root, err := newHost(filepath.Join(b.dir, "hosts", name))
		if err != nil {
			return Result{}, err
		}
		a, err := agent.NewPolling(agentConfig(b.cluster.Config, name), agent.Config{
			NodeName: name, Namespace: namespace, HostRoot: root, Resync: b.o.pollEvery, Heartbeat: 10 * time.Minute,
			OnWrite: b.tracker.onWrite(name),
		})
		if err != nil {
			return Result{}, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			phase := time.Duration(rand.Int64N(int64(b.o.pollEvery)))
			select {
			case <-pollCtx.Done():
				return
			case <-time.After(phase):
			}
			for {
				_, _ = a.Sync(pollCtx)
				select {
				case <-pollCtx.Done():
					return
				case <-time.After(b.o.pollEvery):
				}
			}
		}()
	}
	// Let every poller make its first pass, then grant.
	time.Sleep(b.o.pollEvery + 5*time.Second)
	k := newKey("baseline")
	w := b.tracker.expect(k.blob, true, names)
	from := time.Now()
	if err := b.k8s.Create(ctx, nodeAccess("baseline", map[string]string{"baseline": "yes"}, k.line)); err != nil {
		return Result{}, err
	}
	r, err := b.finish("baseline-grant", from, 1, w)
	r.Nodes = n
	if err != nil {
		return r, err
	}
	// Requests per agent per minute at steady state, from the same log.
	counts, err := countRequests(b.audit, from, time.Now())
	if err == nil {
		mins := time.Since(from).Minutes()
		r.AgentRequests = float64(counts.agentRequestsOf("poll-")) / float64(n) / mins
		r.Note = fmt.Sprintf("agents poll every %s instead of watching; agent_requests is per agent per minute (every request, including reports)", b.o.pollEvery)
	}
	return r, err
}

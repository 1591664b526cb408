package testenv

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nodeaccess/nodeaccess-operator/internal/agent"
)

// Agent is an agent running in-process against the test API server, with
// its own client, cache and host root, as a separate node's agent would.
type Agent struct {
	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan error
}

// Stop ends the agent as SIGTERM would, and waits for it.
func (a *Agent) Stop(t testing.TB) {
	a.stopOnce.Do(func() {
		a.cancel()
		if err := <-a.done; err != nil {
			t.Errorf("agent stopped with %v", err)
		}
	})
}

// StartAgent runs an agent for node, reading rendered grants from namespace
// and writing under h. It stops at the end of the test.
func (e *Env) StartAgent(t testing.TB, node, namespace string, h *Host, resync time.Duration) *Agent {
	t.Helper()
	mgr, err := agent.NewManager(e.Config, agent.Config{
		NodeName: node, Namespace: namespace, HostRoot: h.Root, Resync: resync, Heartbeat: time.Minute,
	}, agent.ServeOptions{ProbeAddr: "0", MetricsAddr: "0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- mgr.Start(ctx) }()
	t.Cleanup(func() { a.Stop(t) })
	return a
}

// Eventually polls cond every 50 ms until it returns nil, and fails the test
// with cond's last error when timeout passes first.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

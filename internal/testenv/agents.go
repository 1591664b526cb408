package testenv

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/nodeaccess/nodeaccess-operator/internal/agent"
)

// Agent is an agent running in-process against the test API server, with
// its own client, informers and host root, as a separate node's agent would.
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
	runner, err := agent.NewRunner(e.Config, agent.Config{
		NodeName: node, Namespace: namespace, HostRoot: h.Root, Resync: resync, Heartbeat: time.Minute,
		ReportDelay: agent.DefaultReportDelay,
	}, agent.ServeOptions{ProbeAddr: "0"})
	if err != nil {
		t.Fatal(err)
	}
	// The agent logs where the suite's controller-runtime logger does.
	ctx, cancel := context.WithCancel(logr.NewContext(context.Background(), ctrl.Log.WithName("agent").WithValues("node", node)))
	a := &Agent{cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- runner.Start(ctx) }()
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

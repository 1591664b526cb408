package agent_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/agent"
)

// runAgent runs a Runner for node with the given report delay and probe
// address until the test ends.
func runAgent(t *testing.T, node, hostRoot string, reportDelay time.Duration, probeAddr string) {
	t.Helper()
	runAgentWith(t, agent.Config{
		NodeName: node, Namespace: namespace, HostRoot: hostRoot,
		Resync: time.Minute, Heartbeat: 10 * time.Minute, ReportDelay: reportDelay,
	}, probeAddr)
}

// runAgentWith runs a Runner with cfg until the test ends, and returns a
// function that stops it earlier.
func runAgentWith(t *testing.T, cfg agent.Config, probeAddr string) (stop func()) {
	t.Helper()
	r, err := agent.NewRunner(env.Config, cfg, agent.ServeOptions{ProbeAddr: probeAddr})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent stopped with %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// The files come first: a changed report is written no sooner than its
// delay after the change, and then says the grant is applied.
func TestReportFollowsTheFilesAfterItsDelay(t *testing.T) {
	const delay = 2 * time.Second
	ctx := context.Background()
	h := newHost(t)
	createNode(t, "node-delay", map[string]string{"pool": "delay"})
	runAgent(t, "node-delay", h.Root, delay, "0")
	// The first report of a process is not delayed.
	eventually(t, 30*time.Second, "the agent's first report", func() error {
		return k8sClient.Get(ctx, client.ObjectKey{Name: "node-delay"}, &nav1.NodeAccessReport{})
	})

	g := grant("team-delay", map[string]string{"pool": "delay"}, nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{key(aliceData, "alice")}})
	t.Cleanup(func() { remove(t, g.Name) })
	apply(t, g)
	eventually(t, 10*time.Second, "the first key written", holds(h, "alice", true, aliceData))
	eventually(t, delay+20*time.Second, "the report listing the grant", reportHas(ctx, "node-delay", g))

	// The change measured: a second key.
	g.Spec.Users[0].Keys = append(g.Spec.Users[0].Keys, key(bobData, "bob"))
	changed := time.Now()
	apply(t, g)
	eventually(t, 10*time.Second, "the second key written", holds(h, "alice", true, aliceData, bobData))
	for {
		err := reportHas(ctx, "node-delay", g)()
		since := time.Since(changed)
		if err == nil {
			if since < delay {
				t.Fatalf("the report listed the grant %s after the change, before its delay of %s", since, delay)
			}
			return
		}
		if since > delay+20*time.Second {
			t.Fatalf("the report never listed the grant: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The DaemonSet's probes: /healthz while the process runs, /readyz once the
// informers have synced.
func TestProbes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := ln.Addr().String()
	must(t, ln.Close())
	h := newHost(t)
	createNode(t, "node-probes", map[string]string{"pool": "probes"})
	runAgent(t, "node-probes", h.Root, 0, addr)
	for _, path := range []string{"/healthz", "/readyz"} {
		eventually(t, 30*time.Second, path+" answering ok", func() error {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s", resp.Status, body)
			}
			return nil
		})
	}
}

// A report deleted by hand comes back at the agent's next write.
func TestDeletedReportIsRecreated(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	createNode(t, "node-recreate", map[string]string{"pool": "recreate"})
	runAgent(t, "node-recreate", h.Root, 0, "0")
	report := &nav1.NodeAccessReport{}
	eventually(t, 30*time.Second, "the agent's first report", func() error {
		return k8sClient.Get(ctx, client.ObjectKey{Name: "node-recreate"}, report)
	})
	must(t, k8sClient.Delete(ctx, report))

	g := grant("team-recreate", map[string]string{"pool": "recreate"}, nav1.RenderedUser{Name: "alice", Keys: []nav1.RenderedKey{key(aliceData, "alice")}})
	t.Cleanup(func() { remove(t, g.Name) })
	apply(t, g)
	eventually(t, 10*time.Second, "the key written", holds(h, "alice", true, aliceData))
	eventually(t, 10*time.Second, "the report back, listing the grant", reportHas(ctx, "node-recreate", g))
}

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/authorizedkeys"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
	"github.com/nodeaccess/nodeaccess-operator/internal/nodewriter"
)

// baseline runs polling agents on nodes of their own, as the usual ad-hoc
// DaemonSets do: every pollEvery, from a random phase, each gets its Node
// and lists the rendered grants (no cache, no watch) and writes the files
// with the project's own desired-state and writer code. They write no
// reports.
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
	// firstPass counts the pollers that have not yet made a pass; the grant
	// is created when every one has, so that it meets each at a random point
	// of its interval.
	var firstPass sync.WaitGroup
	for _, name := range names {
		root, err := b.newHost(name)
		if err != nil {
			return Result{}, err
		}
		p, err := newPoller(agentConfig(b.agentBase, name), name, root)
		if err != nil {
			return Result{}, err
		}
		firstPass.Add(1)
		wg.Go(func() {
			phase := time.Duration(rand.Int64N(int64(b.o.pollEvery)))
			first := true
			timer := time.NewTimer(phase)
			defer timer.Stop()
			for {
				select {
				case <-pollCtx.Done():
					if first {
						firstPass.Done()
					}
					return
				case <-timer.C:
				}
				if err := p.poll(pollCtx); err != nil && pollCtx.Err() == nil {
					fmt.Printf("    baseline: %s: %v\n", name, err)
				}
				if first {
					first = false
					firstPass.Done()
				}
				timer.Reset(b.o.pollEvery)
			}
		})
	}
	firstPass.Wait()
	k := newKey("baseline")
	m := b.mark()
	w := b.tracker.expect(k.blob, true, names)
	if err := b.k8s.Create(ctx, nodeAccess("baseline", map[string]string{"baseline": "yes"}, k.line)); err != nil {
		return Result{}, err
	}
	r, err := b.finish("baseline-grant", m, 0, w)
	if err != nil {
		return r, err
	}
	// The pollers' bytes are not counted (the watching agents' would be).
	r.BytesPerChange, r.WatchBytesPerChange = 0, 0
	// Requests per agent per minute at steady state, from the same log.
	counts, err := countRequests(b.audit, m.at, time.Now())
	if err == nil {
		mins := time.Since(m.at).Minutes()
		r.AgentRequests = float64(counts.agentRequestsOf("poll-")) / float64(n) / mins
		r.Note = fmt.Sprintf("agents poll every %s instead of watching; agent_requests is per agent per minute (every request; the pollers write no reports)", b.o.pollEvery)
	}
	return r, err
}

// poller is one polling node agent: a direct client, the node's writer.
type poller struct {
	node      string
	core, nav *rest.RESTClient
	writer    *nodewriter.Writer
	// written are the accounts whose files it wrote keys into, revisited
	// at every poll so that revoked keys are removed.
	written map[string]bool
}

func newPoller(cfg *rest.Config, node, hostRoot string) (*poller, error) {
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	restFor := func(gv schema.GroupVersion, apiPath string) (*rest.RESTClient, error) {
		c := rest.CopyConfig(cfg)
		c.GroupVersion, c.APIPath = &gv, apiPath
		c.NegotiatedSerializer = serializer.NewCodecFactory(benchScheme).WithoutConversion()
		return rest.RESTClientForConfigAndClient(c, httpClient)
	}
	p := &poller{node: node, written: map[string]bool{}}
	if p.core, err = restFor(corev1.SchemeGroupVersion, "/api"); err != nil {
		return nil, err
	}
	if p.nav, err = restFor(nav1.GroupVersion, "/apis"); err != nil {
		return nil, err
	}
	if p.writer, err = nodewriter.New(hostRoot, nodewriter.Options{}); err != nil {
		return nil, err
	}
	return p, nil
}

// poll reads the node and every rendered grant and writes each account's file.
func (p *poller) poll(ctx context.Context) error {
	node := &corev1.Node{}
	if err := p.core.Get().Resource("nodes").Name(p.node).Do(ctx).Into(node); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("getting the node: %w", err)
	}
	list := &nav1.RenderedNodeAccessList{}
	if err := p.nav.Get().Namespace(namespace).Resource("renderednodeaccesses").Do(ctx).Into(list); err != nil {
		return fmt.Errorf("listing rendered grants: %w", err)
	}
	plan := desiredstate.ForNode(node.Labels, list.Items, time.Now(), desiredstate.Options{})
	accounts := map[string][]authorizedkeys.Section{}
	for name := range p.written {
		accounts[name] = nil
	}
	for name, sections := range plan.Accounts {
		accounts[name] = sections
	}
	for name, sections := range accounts {
		if _, err := p.writer.Update(name, func(current []byte) ([]byte, error) {
			return authorizedkeys.Render(current, sections)
		}); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
		p.written[name] = len(sections) > 0
	}
	return nil
}

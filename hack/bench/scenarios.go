package main

import (
	"context"
	"crypto/ed25519"
	cryptorand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// grantUpdateRevoke returns the scenario of one step: grant creates
// singleChanges NodeAccess selecting every node, one after the other;
// update adds a key to each; revoke deletes each. Each change starts once
// the cluster is quiet again after the one before: every NodeAccess in
// sync on every node for grant and update (so every report of the change
// before is written), the NodeAccess before gone for revoke (its
// finalizer leaves once every node proved its keys gone). Each change is
// timed and counted in a window of its own, as a scenario of one change
// is; the step's figures are over all of them, so its p99 is read over
// singleChanges × nodes samples rather than one event's slowest nodes.
func (b *bench) grantUpdateRevoke(step string) func() (Result, error) {
	return func() (Result, error) {
		ctx := context.Background()
		nodes, procs := b.nodeNames(""), b.procNodeNames("")
		names := make([]string, max(b.o.singleChanges, 1))
		for i := range names {
			names[i] = fmt.Sprintf("everyone-%d", i)
		}
		var acc windows
		var revokedUID string
		for i, name := range names {
			var w, pw *wait
			var m mark
			switch step {
			case "grant":
				if i > 0 {
					if err := b.waitInSync(ctx, names[i-1]); err != nil {
						return Result{}, err
					}
				}
				k := newKey("grant")
				m = b.mark()
				w, pw = b.tracker.expect(k.blob, true, nodes), b.tracker.expect(k.blob, true, procs)
				if err := b.k8s.Create(ctx, nodeAccess(name, map[string]string{"bench": "yes"}, k.line)); err != nil {
					return Result{}, err
				}
			case "update":
				for _, n := range names {
					if err := b.waitInSync(ctx, n); err != nil {
						return Result{}, err
					}
				}
				k := newKey("update")
				m = b.mark()
				w, pw = b.tracker.expect(k.blob, true, nodes), b.tracker.expect(k.blob, true, procs)
				if err := b.updateNA(ctx, name, func(na *nav1.NodeAccess) {
					na.Spec.Users[0].Keys = append(na.Spec.Users[0].Keys, nav1.AuthorizedKey{Key: k.line})
				}); err != nil {
					return Result{}, err
				}
			default:
				if i == 0 {
					for _, n := range names {
						if err := b.waitInSync(ctx, n); err != nil {
							return Result{}, err
						}
					}
				} else if err := b.waitGone(ctx, names[i-1], revokedUID); err != nil {
					return Result{}, err
				}
				na := &nav1.NodeAccess{}
				if err := b.k8s.Get(ctx, client.ObjectKey{Name: name}, na); err != nil {
					return Result{}, err
				}
				blob := strings.Fields(na.Spec.Users[0].Keys[0].Key)[1]
				revokedUID = string(na.UID)
				m = b.mark()
				// The first event of its rendered grant after the deletion
				// is the revocation; it names the NodeAccess's UID.
				w, pw = b.tracker.expectReading(blob, false, nodes, revokedUID), b.tracker.expect(blob, false, procs)
				if err := b.k8s.Delete(ctx, na); err != nil {
					return Result{}, err
				}
			}
			if err := b.closeWindow(&acc, m, w); err != nil {
				return Result{}, fmt.Errorf("%s: %w", step, err)
			}
			got, err := pw.done(3 * time.Minute)
			if err != nil {
				return Result{}, fmt.Errorf("%s, the process agents: %w", step, err)
			}
			acc.processes = append(acc.processes, got...)
		}
		if step == "revoke" {
			if err := b.waitGone(ctx, names[len(names)-1], revokedUID); err != nil {
				return Result{}, err
			}
		}
		return acc.result(step, len(names)*len(nodes)), nil
	}
}

// waitGone waits until the NodeAccess of uid is gone and no node's
// report lists it any more: it is gone once every node has proved its
// keys removed, and each node then writes one more report, without it,
// spread over the report interval (20 s at 1,000 nodes).
func (b *bench) waitGone(ctx context.Context, name, uid string) error {
	if err := waitFor(2*time.Minute, "NodeAccess "+name+" gone", func() error {
		if err := b.k8s.Get(ctx, client.ObjectKey{Name: name}, &nav1.NodeAccess{}); err == nil {
			return errors.New("still there")
		}
		return nil
	}); err != nil {
		return err
	}
	deadline := time.Now().Add(reportWait)
	for {
		var reports nav1.NodeAccessReportList
		err := b.k8s.List(ctx, &reports)
		listing := 0
		for i := range reports.Items {
			if _, ok := reports.Items[i].Status.Grant(uid); ok {
				listing++
			}
		}
		switch {
		case err == nil && listing == 0:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("NodeAccess %s still in %d reports (%v)", name, listing, err)
		}
		time.Sleep(time.Second) // a list of every report: not every 200 ms
	}
}

// waitInSync waits until the NodeAccess's status counts every node it
// selects in sync at its generation: the reports of the change before have
// all been written (at 1,000 nodes they are spread over 20 s), so the next
// change is timed on a quiet system, as the floor is, and not against
// the tail of the one before. The churn times changes on a busy one.
func (b *bench) waitInSync(ctx context.Context, name string) error {
	return waitFor(reportWait, "NodeAccess "+name+" in sync on every node it selects", func() error {
		na := &nav1.NodeAccess{}
		if err := b.k8s.Get(ctx, client.ObjectKey{Name: name}, na); err != nil {
			return err
		}
		if st := na.Status; st.ObservedGeneration != na.Generation || st.SelectedNodes == 0 || st.NodesInSync != st.SelectedNodes {
			return fmt.Errorf("%d of %d nodes in sync at generation %d (status at %d)", st.NodesInSync, st.SelectedNodes, na.Generation, st.ObservedGeneration)
		}
		return nil
	})
}

// updateNA applies mutate to the NodeAccess, retrying conflicts, and
// transport errors a few times (a saturated machine drops connections).
func (b *bench) updateNA(ctx context.Context, name string, mutate func(*nav1.NodeAccess)) error {
	failures := 0
	for {
		na := &nav1.NodeAccess{}
		err := b.k8s.Get(ctx, client.ObjectKey{Name: name}, na)
		if err == nil {
			mutate(na)
			err = b.k8s.Update(ctx, na)
		}
		switch {
		case err == nil:
			return nil
		case apierrors.IsConflict(err):
		case apierrors.IsNotFound(err) || failures == 5:
			return err
		default:
			failures++
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// patchNA applies a patch to the NodeAccess, which it fills in from the
// answer, retrying transport errors and the API server's timeouts a few
// times (the patch is the whole key list, so sending it twice changes
// nothing).
func (b *bench) patchNA(ctx context.Context, na *nav1.NodeAccess, patch []byte) error {
	for failures := 0; ; failures++ {
		err := b.k8s.Patch(ctx, na, client.RawPatch(types.MergePatchType, patch))
		var status apierrors.APIStatus
		retry := !errors.As(err, &status) || apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) || apierrors.IsTooManyRequests(err)
		if err == nil || !retry || failures == 5 {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// mark is where a scenario starts: the time and the agents' byte counts.
type mark struct {
	at    time.Time
	bytes byteCount
	cpu   cpuTimes
}

func (b *bench) mark() mark {
	b.tracker.ownDelays() // from here on
	return mark{at: time.Now(), bytes: b.bytes.snapshot(), cpu: b.cpuTimes()}
}

// finish waits for the expected file changes, lets the requests that follow
// them (reports, status writes) settle, and fills in latencies, request
// counts and bytes for the changes made since m; concerned is the number of
// (change, in-process node) pairs the changes concern.
func (b *bench) finish(name string, m mark, concerned int, waits ...*wait) (Result, error) {
	r, _, err := b.finishCounted(name, m, concerned, waits...)
	return r, err
}

// finishCounted is finish, also returning the audit log's counts.
func (b *bench) finishCounted(name string, m mark, concerned int, waits ...*wait) (Result, requestCounts, error) {
	var acc windows
	if err := b.closeWindow(&acc, m, waits...); err != nil {
		return Result{}, acc.counts, fmt.Errorf("%s: %w", name, err)
	}
	return acc.result(name, concerned), acc.counts, nil
}

// windows are the measurement windows of a scenario's changes, each from
// its mark to 3 s after the last file it waited for, summed.
type windows struct {
	samples, delays []time.Duration
	// arrived and passes are, per (change, in-process node), the time from
	// the change to the agent reading it, and from that read to its file.
	arrived, passes []time.Duration
	unarrived       int
	// processes are the samples of the agents that run as processes,
	// timed apart from the in-process ones.
	processes []time.Duration
	cpu       cpuTimes
	bytes     byteCount
	counts    requestCounts
	// rendered is, per window of one change, the time from its mark to
	// the manager's write of the rendered grant completing, in ms.
	rendered []float64
	changes  int
}

// closeWindow waits for the waits' file changes, lets the requests that
// follow them (reports, status writes) settle for 3 s, and adds the window
// that m opened.
func (b *bench) closeWindow(acc *windows, m mark, waits ...*wait) error {
	for _, w := range waits {
		got, err := w.done(3 * time.Minute)
		if err != nil {
			return err
		}
		acc.samples = append(acc.samples, got...)
		arrived, passes, unarrived := w.passes()
		acc.arrived, acc.passes, acc.unarrived = append(acc.arrived, arrived...), append(acc.passes, passes...), acc.unarrived+unarrived
	}
	time.Sleep(3 * time.Second) // the window in which reports and status writes follow the files
	acc.delays = append(acc.delays, b.tracker.ownDelays()...)
	acc.cpu = acc.cpu.plus(b.cpuTimes(), m.cpu)
	acc.bytes = acc.bytes.plus(b.bytes.snapshot().sub(m.bytes))
	counts, err := countRequests(b.audit, m.at, time.Now())
	if err != nil {
		return err
	}
	acc.counts.add(counts)
	if len(waits) == 1 && !counts.renderedWrittenAt.IsZero() {
		acc.rendered = append(acc.rendered, float64(counts.renderedWrittenAt.Sub(m.at).Microseconds())/1000)
	}
	acc.changes += len(waits)
	return nil
}

// result is the scenario's figures over its windows; concerned is the
// number of (change, in-process node) pairs the changes concern.
func (acc *windows) result(name string, concerned int) Result {
	changes := max(acc.changes, 1)
	r := Result{Scenario: name, Changes: acc.changes, Samples: len(acc.samples), ConcernedNodes: float64(concerned) / float64(changes)}
	r.P50ms, r.P95ms, r.P99ms, r.MaxMs = percentiles(acc.samples)
	r.TrackerDelayP50ms, _, r.TrackerDelayP99ms, _ = percentiles(acc.delays)
	r.ArrivalP50ms, _, r.ArrivalP99ms, _ = percentiles(acc.arrived)
	r.PassP50ms, _, r.PassP99ms, _ = percentiles(acc.passes)
	r.Unarrived = acc.unarrived
	if len(acc.processes) > 0 {
		r.ProcessSamples = len(acc.processes)
		r.ProcessP50ms, _, r.ProcessP99ms, r.ProcessMaxMs = percentiles(acc.processes)
	}
	r.CPU = acc.cpu.perChange(cpuTimes{}, changes)
	r.BytesPerChange = float64(acc.bytes.total) / float64(changes)
	r.WatchBytesPerChange = float64(acc.bytes.watch) / float64(changes)
	if r.ConcernedNodes > 0 {
		r.BytesPerConcernedNode = r.BytesPerChange / r.ConcernedNodes
	}
	r.ByClient = acc.counts.byKey
	r.ManagerWrites = float64(acc.counts.managerWrites) / float64(changes)
	r.AgentRequests = float64(acc.counts.agentRequests) / float64(changes)
	r.AgentWrites = float64(acc.counts.agentWrites) / float64(changes)
	if n := len(acc.rendered); n > 0 && n == acc.changes {
		sorted := slices.Sorted(slices.Values(acc.rendered))
		r.RenderedMs = sorted[n/2]
	}
	return r
}

// churn: NodeAccess of churnKeys keys each, NodeAccess i on pool i%pools;
// then churnRate key rotations per second for churnFor, each of a random
// NodeAccess. Each change is timed on every node of its pool, and the lag
// of the NodeAccess status behind the last of those files is measured.
func (b *bench) churn() (Result, error) {
	ctx := context.Background()
	objects := b.o.nodeAccess
	if objects == 0 {
		objects = 10 * b.pools
	}
	fmt.Printf("    churn: creating %d NodeAccess × %d keys on %d pools\n", objects, b.o.churnKeys, b.pools)
	names := make([]string, objects)
	for i := range names {
		names[i] = fmt.Sprintf("team-%04d", i)
	}
	poolOf := func(name string) string {
		i, _ := strconv.Atoi(strings.TrimPrefix(name, "team-"))
		return b.poolOf(i)
	}
	// keysOf is each NodeAccess's key lines as the driver last set them:
	// changes are patches computed from it, with no read before.
	keysOf := make(map[string][]string, len(names))
	for _, name := range names {
		keysOf[name] = make([]string, b.o.churnKeys)
	}
	var setup []*wait
	var mu sync.Mutex
	if err := parallel(names, 10, func(name string) error {
		keys := keysOf[name]
		var last sshKey
		for j := range keys {
			last = newKey(fmt.Sprintf("%s-%d", name, j))
			keys[j] = last.line
		}
		mu.Lock()
		setup = append(setup, b.tracker.expect(last.blob, true, b.nodeNames(poolOf(name))))
		mu.Unlock()
		return b.k8s.Create(ctx, nodeAccess(name, map[string]string{"pool": poolOf(name)}, keys...))
	}); err != nil {
		return Result{}, err
	}
	for _, w := range setup {
		if _, err := w.done(5 * time.Minute); err != nil {
			return Result{}, fmt.Errorf("churn setup: %w", err)
		}
	}
	time.Sleep(3 * time.Second) // the setup's reports and status writes, outside the measure

	fmt.Printf("    churn: %d changes per second for %s\n", b.o.churnRate, b.o.churnFor)
	// Change i is due at start + i/rate. A change issued late (the machine
	// is saturated) is issued at once, so that every run makes the same
	// number of changes; its latency still counts from its own API call.
	// Each is a merge patch of the NodeAccess's keys, sent after the
	// previous change of the same NodeAccess returned (so that they apply
	// in order), and late when sent more than lateAfter after it was due.
	total := int(b.o.churnFor.Seconds() * float64(b.o.churnRate))
	interval := time.Second / time.Duration(b.o.churnRate)
	keys := make([]sshKey, total)
	for i := range keys {
		keys[i] = newKey(fmt.Sprintf("churn-%d", i))
	}
	if b.o.profileDir != "" {
		stop, err := b.profile("churn", int(b.o.churnFor.Seconds())+10)
		if err != nil {
			return Result{}, err
		}
		defer stop()
	}
	status, err := watchStatus(ctx, b.cluster.Config)
	if err != nil {
		return Result{}, err
	}
	defer status.stop()
	m := b.mark()
	start := time.Now()
	waits := make([]*wait, total)
	var procWaits []*wait // the same changes on the process agents of their pools
	changes := make([]statusChange, total)
	concerned := 0
	var late atomic.Int64
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	// previous holds, per NodeAccess, a channel closed when its last change returned.
	previous := map[string]chan struct{}{}
	for i := range total {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		name := names[rand.IntN(len(names))]
		// Rotate: drop the oldest key, add the new one; the size stays.
		keysOf[name] = append(keysOf[name][1:len(keysOf[name]):len(keysOf[name])], keys[i].line)
		patch, err := keysPatch(keysOf[name])
		if err != nil {
			return Result{}, err
		}
		nodes := b.nodeNames(poolOf(name))
		concerned += len(nodes)
		waits[i] = b.tracker.expect(keys[i].blob, true, nodes)
		if procs := b.procNodeNames(poolOf(name)); len(procs) > 0 {
			procWaits = append(procWaits, b.tracker.expect(keys[i].blob, true, procs))
		}
		before, done := previous[name], make(chan struct{})
		previous[name] = done
		wg.Go(func() {
			defer close(done)
			if before != nil {
				<-before
			}
			sent := time.Now()
			na := &nav1.NodeAccess{ObjectMeta: metav1.ObjectMeta{Name: name}}
			if err := b.patchNA(ctx, na, patch); err != nil {
				select {
				case errs <- fmt.Errorf("churn change %d: %w", i, err):
				default:
				}
				return
			}
			if sent.Sub(due) > b.o.lateAfter {
				late.Add(1)
			}
			changes[i] = statusChange{name: name, generation: na.Generation, sent: sent, returned: time.Now()}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return Result{}, err
	default:
	}
	r, counts, err := b.finishCounted("churn", m, concerned, waits...)
	if err != nil {
		return r, err
	}
	var procSamples []time.Duration
	for _, w := range procWaits {
		got, err := w.done(3 * time.Minute)
		if err != nil {
			return r, fmt.Errorf("churn, the process agents: %w", err)
		}
		procSamples = append(procSamples, got...)
	}
	if r.ProcessSamples = len(procSamples); r.ProcessSamples > 0 {
		r.ProcessP50ms, _, r.ProcessP99ms, r.ProcessMaxMs = percentiles(procSamples)
	}
	r.Late = int(late.Load())
	for i := range changes {
		changes[i].filesAt = waits[i].lastAt()
	}
	r.Churn = splitChurn(changes, waits, counts)
	// The status of the last changes follows their files by the manager's
	// status delay and the agents' report delay: wait for it, bounded.
	lags, missing := status.lags(changes, 30*time.Second)
	r.ReportLagP50ms, _, r.ReportLagP99ms, _ = percentiles(lags)
	r.ReportLagMissing = missing
	return r, nil
}

// steadyState counts requests and bytes while nothing changes, after a settle.
func (b *bench) steadyState() (Result, error) {
	time.Sleep(5 * time.Second) // the last reports and status writes, outside the window
	m := b.mark()
	time.Sleep(b.o.idle)
	counts, err := countRequests(b.audit, m.at, time.Now())
	if err != nil {
		return Result{}, err
	}
	bytes := b.bytes.snapshot().sub(m.bytes)
	return Result{
		Scenario: "idle", ByClient: counts.byKey,
		ManagerWrites: float64(counts.managerWrites), AgentRequests: float64(counts.agentRequests), AgentWrites: float64(counts.agentWrites),
		BytesPerChange: float64(bytes.total), WatchBytesPerChange: float64(bytes.watch),
		Note: fmt.Sprintf("totals over %s with nothing changing; watch requests excluded from the request counts, not from the bytes", b.o.idle),
	}, nil
}

// keysPatch is a merge patch setting alice's keys of a NodeAccess.
func keysPatch(keys []string) ([]byte, error) {
	user := nav1.UserAccess{Name: account}
	for _, k := range keys {
		user.Keys = append(user.Keys, nav1.AuthorizedKey{Key: k})
	}
	return json.Marshal(map[string]any{"spec": map[string]any{"users": []nav1.UserAccess{user}}})
}

func nodeAccess(name string, selector map[string]string, keys ...string) *nav1.NodeAccess {
	na := &nav1.NodeAccess{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: nav1.NodeAccessSpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: selector},
			Users:        []nav1.UserAccess{{Name: account}},
		},
	}
	for _, k := range keys {
		na.Spec.Users[0].Keys = append(na.Spec.Users[0].Keys, nav1.AuthorizedKey{Key: k})
	}
	return na
}

type sshKey struct{ line, blob string }

func newKey(comment string) sshKey {
	pub, _, err := ed25519.GenerateKey(cryptorand.Reader)
	if err != nil {
		panic(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		panic(err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
	return sshKey{line: line + " " + comment, blob: strings.Fields(line)[1]}
}

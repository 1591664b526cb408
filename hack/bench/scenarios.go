package main

import (
	"context"
	"crypto/ed25519"
	cryptorand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// grantUpdateRevoke returns the scenario: one NodeAccess selecting every
// node; grant creates it, update adds a key, revoke deletes it.
func (b *bench) grantUpdateRevoke(step string) func() (Result, error) {
	return func() (Result, error) {
		ctx := context.Background()
		nodes := b.nodeNames("")
		switch step {
		case "grant":
			k := newKey("grant")
			w := b.tracker.expect(k.blob, true, nodes)
			from := time.Now()
			na := nodeAccess("everyone", map[string]string{"bench": "yes"}, k.line)
			if err := b.k8s.Create(ctx, na); err != nil {
				return Result{}, err
			}
			return b.finish("grant", from, 1, w)
		case "update":
			k := newKey("update")
			w := b.tracker.expect(k.blob, true, nodes)
			from := time.Now()
			if err := b.updateNA(ctx, "everyone", func(na *nav1.NodeAccess) {
				na.Spec.Users[0].Keys = append(na.Spec.Users[0].Keys, nav1.AuthorizedKey{Key: k.line})
			}); err != nil {
				return Result{}, err
			}
			return b.finish("update", from, 1, w)
		default:
			na := &nav1.NodeAccess{}
			if err := b.k8s.Get(ctx, client.ObjectKey{Name: "everyone"}, na); err != nil {
				return Result{}, err
			}
			blob := strings.Fields(na.Spec.Users[0].Keys[0].Key)[1]
			w := b.tracker.expect(blob, false, nodes)
			from := time.Now()
			if err := b.k8s.Delete(ctx, na); err != nil {
				return Result{}, err
			}
			r, err := b.finish("revoke", from, 1, w)
			if err == nil {
				err = waitFor(2*time.Minute, "NodeAccess everyone gone", func() error {
					if err := b.k8s.Get(ctx, client.ObjectKey{Name: "everyone"}, &nav1.NodeAccess{}); err == nil {
						return errors.New("still there")
					}
					return nil
				})
			}
			return r, err
		}
	}
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

// finish waits for the expected writes, lets late requests settle, and
// fills in latencies and request counts for the changes made since from.
func (b *bench) finish(name string, from time.Time, changes int, waits ...*wait) (Result, error) {
	var samples []time.Duration
	for _, w := range waits {
		got, err := w.done(3 * time.Minute)
		if err != nil {
			return Result{}, fmt.Errorf("%s: %w", name, err)
		}
		samples = append(samples, got...)
	}
	time.Sleep(3 * time.Second) // status writes and reports that follow the files
	r := Result{Scenario: name, Changes: changes, Samples: len(samples)}
	r.P50ms, r.P95ms, r.P99ms, r.MaxMs = percentiles(samples)
	counts, err := countRequests(b.audit, from, time.Now())
	if err != nil {
		return r, err
	}
	r.ByClient = counts.byKey
	r.ManagerWrites = float64(counts.managerWrites) / float64(changes)
	r.AgentRequests = float64(counts.agentRequests) / float64(changes)
	r.AgentWrites = float64(counts.agentWrites) / float64(changes)
	return r, nil
}

// churn: churnObjects NodeAccess of churnKeys keys each, NodeAccess i on
// pool i%pools; then churnRate key additions per second for churnFor. Each
// change is timed on every node of its pool.
func (b *bench) churn() (Result, error) {
	ctx := context.Background()
	fmt.Printf("    churn: creating %d NodeAccess × %d keys\n", b.o.churnObjects, b.o.churnKeys)
	var setup []*wait
	names := make([]string, b.o.churnObjects)
	for i := range names {
		names[i] = fmt.Sprintf("team-%03d", i)
	}
	var mu sync.Mutex
	if err := parallel(names, 10, func(name string) error {
		i, _ := strconv.Atoi(strings.TrimPrefix(name, "team-"))
		pool := fmt.Sprintf("p%d", i%pools)
		keys := make([]string, b.o.churnKeys)
		var last sshKey
		for j := range keys {
			last = newKey(fmt.Sprintf("%s-%d", name, j))
			keys[j] = last.line
		}
		mu.Lock()
		setup = append(setup, b.tracker.expect(last.blob, true, b.nodeNames(pool)))
		mu.Unlock()
		return b.k8s.Create(ctx, nodeAccess(name, map[string]string{"pool": pool}, keys...))
	}); err != nil {
		return Result{}, err
	}
	for _, w := range setup {
		if _, err := w.done(5 * time.Minute); err != nil {
			return Result{}, fmt.Errorf("churn setup: %w", err)
		}
	}
	time.Sleep(3 * time.Second)

	fmt.Printf("    churn: %d changes per second for %s\n", b.o.churnRate, b.o.churnFor)
	// Change i is due at from + i/rate. A change issued late (the machine
	// is saturated) is issued at once, so that every run makes the same
	// number of changes; its latency still counts from its own API call.
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
	from := time.Now()
	var waits []*wait
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	late := 0
	for i := range total {
		if d := time.Until(from.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		} else if d < -interval {
			late++
		}
		name := names[rand.IntN(len(names))]
		idx, _ := strconv.Atoi(strings.TrimPrefix(name, "team-"))
		k := keys[i]
		waits = append(waits, b.tracker.expect(k.blob, true, b.nodeNames(fmt.Sprintf("p%d", idx%pools))))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.updateNA(ctx, name, func(na *nav1.NodeAccess) {
				// Rotate: drop the oldest key, add the new one; the size stays.
				keys := na.Spec.Users[0].Keys
				na.Spec.Users[0].Keys = append(keys[1:len(keys):len(keys)], nav1.AuthorizedKey{Key: k.line})
			}); err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return Result{}, err
	default:
	}
	if late > 0 {
		fmt.Printf("    churn: %d of %d changes issued more than %s late\n", late, total, interval)
	}
	return b.finish("churn", from, len(waits), waits...)
}

// steadyState counts requests while nothing changes, after a settle.
func (b *bench) steadyState() (Result, error) {
	time.Sleep(5 * time.Second)
	from := time.Now()
	time.Sleep(b.o.idle)
	counts, err := countRequests(b.audit, from, time.Now())
	if err != nil {
		return Result{}, err
	}
	return Result{
		Scenario: "idle", ByClient: counts.byKey,
		ManagerWrites: float64(counts.managerWrites), AgentRequests: float64(counts.agentRequests), AgentWrites: float64(counts.agentWrites),
		Note: fmt.Sprintf("totals over %s with nothing changing; watch requests excluded", b.o.idle),
	}, nil
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

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/agentdaemonset"
	"github.com/nodeaccess/nodeaccess-operator/internal/authorizedkeys"
	"github.com/nodeaccess/nodeaccess-operator/internal/keypolicy"
	"github.com/nodeaccess/nodeaccess-operator/internal/render"
)

// The bounds scenario: one more node, pool "bounds", whose agent (bin/agent,
// every feature on) receives as much as the manager admits for one node.
const (
	boundsNode = "node-bounds"
	boundsPool = "bounds"
	// boundsKeysNamespace holds the ConfigMaps the grants read their keys from.
	boundsKeysNamespace = "bench-bounds"
)

// boundsAccounts share the node's keys: each may hold at most
// MaxAccountBytes of key lines on one node.
var boundsAccounts = []string{account, "bob"}

// BoundsResult is what the bounds scenario measures besides the latency of
// filling the node (the row's percentiles; its max is when the files held
// every admitted key).
type BoundsResult struct {
	// Admitted and Refused count the NodeAccess objects the manager took
	// and refused (ClusterLimitExceeded); Keys is the admitted keys, all
	// of them found in the node's files.
	Admitted int `json:"admitted"`
	Refused  int `json:"refused"`
	Keys     int `json:"keys"`
	// SpecBytes is the admitted rendered grants' specs, encoded, as the
	// manager's bound counts them; ObjectBytes the whole objects as the API
	// server returns them (metadata included), what the node's watch carries.
	SpecBytes   int64 `json:"rendered_spec_bytes"`
	ObjectBytes int64 `json:"rendered_object_bytes"`
	// AccountBytes is, per account, the key-line bytes the manager's
	// ledger counts on the node.
	AccountBytes map[string]int `json:"account_bytes"`
	// AgentRSSMiB is the node's agent's peak RSS (VmHWM) and
	// AgentPrivateMiB its anonymous memory once its files were full;
	// HeadroomMiB is the agent container's memory limit minus the peak.
	AgentRSSMiB     float64 `json:"agent_rss_mib"`
	AgentPrivateMiB float64 `json:"agent_private_mib"`
	LimitMiB        float64 `json:"agent_memory_limit_mib"`
	HeadroomMiB     float64 `json:"headroom_mib"`
	// EmptiedMs is the time from the first deletion to the node's files
	// holding no managed key.
	EmptiedMs float64 `json:"emptied_ms"`
	// OtherNodeBytes is what each in-process agent (none concerned) read
	// from the API server during the whole scenario, on average.
	OtherNodeBytes float64 `json:"bytes_per_other_node"`
}

// boundsGrant is one NodeAccess of the scenario and the ConfigMap its
// keys come from: per account, some data keys of at most
// keypolicy.MaxKeysPerSource lines. The last key of every account is one
// shared key, on which the tracker waits.
type boundsGrant struct {
	name   string
	own    map[string][]string // per account, its own key lines
	shared sshKey
	n      int // keys per account
}

func newBoundsGrant(i, perAccount int) *boundsGrant {
	g := &boundsGrant{name: fmt.Sprintf("bounds-%02d", i), own: map[string][]string{}, shared: newKey("s"), n: perAccount}
	for _, acct := range boundsAccounts {
		for range perAccount - 1 {
			// A one-letter comment: the rendered key (fingerprint and JSON
			// field names) is then as large as it gets next to its line.
			g.own[acct] = append(g.own[acct], newKey("k").line)
		}
	}
	return g
}

// withKeys is g with n keys per account (the first n-1 and the shared one).
func (g *boundsGrant) withKeys(n int) *boundsGrant {
	c := *g
	c.n, c.own = n, map[string][]string{}
	for acct, lines := range g.own {
		c.own[acct] = lines[:n-1]
	}
	return &c
}

// lines is an account's key lines.
func (g *boundsGrant) lines(acct string) []string {
	return append(append([]string{}, g.own[acct]...), g.shared.line)
}

// objects are the grant's ConfigMap and NodeAccess.
func (g *boundsGrant) objects() (*corev1.ConfigMap, *nav1.NodeAccess) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: boundsKeysNamespace, Name: g.name}, Data: map[string]string{}}
	na := &nav1.NodeAccess{
		ObjectMeta: metav1.ObjectMeta{Name: g.name},
		Spec:       nav1.NodeAccessSpec{NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pool": boundsPool}}},
	}
	for _, acct := range boundsAccounts {
		user := nav1.UserAccess{Name: acct}
		lines := g.lines(acct)
		for s := 0; s*keypolicy.MaxKeysPerSource < len(lines); s++ {
			key := fmt.Sprintf("%s-%d", acct, s)
			cm.Data[key] = strings.Join(lines[s*keypolicy.MaxKeysPerSource:min(len(lines), (s+1)*keypolicy.MaxKeysPerSource)], "\n") + "\n"
			user.KeysFrom = append(user.KeysFrom, nav1.KeySource{ConfigMapKeyRef: &nav1.ObjectKeySelector{
				Namespace: boundsKeysNamespace, Name: g.name, Key: key,
			}})
		}
		na.Spec.Users = append(na.Spec.Users, user)
	}
	return cm, na
}

// footprint is what the manager's ledger counts for the grant, rendered by
// the manager's own code with its default key policy.
func (g *boundsGrant) footprint() render.Footprint {
	cm, na := g.objects()
	na.UID, na.Generation = types.UID(strings.Repeat("0", 36)), 1 // a UID's length
	sources := map[render.SourceRef]render.Source{}
	for key, v := range cm.Data {
		sources[render.SourceRef{Kind: render.SourceConfigMap, Namespace: cm.Namespace, Name: cm.Name, Key: key}] = render.Source{Content: v}
	}
	res := render.NodeAccess(na, sources, nil, render.Options{Policy: keypolicy.DefaultPolicy()}, time.Now())
	return render.FootprintOf(&res.Spec)
}

// planBounds makes the grants that fill the bounds node as far as the
// manager's bounds (render.DefaultClusterLimits, checked by the manager's
// ledger code) admit: full grants of render.MaxKeys keys, then the largest
// one that still fits, and one full grant more, which the manager must
// refuse.
func planBounds() (admit []*boundsGrant, over *boundsGrant) {
	ledger := render.NewLedger(render.DefaultClusterLimits)
	nodes := []map[string]string{{"pool": boundsPool}}
	vocabulary := []string{"pool"}
	fits := func(g *boundsGrant) bool { return ledger.CheckNodes(g.name, g.footprint(), nodes, vocabulary) == nil }
	full := render.MaxKeys / len(boundsAccounts)
	for i := 0; ; i++ {
		g := newBoundsGrant(i, full)
		if fits(g) {
			ledger.Set(g.name, g.footprint())
			admit = append(admit, g)
			continue
		}
		lo, hi := 0, full // the largest n < full that fits is in [lo, hi)
		for hi-lo > 1 {
			if mid := (lo + hi) / 2; fits(g.withKeys(mid)) {
				lo = mid
			} else {
				hi = mid
			}
		}
		if lo > 0 {
			admit = append(admit, g.withKeys(lo))
			i++
		}
		return admit, newBoundsGrant(i, full)
	}
}

// bounds runs the scenario: it fills the bounds node with the planned
// grants, measures the node's agent, then deletes them.
func (b *bench) bounds() (Result, error) {
	ctx := context.Background()
	admit, over := planBounds()
	planned := append(append([]*boundsGrant{}, admit...), over)
	fmt.Printf("    bounds: %d NodeAccess for one node (%d planned to fit, the last one over), %d keys each at most, for %v\n",
		len(planned), len(admit), render.MaxKeys, boundsAccounts)

	tracked := make([]string, 0, len(boundsAccounts))
	accounts := make([]hostAccount, 0, len(boundsAccounts))
	for _, acct := range boundsAccounts {
		tracked = append(tracked, boundsNode+"/"+acct)
		accounts = append(accounts, hostAccount{name: acct, track: boundsNode + "/" + acct})
	}
	root, err := b.newHostOf(boundsNode, accounts)
	if err != nil {
		return Result{}, err
	}
	if err := b.k8s.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: boundsNode, Labels: map[string]string{
		"kubernetes.io/os": "linux", "pool": boundsPool,
	}}}); err != nil {
		return Result{}, err
	}
	agentProc, err := b.startProcAgent(boundsNode, root)
	if err != nil {
		return Result{}, err
	}
	defer agentProc.Stop(syscall.SIGTERM)
	if err := waitFor(time.Minute, "the bounds node's agent reporting", func() error {
		return b.k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: boundsNode}, &nav1.NodeAccessReport{})
	}); err != nil {
		return Result{}, err
	}
	if err := b.k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: boundsKeysNamespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return Result{}, err
	}
	names := make([]string, len(planned))
	byName := map[string]*boundsGrant{}
	for i, g := range planned {
		cm, _ := g.objects()
		if err := b.k8s.Create(ctx, cm); err != nil {
			return Result{}, fmt.Errorf("creating key source %s: %w", g.name, err)
		}
		names[i], byName[g.name] = g.name, g
	}

	// Fill: every grant at once; each is timed on both accounts' files.
	start := b.mark()
	waits := map[string]*wait{}
	for _, g := range planned {
		waits[g.name] = b.tracker.expect(g.shared.blob, true, tracked)
	}
	if err := parallel(names, 8, func(name string) error {
		_, na := byName[name].objects()
		return b.k8s.Create(ctx, na)
	}); err != nil {
		return Result{}, err
	}
	admitted, refused, err := b.admissions(ctx, names)
	if err != nil {
		return Result{}, err
	}
	var fill []*wait
	for _, name := range names {
		if admitted[name] {
			fill = append(fill, waits[name])
		} else {
			waits[name].forget()
		}
	}
	if len(fill) == 0 {
		return Result{}, errors.New("bounds: the manager admitted none of the NodeAccess objects")
	}
	r, err := b.finish("bounds", start, 0, fill...)
	if err != nil {
		return r, err
	}
	br := &BoundsResult{Admitted: len(fill), Refused: refused, AccountBytes: map[string]int{}}
	r.Bounds = br
	br.AgentPrivateMiB = anonMiB(agentProc.Pid())

	// The files hold every admitted key, and the manager's figures for them.
	for _, acct := range boundsAccounts {
		have, err := managedBlobs(filepath.Join(root, "home", acct, ".ssh", "authorized_keys"))
		if err != nil {
			return r, err
		}
		for _, name := range names {
			if !admitted[name] {
				continue
			}
			for _, line := range byName[name].lines(acct) {
				if !have[strings.Fields(line)[1]] {
					return r, fmt.Errorf("bounds: a key of %s for %s is not in the node's file", name, acct)
				}
				br.Keys++
			}
		}
	}
	rendered := &nav1.RenderedNodeAccessList{}
	if err := b.k8s.List(ctx, rendered, client.InNamespace(namespace)); err != nil {
		return r, err
	}
	for i := range rendered.Items {
		item := &rendered.Items[i]
		if !admitted[item.Name] {
			continue
		}
		spec, _ := json.Marshal(item.Spec)
		obj, _ := json.Marshal(item)
		br.SpecBytes += int64(len(spec))
		br.ObjectBytes += int64(len(obj))
		for acct, n := range render.FootprintOf(&item.Spec).Accounts {
			br.AccountBytes[acct] += n
		}
	}

	// A login of each account with a granted key, which the agent
	// attributes (untrusted: no sshd session behind it).
	var loginKey sshKey
	for _, name := range names {
		if admitted[name] {
			loginKey = byName[name].shared
			break
		}
	}
	if err := b.login(ctx, boundsNode, boundsAccounts, loginKey); err != nil {
		return r, err
	}

	// Empty: delete the refused grants first (nothing of theirs is on
	// the node), then the admitted ones.
	emptyFrom := time.Now()
	var empty []*wait
	for _, name := range names {
		if admitted[name] {
			empty = append(empty, b.tracker.expect(byName[name].shared.blob, false, tracked))
		}
	}
	for _, first := range []bool{false, true} {
		if err := parallel(names, 8, func(name string) error {
			if admitted[name] != first {
				return nil
			}
			return client.IgnoreNotFound(b.k8s.Delete(ctx, &nav1.NodeAccess{ObjectMeta: metav1.ObjectMeta{Name: name}}))
		}); err != nil {
			return r, err
		}
	}
	var last time.Time
	for _, w := range empty {
		if _, err := w.done(3 * time.Minute); err != nil {
			return r, fmt.Errorf("bounds, deleting: %w", err)
		}
		last = maxTime(last, w.lastAt())
	}
	br.EmptiedMs = float64(last.Sub(emptyFrom).Microseconds()) / 1000
	for _, acct := range boundsAccounts {
		have, err := managedBlobs(filepath.Join(root, "home", acct, ".ssh", "authorized_keys"))
		if err != nil {
			return r, err
		}
		if len(have) > 0 {
			return r, fmt.Errorf("bounds: %d managed keys left in %s's file", len(have), acct)
		}
	}
	if err := waitFor(2*time.Minute, "the bounds NodeAccess objects gone", func() error {
		list := &nav1.NodeAccessList{}
		if err := b.k8s.List(ctx, list); err != nil {
			return err
		}
		for _, na := range list.Items {
			if byName[na.Name] != nil {
				return fmt.Errorf("%s still there", na.Name)
			}
		}
		return nil
	}); err != nil {
		return r, err
	}
	br.OtherNodeBytes = float64(b.bytes.snapshot().sub(start.bytes).total) / float64(b.n)

	br.AgentRSSMiB, _ = procStats(agentProc.Pid())
	limit := agentdaemonset.DaemonSet(agentdaemonset.Options{Namespace: namespace}).Spec.Template.Spec.Containers[0].Resources.Limits.Memory()
	br.LimitMiB = float64(limit.Value()) / (1 << 20)
	br.HeadroomMiB = br.LimitMiB - br.AgentRSSMiB
	r.Note = "one node, its agent a process with every feature; latency from before the first create to each grant's keys in both accounts' files"

	for _, name := range names {
		_ = b.k8s.Delete(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: boundsKeysNamespace, Name: name}})
	}
	agentProc.Stop(syscall.SIGTERM)
	return r, b.k8s.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: boundsNode}})
}

// admissions waits until the manager has decided on every named NodeAccess
// (its Degraded condition at the current generation), and says which it
// admitted and how many it refused for the cluster's limits.
func (b *bench) admissions(ctx context.Context, names []string) (map[string]bool, int, error) {
	admitted, refused := map[string]bool{}, 0
	err := waitFor(3*time.Minute, "the manager deciding on the bounds NodeAccess objects", func() error {
		admitted, refused = map[string]bool{}, 0
		for _, name := range names {
			na := &nav1.NodeAccess{}
			if err := b.k8s.Get(ctx, client.ObjectKey{Name: name}, na); err != nil {
				return err
			}
			c := meta.FindStatusCondition(na.Status.Conditions, nav1.DegradedCondition)
			switch {
			case c == nil || c.ObservedGeneration != na.Generation:
				return fmt.Errorf("%s not yet decided", name)
			case c.Reason == nav1.ClusterLimitReason:
				refused++
			case c.Status == metav1.ConditionFalse:
				admitted[name] = true
			default:
				// Reasons say what, never which key: safe to repeat.
				return fmt.Errorf("%s is degraded: %s", name, c.Reason)
			}
		}
		return nil
	})
	return admitted, refused, err
}

// managedBlobs reads an authorized_keys file and returns the key blobs of
// its managed lines (those whose last field is the attribution).
func managedBlobs(path string) (map[string]bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, err
	}
	blobs := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || !strings.HasPrefix(f[len(f)-1], authorizedkeys.AttributionPrefix) {
			continue
		}
		for i := range f[:len(f)-1] {
			if strings.HasPrefix(f[i], "ssh-") || strings.HasPrefix(f[i], "ecdsa-") || strings.HasPrefix(f[i], "sk-") {
				blobs[f[i+1]] = true
				break
			}
		}
	}
	return blobs, nil
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

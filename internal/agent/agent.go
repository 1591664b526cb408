// Package agent is the node-side key writer. One agent runs per node: it
// watches the rendered NodeAccess objects and its own Node, computes what the
// node must hold (desiredstate.ForNode), writes each account's managed block
// (authorizedkeys, nodewriter) and reports the result in the node's
// NodeAccessReport. It reconciles from the full desired state every time, so a
// restart or a missed event converges without replay, and it removes nothing
// before its caches have synced (controller-runtime starts reconcilers only then).
package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/authorizedkeys"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
	"github.com/nodeaccess/nodeaccess-operator/internal/nodewriter"
)

// FieldOwner is the server-side apply field manager of the agents' writes.
const FieldOwner = "nodeaccess-agent"

// Config is what one agent needs to know.
type Config struct {
	// NodeName is the node the agent runs on.
	NodeName string
	// Namespace holds the RenderedNodeAccess objects.
	Namespace string
	// HostRoot is where the host's /etc/passwd and homes are mounted.
	HostRoot string
	// Resync is the longest time between two full applies, even without events.
	Resync time.Duration
	// Heartbeat is the longest time between two report writes.
	Heartbeat time.Duration
	// OnWrite, when set, is called after each write that changed an
	// account's file, with the bytes written (benchmarks time propagation
	// by it, at the moment the file changes, without polling).
	OnWrite func(account string, content []byte)
}

// Agent reconciles one node.
type Agent struct {
	cfg    Config
	client client.Client
	writer *nodewriter.Writer
	files  *fileWatcher
	now    func() time.Time

	// managed holds accounts whose files held a managed block at the last
	// apply; they are revisited even after no grant names them any more.
	managed map[string]bool
	// lastScan is when every account of the host was last checked for a block.
	lastScan time.Time
	// report is the last report written, and whether the object exists.
	report        *nav1.NodeAccessReportStatus
	reportCreated bool

	mu sync.Mutex
}

// New returns an agent for cfg, using the manager's cached client for reads.
func New(cfg Config, c client.Client) (*Agent, error) {
	w, err := nodewriter.New(cfg.HostRoot)
	if err != nil {
		return nil, err
	}
	files, err := newFileWatcher(cfg.HostRoot)
	if err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, client: c, writer: w, files: files, now: time.Now, managed: map[string]bool{}}, nil
}

// SetupWithManager registers the agent's controller: every watched event, and
// every file event under a managed .ssh directory, reconciles the one node.
func (a *Agent) SetupWithManager(mgr ctrl.Manager) error {
	nodeRequest := []reconcile.Request{{NamespacedName: types.NamespacedName{Name: a.cfg.NodeName}}}
	toNode := func(context.Context, client.Object) []reconcile.Request { return nodeRequest }
	err := ctrl.NewControllerManagedBy(mgr).
		Named("agent").
		// Several agents share one process in tests and benchmarks; each
		// still has its own client, cache and queue.
		WithOptions(controller.Options{MaxConcurrentReconciles: 1, SkipNameValidation: ptr.To(true)}).
		WatchesRawSource(source.Kind(mgr.GetCache(), client.Object(&corev1.Node{}), handler.EnqueueRequestsFromMapFunc(toNode))).
		WatchesRawSource(source.Kind(mgr.GetCache(), client.Object(&nav1.RenderedNodeAccess{}), handler.EnqueueRequestsFromMapFunc(toNode))).
		WatchesRawSource(source.Channel(a.files.events, handler.TypedEnqueueRequestsFromMapFunc(
			func(context.Context, struct{}) []reconcile.Request { return nodeRequest }))).
		Complete(a)
	if err != nil {
		return fmt.Errorf("setting up agent controller: %w", err)
	}
	return mgr.Add(a.files)
}

// Reconcile brings every account's file in line with the rendered grants that
// select this node, then reports.
func (a *Agent) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	log := ctrl.LoggerFrom(ctx)
	if req.Name != a.cfg.NodeName {
		return ctrl.Result{}, nil
	}
	now := a.now()

	node := &corev1.Node{}
	if err := a.client.Get(ctx, types.NamespacedName{Name: a.cfg.NodeName}, node); err != nil {
		if apierrors.IsNotFound(err) {
			// Without the node's labels nothing can be decided; keep the files.
			log.Info("Waiting for the Node object", "node", a.cfg.NodeName)
			return ctrl.Result{RequeueAfter: a.cfg.Resync}, nil
		}
		return ctrl.Result{}, fmt.Errorf("reading node: %w", err)
	}
	var rendered nav1.RenderedNodeAccessList
	if err := a.client.List(ctx, &rendered, client.InNamespace(a.cfg.Namespace)); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing rendered grants: %w", err)
	}
	plan := desiredstate.ForNode(node.Labels, rendered.Items, now)

	accounts := a.accountsToVisit(ctx, plan, now)
	results := make(map[string]accountResult, len(accounts))
	for _, name := range accounts {
		res := a.applyAccount(name, plan.Accounts[name])
		results[name] = res
		if res.err != nil {
			log.Info("Applying keys failed", "user", name, "reason", reasonOf(res.err), "error", res.err.Error())
		} else if res.changed {
			log.Info("Updated authorized_keys", "user", name, "grants", len(plan.Accounts[name]))
		}
	}

	if err := a.writeReport(ctx, node, buildReport(plan, results), now); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: a.requeueAfter(plan, now)}, nil
}

// accountsToVisit lists the accounts this pass must write: those the plan
// names, those managed before, and, at every resync, every account of the
// host whose file holds a managed block (this catches blocks left by an
// earlier agent process).
func (a *Agent) accountsToVisit(ctx context.Context, plan desiredstate.Plan, now time.Time) []string {
	visit := map[string]bool{}
	for name := range plan.Accounts {
		visit[name] = true
	}
	for name := range a.managed {
		visit[name] = true
	}
	if a.lastScan.IsZero() || now.Sub(a.lastScan) >= a.cfg.Resync {
		a.lastScan = now
		accounts, err := a.writer.Accounts()
		if err != nil {
			ctrl.LoggerFrom(ctx).Info("Listing host accounts failed", "error", err.Error())
		}
		for _, acct := range accounts {
			if visit[acct.Name] {
				continue
			}
			content, err := a.writer.ReadAccount(acct)
			if err == nil && len(authorizedkeys.Parse(content).Owners()) > 0 {
				visit[acct.Name] = true
			}
		}
	}
	names := make([]string, 0, len(visit))
	for name := range visit {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// accountResult is the outcome of writing one account's file.
type accountResult struct {
	changed bool
	// owners are the grants whose sections the file holds after the pass.
	owners []authorizedkeys.Owner
	err    error
}

func (a *Agent) applyAccount(name string, sections []authorizedkeys.Section) accountResult {
	var res accountResult
	var before []authorizedkeys.Owner
	var written []byte
	result, err := a.writer.Update(name, func(current []byte) ([]byte, error) {
		before = authorizedkeys.Parse(current).Owners()
		out, err := authorizedkeys.Render(current, sections)
		written = out
		return out, err
	})
	if err != nil {
		// Nothing was written: the file holds what it held.
		res.err = err
		res.owners = before
		if len(before) > 0 {
			a.managed[name] = true
		}
		return res
	}
	res.changed = result.Changed
	if result.Changed && a.cfg.OnWrite != nil {
		a.cfg.OnWrite(name, written)
	}
	for _, s := range sections {
		if len(s.Keys) > 0 {
			res.owners = append(res.owners, authorizedkeys.Owner{Name: s.Owner, UID: s.UID})
		}
	}
	if len(res.owners) > 0 {
		a.managed[name] = true
		a.files.watch(result.Path)
	} else {
		delete(a.managed, name)
	}
	return res
}

func (a *Agent) requeueAfter(plan desiredstate.Plan, now time.Time) time.Duration {
	after := a.cfg.Resync
	if !plan.NextChange.IsZero() {
		if d := plan.NextChange.Sub(now); d < after {
			after = d
		}
	}
	if hb := a.cfg.Heartbeat; a.report != nil && a.report.HeartbeatTime != nil {
		if d := a.report.HeartbeatTime.Add(hb).Sub(now); d < after {
			after = d
		}
	}
	if after <= 0 {
		after = time.Millisecond
	}
	return after
}

// reasonOf returns the CamelCase reason of a writer or render error.
func reasonOf(err error) string {
	var werr *nodewriter.Error
	if errors.As(err, &werr) {
		return string(werr.Reason)
	}
	return "InvalidKeys"
}

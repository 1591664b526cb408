// Package agent is the node-side key writer. One agent runs per node: it
// watches the rendered NodeAccess objects and its own Node, computes what the
// node must hold (desiredstate.ForNode), writes each account's managed block
// (authorizedkeys, nodewriter) and reports the result in the node's
// NodeAccessReport. It reconciles from the full desired state every time, so a
// restart or a missed event converges without replay, and it removes nothing
// before its informers have synced (Runner starts passes only then).
//
// The agent is built on client-go alone, not on a controller manager: it
// reads two kinds, writes one, and runs on every node, so its memory is
// paid once per node.
package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/authorizedkeys"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
	"github.com/nodeaccess/nodeaccess-operator/internal/nodewriter"
)

// FieldOwner is the server-side apply field manager of the agents' writes.
const FieldOwner = "nodeaccess-agent"

// DefaultReportDelay is the agent binary's --report-delay: with its random
// spread, reports follow a change within 0.5 to 1 s.
const DefaultReportDelay = 500 * time.Millisecond

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
	// ReportDelay is how long after a change its report is written, plus up
	// to as much again at random; zero writes at once. The first report of
	// a process and heartbeats are never delayed.
	ReportDelay time.Duration
	// SSHDAddress is the node's sshd (host:port; see SSHDAddress), whose
	// version and host keys the agent probes at start and every Resync and
	// reports; empty: not probed.
	SSHDAddress string
	// OnWrite, when set, is called after each write that changed an
	// account's file, with the bytes written (benchmarks time propagation
	// by it, at the moment the file changes, without polling).
	OnWrite func(account string, content []byte)
}

// source is where an agent reads its node and the rendered grants: informer
// stores (Runner) or the API server itself (NewPolling).
type source interface {
	// node returns the agent's Node, or nil when it does not exist.
	node(ctx context.Context) (*corev1.Node, error)
	// rendered returns the rendered grants; callers must not modify them.
	rendered(ctx context.Context) ([]nav1.RenderedNodeAccess, error)
}

// Agent reconciles one node.
type Agent struct {
	cfg    Config
	src    source
	api    *apiClient
	writer *nodewriter.Writer
	files  *fileWatcher
	sshd   *sshdProbe
	now    func() time.Time

	// managed holds accounts whose files held a managed block at the last
	// apply; they are revisited even after no grant names them any more.
	managed map[string]bool
	// lastScan is when every account of the host was last checked for a block.
	lastScan time.Time
	// report is the last report written, and whether the object exists.
	report        *nav1.NodeAccessReportStatus
	reportCreated bool
	// reportOwner is the UID of the Node the report object was written for.
	reportOwner types.UID
	// reportDue is when a delayed report write is due; zero when none waits.
	reportDue time.Time

	mu sync.Mutex
}

func newAgent(cfg Config, src source, api *apiClient) (*Agent, error) {
	w, err := nodewriter.New(cfg.HostRoot)
	if err != nil {
		return nil, err
	}
	files, err := newFileWatcher(cfg.HostRoot)
	if err != nil {
		return nil, err
	}
	sshd, err := newSSHDProbe(cfg.SSHDAddress, cfg.Resync)
	if err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, src: src, api: api, writer: w, files: files, sshd: sshd, now: time.Now, managed: map[string]bool{}}, nil
}

// NewPolling returns an agent that reads the API server directly at each
// Sync, without informers or a file watcher: the benchmark's polling
// baseline, run by calling Sync on a timer.
func NewPolling(restCfg *rest.Config, cfg Config) (*Agent, error) {
	api, err := newAPIClient(restCfg, cfg.NodeName)
	if err != nil {
		return nil, err
	}
	a, err := newAgent(cfg, api.direct(cfg.Namespace), api)
	if err != nil {
		return nil, err
	}
	a.files.close()
	return a, nil
}

// Sync brings every account's file in line with the rendered grants that
// select this node, then reports. It returns when the next pass is due even
// if nothing is seen to change (an expiry, the resync or the heartbeat).
func (a *Agent) Sync(ctx context.Context) (time.Duration, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	log := logr.FromContextOrDiscard(ctx)
	now := a.now()

	node, err := a.src.node(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading node: %w", err)
	}
	if node == nil {
		// Without the node's labels nothing can be decided; keep the files.
		log.Info("Waiting for the Node object", "node", a.cfg.NodeName)
		return a.cfg.Resync, nil
	}
	rendered, err := a.src.rendered(ctx)
	if err != nil {
		return 0, fmt.Errorf("listing rendered grants: %w", err)
	}
	plan := desiredstate.ForNode(node.Labels, rendered, now)

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

	report := buildReport(plan, results)
	report.SSHD = a.sshd.status()
	reportIn, err := a.writeReport(ctx, node, report, now)
	if err != nil {
		return 0, err
	}
	after := a.requeueAfter(plan, now)
	if reportIn > 0 && reportIn < after {
		after = reportIn
	}
	return after, nil
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
			logr.FromContextOrDiscard(ctx).Info("Listing host accounts failed", "error", err.Error())
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

// Package agent is the node-side key writer. One agent runs per node: it
// watches the rendered NodeAccess objects and its own Node, computes what the
// node must hold (desiredstate.ForNode), writes each account's managed block
// (authorizedkeys, nodewriter) and reports the result in the node's
// NodeAccessReport. It reconciles from the full desired state every time, so a
// restart or a missed event converges without replay, and it removes nothing
// before its informers have synced (Runner starts passes only then).
//
// The report says only what a pass proved: the keys found in each file
// after the pass, not the keys meant to be written. An account whose file
// cannot be read may hold anything, so every grant that may have keys
// there is reported as possibly held, never as gone.
//
// The agent is built on client-go alone, not on a controller manager: it
// reads two kinds, writes one, and runs on every node, so its memory is
// paid once per node.
//
// Its own Node and ConfigMap types (coretypes.go) are no API of the
// project: the marker below keeps CRD generation out of the package.
//
// +kubebuilder:skip
package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/authorizedkeys"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
	"github.com/nodeaccess/nodeaccess-operator/internal/nodewriter"
)

// FieldOwner is the server-side apply field manager of the agents' writes.
const FieldOwner = "nodeaccess-agent"

// ErrPasswdReplaced ends an agent whose view of the host's /etc/passwd is a
// file the host has replaced (a single-file mount keeps the old inode): the
// agent stops, leaving every file as it is, so that its restart mounts the
// new one and accounts added since are served.
var ErrPasswdReplaced = errors.New("the host's /etc/passwd was replaced; restarting to read the new one")

// DefaultReportDelay is the agent binary's --report-delay: with its random
// spread, reports follow a change within 0.5 to 1 s (on a cluster within
// the manager's report budget; see Agent.reportSpread).
const DefaultReportDelay = 500 * time.Millisecond

// DefaultReportInterval is the agent binary's --report-interval: a node
// under a stream of changes writes its report at most every 5 s.
const DefaultReportInterval = 5 * time.Second

// Config is what one agent needs to know.
type Config struct {
	// NodeName is the node the agent runs on.
	NodeName string
	// Namespace holds the RenderedNodeAccess objects.
	Namespace string
	// HostRoot is where the host's /etc/passwd and homes are mounted.
	HostRoot string
	// HomeRoots are the host directories under which homes are written
	// (each mounted under HostRoot); empty means /home.
	HomeRoots []string
	// AllowRoot lets keys be written for accounts with uid 0 (root and any
	// other name for it); without it their keys are only ever removed.
	AllowRoot bool
	// Resync is the longest time between two full applies, even without events.
	Resync time.Duration
	// Heartbeat is the longest time between two report writes.
	Heartbeat time.Duration
	// ReportDelay is how long after a change its report is written, plus up
	// to as much again at random (or, on a cluster whose published report
	// interval is longer than ReportInterval, up to that interval: see
	// Agent.reportSpread); zero writes at once. The first report of
	// a process and heartbeats are never delayed.
	ReportDelay time.Duration
	// ReportInterval is the shortest time between two writes of a changed
	// report: changes within it make one write at its end, so a node
	// under churn costs the API server one write per interval, not one per
	// change. Zero: no minimum. Files are always written at once. The
	// manager may ask for a longer one as the cluster grows (see
	// Agent.reportInterval).
	ReportInterval time.Duration
	// SSHDAddress is the node's sshd (host:port; see SSHDAddress), whose
	// version and host keys the agent probes at start and every Resync and
	// reports; empty: not probed.
	SSHDAddress string
	// SSHDLogs are the host paths of the syslog files where the node's sshd
	// logs (under HostRoot): the agent follows them and reports the key
	// logins it reads; empty: logins are not tracked.
	SSHDLogs []string
	// EndSessions ends the sshd sessions that logged in with a key when no
	// grant gives that key to the account any more. It needs SSHDLogs, and
	// the host's PID namespace to verify and signal sessions.
	EndSessions bool
	// ProcRoot is the /proc that shows the node's processes; "/proc" when empty.
	ProcRoot string
}

// source is where an agent reads its node and the rendered grants: the
// Runner's informer stores.
type source interface {
	// node returns the agent's Node, or nil when it does not exist.
	node(ctx context.Context) (*nodeMeta, error)
	// rendered returns the rendered grants; callers must not modify them.
	rendered(ctx context.Context) ([]nav1.RenderedNodeAccess, error)
	// reportInterval returns the report interval the manager published for
	// the cluster's size, if it published one (package nodefilter).
	reportInterval() (time.Duration, bool)
}

// Agent reconciles one node.
type Agent struct {
	cfg    Config
	src    source
	api    *apiClient
	writer *nodewriter.Writer
	files  *fileWatcher
	sshd   *sshdProbe
	logins *loginTracker
	now    func() time.Time
	// planner computes each pass's plan, again only for grants that changed.
	planner desiredstate.Planner

	// held maps an account to the grants its file held, with their key
	// lines, at the end of the last pass that proved it; an account whose
	// file could not be read keeps what was last proven, since those keys
	// may still be there. Accounts in it are revisited at every pass.
	held map[string]map[authorizedkeys.Owner]int
	// lastWrites are, by account, the last render a pass left in the file.
	lastWrites map[string]lastWrite
	// unattributed are grants an earlier agent process reported as held on
	// this node without naming the account; they stay possibly held until
	// a scan of every account proves where they are, or that they are gone.
	unattributed map[authorizedkeys.Owner]bool
	// seeded is set once the earlier process's report has been read.
	seeded bool
	// lastScan is when every account of the host was last checked for a block.
	lastScan time.Time
	// report is the last report written, and whether the object exists.
	report        *nav1.NodeAccessReportStatus
	reportCreated bool
	// reportOwner is the UID of the Node the report object was written for.
	reportOwner types.UID
	// reportDue is when a delayed report write is due; zero when none waits.
	reportDue time.Time
	// reportWritten is when the report was last written.
	reportWritten time.Time
	// reports writes the report apart from the passes; reporting is set
	// while a job of this agent's is with it.
	reports   *reportWriter
	reporting bool
	// reportRetry is when a failed report write may be tried again, and
	// reportBackoff the wait that set it.
	reportRetry   time.Time
	reportBackoff time.Duration

	mu sync.Mutex
}

func newAgent(cfg Config, src source, api *apiClient) (*Agent, error) {
	w, err := nodewriter.New(cfg.HostRoot, nodewriter.Options{HomeRoots: cfg.HomeRoots, AllowRoot: cfg.AllowRoot})
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
	procRoot := cfg.ProcRoot
	if procRoot == "" {
		procRoot = "/proc"
	}
	logins, err := newLoginTracker(cfg.HostRoot, cfg.SSHDLogs, procRoot, cfg.EndSessions)
	if err != nil {
		return nil, err
	}
	return &Agent{
		cfg: cfg, src: src, api: api, writer: w, files: files, sshd: sshd, logins: logins, now: time.Now,
		held: map[string]map[authorizedkeys.Owner]int{}, lastWrites: map[string]lastWrite{}, unattributed: map[authorizedkeys.Owner]bool{},
		reports: newReportWriter(),
	}, nil
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
	if replaced, err := a.writer.PasswdReplaced(); err == nil && replaced {
		return 0, ErrPasswdReplaced
	}
	if !a.seeded {
		if err := a.seed(ctx); err != nil {
			return 0, err
		}
	}
	rendered, err := a.src.rendered(ctx)
	if err != nil {
		return 0, fmt.Errorf("listing rendered grants: %w", err)
	}
	sshdExpiry := a.sshd.understandsUTCExpiry()
	plan := a.planner.ForNode(node.Labels, rendered, now, desiredstate.Options{SSHDExpiry: sshdExpiry})
	a.logins.update(plan)

	names, scan := a.accountsToVisit(ctx, plan, now)
	uids := a.knownUIDs(plan)
	results := make(map[string]accountResult, len(names))
	for _, name := range names {
		res := a.applyAccount(name, plan.Accounts[name], uids)
		results[name] = res
		switch {
		case res.err != nil:
			log.Info("Applying keys failed", "user", name, "reason", reasonOf(res.err), "keysKnown", res.state != nodewriter.Unknown, "error", res.err.Error())
		case res.changed:
			log.Info("Updated authorized_keys", "user", name, "grants", len(plan.Accounts[name]))
		}
	}
	a.resolveUnattributed(results, scan)
	a.logins.endRevoked(ctx)

	report := buildReport(plan, results, a.unattributedList())
	report.SSHD = a.sshd.status()
	report.Logins, report.LoginTracking = a.logins.status()
	report.ExpiryEnforcedBy = nav1.ExpiryByAgent
	if sshdExpiry {
		report.ExpiryEnforcedBy = nav1.ExpiryBySSHDAndAgent
	}
	reportIn := a.writeReport(ctx, node, report, now)
	after := a.requeueAfter(plan, results, now)
	if reportIn > 0 && reportIn < after {
		after = reportIn
	}
	return after, nil
}

// seed reads the report an earlier agent process left for this node: the
// grants it said were held, or possibly held, stay so until this process
// proves otherwise. Without it, a grant deleted while no agent ran, in an
// account whose file cannot be read now, would be forgotten.
func (a *Agent) seed(ctx context.Context) error {
	prev, err := a.api.getReport(ctx)
	if err != nil {
		return fmt.Errorf("reading the node's earlier report: %w", err)
	}
	if prev != nil {
		a.logins.seed(&prev.Status)
		for _, g := range prev.Status.Grants {
			if g.Keys == 0 && g.Applied {
				continue // proven: applied with no key, nothing to remember
			}
			o := authorizedkeys.Owner{Name: g.Name, UID: g.UID}
			if len(g.Accounts) == 0 {
				if g.Keys > 0 || g.Reason == nav1.RevocationFailedReason || g.Reason == nav1.PossiblyHeldReason {
					a.unattributed[o] = true
				}
				continue
			}
			for _, acct := range g.Accounts {
				if a.held[acct] == nil {
					a.held[acct] = map[authorizedkeys.Owner]int{}
				}
				a.held[acct][o] = max(a.held[acct][o], 0)
			}
		}
	}
	a.seeded = true
	return nil
}

// scanResult is what a scan of every host account found.
type scanResult struct {
	// done is true when this pass scanned every account.
	done bool
	// unreadable counts accounts under the home roots whose files could not be read.
	unreadable int
}

// accountsToVisit lists the accounts this pass must write: those the plan
// names, those that held (or may hold) keys, and, at every resync, every
// account of the host whose file holds a managed block (this catches blocks
// left by an earlier agent process).
func (a *Agent) accountsToVisit(ctx context.Context, plan desiredstate.Plan, now time.Time) ([]string, scanResult) {
	visit := map[string]bool{}
	for name := range plan.Accounts {
		visit[name] = true
	}
	for name := range a.held {
		visit[name] = true
	}
	var scan scanResult
	if a.lastScan.IsZero() || now.Sub(a.lastScan) >= a.cfg.Resync {
		a.lastScan = now
		scan.done = true
		accounts, err := a.writer.Accounts()
		if err != nil {
			logr.FromContextOrDiscard(ctx).Info("Listing host accounts failed", "error", err.Error())
			scan.unreadable++
		}
		for _, acct := range accounts {
			if visit[acct.Name] || a.writer.CheckHome(acct) != nil {
				continue // visited anyway, or a home the agent never writes
			}
			content, state, _ := a.writer.ReadAccount(acct)
			switch {
			case state == nodewriter.Unknown:
				scan.unreadable++
			case state == nodewriter.Read && len(authorizedkeys.Parse(content).Holdings()) > 0:
				visit[acct.Name] = true
			}
		}
	}
	names := make([]string, 0, len(visit))
	for name := range visit {
		names = append(names, name)
	}
	sort.Strings(names)
	return names, scan
}

// knownUIDs maps grant names to UIDs, from the plan and from what files
// held: files written before every grant had a header name some grants
// only in the attribution field.
func (a *Agent) knownUIDs(plan desiredstate.Plan) map[string]string {
	uids := map[string]string{}
	for _, held := range a.held {
		for o := range held {
			if o.UID != "" {
				uids[o.Name] = o.UID
			}
		}
	}
	for _, g := range plan.Grants {
		uids[g.Name] = g.UID
	}
	return uids
}

// accountResult is the outcome of one account in one pass.
type accountResult struct {
	// state is what the pass proved about the file.
	state   nodewriter.State
	changed bool
	// held are the grants whose key lines the file holds after the pass,
	// with their counts, when state is Read; when state is Unknown, the
	// grants it may hold (what was last proven).
	held map[authorizedkeys.Owner]int
	// refused is set when keys the plan gives the account were not written
	// although the file was (root not allowed, or the file would be too large).
	refused error
	err     error
}

func (a *Agent) applyAccount(name string, sections []authorizedkeys.Section, uids map[string]string) accountResult {
	var res accountResult
	acct, err := a.writer.LookupAccount(name)
	if err != nil {
		delete(a.lastWrites, name)
		res.state, res.err = lookupState(err), err
		a.remember(name, &res)
		return res
	}
	if acct.UID == 0 && !a.cfg.AllowRoot && hasKeys(sections) {
		// Another name for root is root: its keys are removed, never written.
		res.refused = &nodewriter.Error{Reason: nav1.RootNotAllowedReason, User: name, Path: "/etc/passwd",
			Err: fmt.Errorf("%s has uid 0; the operator does not allow granting root", name)}
		sections = nil
	}
	var before, rendered []byte
	var span authorizedkeys.Span
	var written []authorizedkeys.Section
	last, hadLast := a.lastWrites[name]
	reused := false
	result, err := a.writer.UpdateAccount(acct, func(current []byte) ([]byte, error) {
		before, written, reused = current, sections, false
		ours := hadLast && last.wrote(current)
		if ours && last.rendered(sections) {
			reused, rendered = true, current
			return current, nil
		}
		var out []byte
		var err error
		if ours {
			out, span, err = authorizedkeys.Rerender(current, last.span, sections)
		} else {
			out, span, err = authorizedkeys.RenderSpan(current, sections)
		}
		rendered = out // only ever remembered when the pass refused nothing
		if err == nil && len(out) > nodewriter.MaxFileBytes {
			// Too large with every key: remove what must go, add nothing.
			written = authorizedkeys.Parse(current).KeepPresent(sections)
			out, err = authorizedkeys.Render(current, written)
			res.refused = &nodewriter.Error{Reason: nav1.FileTooLargeReason, User: name, Path: acct.Home,
				Err: fmt.Errorf("adding the keys would make authorized_keys larger than %d bytes; only removals were written", nodewriter.MaxFileBytes)}
		}
		return out, err
	})
	res.state, res.changed, res.err = result.State, result.Changed, err
	delete(a.lastWrites, name)
	switch {
	case err == nil && reused:
		res.held = maps.Clone(last.held)
		last.sections = sections // the same, in the plan now held
		a.lastWrites[name] = last
	case err == nil:
		res.held = authorizedkeys.Count(written)
		if res.refused == nil && len(res.held) > 0 {
			a.lastWrites[name] = lastWrite{sections: sections, sum: sha256.Sum256(rendered), span: span, held: maps.Clone(res.held)}
		}
	case result.State == nodewriter.Read:
		// Nothing was written: the file holds what it held.
		res.held = resolveOwners(authorizedkeys.Parse(before).Holdings(), uids)
	}
	a.remember(name, &res)
	if err == nil && len(res.held) > 0 {
		a.files.watch(result.Dirs)
	}
	return res
}

// remember keeps what the pass proved about an account for later passes,
// and fills in what an unreadable file may hold from what was proven before.
func (a *Agent) remember(name string, res *accountResult) {
	switch res.state {
	case nodewriter.Unknown:
		res.held = a.held[name]
		if res.held == nil {
			// Never proven empty, so it stays on the list to revisit.
			a.held[name] = map[authorizedkeys.Owner]int{}
		}
	default:
		if len(res.held) == 0 {
			delete(a.held, name)
		} else {
			a.held[name] = res.held
		}
	}
}

// resolveUnattributed drops the earlier process's unattributed grants once
// a full scan read every account: wherever they still are, the files say
// so (and they are then held by account).
func (a *Agent) resolveUnattributed(results map[string]accountResult, scan scanResult) {
	if len(a.unattributed) == 0 || !scan.done || scan.unreadable > 0 {
		return
	}
	for _, res := range results {
		if res.state == nodewriter.Unknown {
			return
		}
	}
	clear(a.unattributed)
}

func (a *Agent) unattributedList() []authorizedkeys.Owner {
	out := make([]authorizedkeys.Owner, 0, len(a.unattributed))
	for o := range a.unattributed {
		out = append(out, o)
	}
	return out
}

// resolveOwners gives a UID to grants a file names only by name.
func resolveOwners(held map[authorizedkeys.Owner]int, uids map[string]string) map[authorizedkeys.Owner]int {
	for o, n := range held {
		if o.UID != "" {
			continue
		}
		delete(held, o)
		if uid, ok := uids[o.Name]; ok {
			held[authorizedkeys.Owner{Name: o.Name, UID: uid}] += n
		}
	}
	return held
}

func hasKeys(sections []authorizedkeys.Section) bool {
	for _, s := range sections {
		if len(s.Keys) > 0 {
			return true
		}
	}
	return false
}

// lookupState is what a failed account lookup proves.
func lookupState(err error) nodewriter.State {
	if reasonOf(err) == nav1.PasswdUnreadableReason {
		return nodewriter.Unknown
	}
	return nodewriter.NoFile
}

// requeueAfter is when the next pass is due: the next expiry, the resync,
// the heartbeat, and soon after a pass that could not prove an account
// (the file may be readable again).
func (a *Agent) requeueAfter(plan desiredstate.Plan, results map[string]accountResult, now time.Time) time.Duration {
	after := a.cfg.Resync
	if !plan.NextChange.IsZero() {
		if d := plan.NextChange.Sub(now); d < after {
			after = d
		}
	}
	// The heartbeat is due from the last report written; while a write is
	// in flight its end starts the next pass, and after a failed one the
	// retry waits for its backoff (otherwise an overdue heartbeat would
	// make a pass of every millisecond until a write succeeds).
	if hb := a.cfg.Heartbeat; !a.reporting && a.report != nil && a.report.HeartbeatTime != nil {
		due := a.report.HeartbeatTime.Add(hb)
		if a.reportRetry.After(due) {
			due = a.reportRetry
		}
		if d := due.Sub(now); d < after {
			after = d
		}
	}
	for _, res := range results {
		if res.err != nil && reasonOf(res.err) == nav1.ChangedDuringEditReason && after > time.Second {
			after = time.Second
		}
	}
	if after <= 0 {
		after = time.Millisecond
	}
	return after
}

// reasonOf returns the CamelCase reason of a writer or render error.
func reasonOf(err error) string {
	if r := nodewriter.ReasonOf(err); r != "" {
		return r
	}
	return nav1.InvalidGrantReason
}

package agent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/authorizedkeys"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
	"github.com/nodeaccess/nodeaccess-operator/internal/nodefilter"
	"github.com/nodeaccess/nodeaccess-operator/internal/nodewriter"
)

// found is what one pass found of one grant across the node's accounts.
type found struct {
	// keys counts its key lines in files that were read.
	keys int
	// holding are the accounts whose files hold its keys.
	holding []string
	// unknown are the accounts whose files could not be read and may hold them.
	unknown []string
}

func (f *found) accounts() []string {
	out := append(append([]string(nil), f.holding...), f.unknown...)
	sort.Strings(out)
	out = slices.Compact(out)
	if len(out) > nav1.MaxUsers {
		out = out[:nav1.MaxUsers]
	}
	return out
}

// buildReport is a pure function of the plan, what the pass proved of each
// account and the grants an earlier process left unattributed: the report
// content, without times. A grant is applied only when the pass proved it;
// keys are counted from the files, not from the plan; a grant that may
// have keys in a file that cannot be read is listed as not applied (which
// every manager version counts as still held).
func buildReport(plan desiredstate.Plan, results map[string]accountResult, unattributed []authorizedkeys.Owner) nav1.NodeAccessReportStatus {
	var st nav1.NodeAccessReportStatus

	byUID := map[string]*found{}
	names := map[string]string{}
	get := func(o authorizedkeys.Owner) *found {
		f, ok := byUID[o.UID]
		if !ok {
			f = &found{}
			byUID[o.UID], names[o.UID] = f, o.Name
		}
		return f
	}
	for acct, res := range results {
		for o, n := range res.held {
			f := get(o)
			switch {
			case res.state == nodewriter.Unknown:
				f.unknown = append(f.unknown, acct)
			case n > 0:
				f.keys += n
				f.holding = append(f.holding, acct)
			}
		}
		for _, err := range []error{res.err, res.refused} {
			if err != nil {
				st.AccountErrors = append(st.AccountErrors, nav1.AccountError{
					User: acct, Reason: reasonOf(err), Message: truncate(err.Error(), 1024),
					KeysUnknown: err == res.err && res.state == nodewriter.Unknown,
				})
			}
		}
	}
	// A grant the plan names in an unreadable account may have keys there.
	for _, g := range plan.Grants {
		for _, acct := range g.Accounts {
			if res, ok := results[acct]; ok && res.state == nodewriter.Unknown {
				if f := get(authorizedkeys.Owner{Name: g.Name, UID: g.UID}); !slices.Contains(f.unknown, acct) {
					f.unknown = append(f.unknown, acct)
				}
			}
		}
	}

	listed := map[string]bool{}
	wants := wantCounts{plan: plan}
	for _, g := range plan.Grants {
		listed[g.UID] = true
		f := byUID[g.UID]
		if f == nil {
			f = &found{}
		}
		gr := nav1.GrantReport{Name: g.Name, UID: g.UID, Generation: g.Generation, Hash: g.Hash, Keys: int32(f.keys), Accounts: f.accounts()}
		switch {
		case g.Err != nil:
			gr.Reason, gr.Message = nav1.InvalidGrantReason, truncate(g.Err.Error(), 1024)
		case g.Active:
			gr.Reason, gr.Message = activeFailure(g, &wants, results, f)
			gr.Applied = gr.Reason == ""
		default:
			// Suspended, expired or not selecting the node: its keys must be gone.
			held := gone(&gr, f)
			if !held && !g.Selected {
				continue // nothing of it here, and nothing to confirm
			}
			gr.Applied = !held
		}
		st.Grants = append(st.Grants, gr)
	}
	// Grants no longer rendered, or not selecting the node, that are (or may be) still here.
	for uid, f := range byUID {
		if listed[uid] {
			continue
		}
		listed[uid] = true
		gr := nav1.GrantReport{Name: names[uid], UID: uid, Keys: int32(f.keys), Accounts: f.accounts()}
		if gone(&gr, f) {
			st.Grants = append(st.Grants, gr)
		}
	}
	for _, o := range unattributed {
		if !listed[o.UID] {
			st.Grants = append(st.Grants, nav1.GrantReport{Name: o.Name, UID: o.UID, Reason: nav1.PossiblyHeldReason,
				Message: "an earlier agent reported keys of this grant on the node, and not every account could be read since"})
		}
	}

	// Grants not applied come first, so a long list never hides one.
	sort.Slice(st.Grants, func(i, j int) bool {
		a, b := st.Grants[i], st.Grants[j]
		if a.Applied != b.Applied {
			return !a.Applied
		}
		return a.Name+"/"+a.UID < b.Name+"/"+b.UID
	})
	sort.Slice(st.AccountErrors, func(i, j int) bool {
		a, b := st.AccountErrors[i], st.AccountErrors[j]
		return a.User < b.User || a.User == b.User && a.Reason < b.Reason
	})
	st.AccountErrors = slices.CompactFunc(st.AccountErrors, func(a, b nav1.AccountError) bool { return a.User == b.User })
	if len(st.Grants) > nav1.MaxReportedGrants {
		st.Grants = st.Grants[:nav1.MaxReportedGrants]
	}
	if len(st.AccountErrors) > nav1.MaxReportedAccountErrors {
		st.AccountErrors = st.AccountErrors[:nav1.MaxReportedAccountErrors]
	}
	for _, g := range st.Grants {
		st.Keys += g.Keys
	}

	ready := metav1.Condition{Type: nav1.ReadyCondition, Status: metav1.ConditionTrue, Reason: nav1.AllGrantsAppliedReason,
		Message: "every grant selecting this node is applied, and every revoked one is gone"}
	failed := 0
	for _, g := range st.Grants {
		if !g.Applied {
			failed++
		}
	}
	if failed > 0 || len(st.AccountErrors) > 0 {
		ready.Status, ready.Reason = metav1.ConditionFalse, nav1.AccountsFailingReason
		ready.Message = fmt.Sprintf("%d grants not applied or not proven gone, %d accounts failing", failed, len(st.AccountErrors))
	}
	st.Conditions = []metav1.Condition{ready}
	return st
}

// wantCounts are the key lines the plan gives each grant in each account
// (authorizedkeys.Count of the account's sections), counted once per
// account and pass rather than once per grant.
type wantCounts struct {
	plan    desiredstate.Plan
	counted map[string]map[authorizedkeys.Owner]int
}

func (w *wantCounts) of(acct string) map[authorizedkeys.Owner]int {
	if c, ok := w.counted[acct]; ok {
		return c
	}
	if w.counted == nil {
		w.counted = map[string]map[authorizedkeys.Owner]int{}
	}
	c := authorizedkeys.Count(w.plan.Accounts[acct])
	w.counted[acct] = c
	return c
}

// gone sets the reason of a grant whose keys must not be on the node: still
// held, or possibly held; it reports whether one was set.
func gone(gr *nav1.GrantReport, f *found) bool {
	switch {
	case f.keys > 0:
		gr.Reason = nav1.RevocationFailedReason
		gr.Message = truncate(fmt.Sprintf("keys still held by %v", f.holding), 1024)
	case len(f.unknown) > 0:
		gr.Reason = nav1.PossiblyHeldReason
		gr.Message = truncate(fmt.Sprintf("the files of %v cannot be read, so its keys may still be there", f.unknown), 1024)
	default:
		return false
	}
	return true
}

// activeFailure says why an active grant is not exactly in place, or ""
// when every account it names holds exactly its keys and no other account
// holds any.
func activeFailure(g desiredstate.Grant, wants *wantCounts, results map[string]accountResult, f *found) (string, string) {
	owner := authorizedkeys.Owner{Name: g.Name, UID: g.UID}
	for _, acct := range g.Accounts {
		res := results[acct]
		want := wants.of(acct)[owner]
		switch {
		case res.err != nil:
			return reasonOf(res.err), truncate(fmt.Sprintf("user %s: %v", acct, res.err), 1024)
		case res.held[owner] != want && res.refused != nil:
			return reasonOf(res.refused), truncate(fmt.Sprintf("user %s: %v", acct, res.refused), 1024)
		case res.held[owner] != want:
			return nav1.ChangedDuringEditReason, fmt.Sprintf("user %s holds %d of the grant's %d keys", acct, res.held[owner], want)
		}
	}
	for _, acct := range f.holding {
		if !slices.Contains(g.Accounts, acct) {
			return nav1.RevocationFailedReason, truncate(fmt.Sprintf("keys still held by %s, which the grant no longer names", acct), 1024)
		}
	}
	for _, acct := range f.unknown {
		if !slices.Contains(g.Accounts, acct) {
			return nav1.PossiblyHeldReason, truncate(fmt.Sprintf("the file of %s cannot be read, so keys the grant no longer gives it may still be there", acct), 1024)
		}
	}
	return "", ""
}

// writeReport writes the node's report when its content changed or the
// heartbeat is due, and never otherwise. A changed report is written
// ReportDelay after the change, plus a random part of the spread
// (reportSpread): the files come first, one grant reaching many nodes does
// not make them all write at the same instant, and changes within the
// window make one write; and no sooner than the report interval after the
// last write. The write itself goes to the report writer, and the pass
// does not wait for it (reportWriter); while it is in flight no other is
// decided, and its end starts a pass.
// It returns how long until a delayed write is due (0 when none is pending).
func (a *Agent) writeReport(ctx context.Context, node *nodeMeta, st nav1.NodeAccessReportStatus, now time.Time) time.Duration {
	a.collectReport(ctx)
	if a.reporting {
		return 0 // the write in flight starts a pass when it ends
	}
	prev := a.report
	if prev != nil {
		// Keep condition transition times when the status did not change.
		for i := range st.Conditions {
			if old := meta.FindStatusCondition(prev.Conditions, st.Conditions[i].Type); old != nil && old.Status == st.Conditions[i].Status {
				st.Conditions[i].LastTransitionTime = old.LastTransitionTime
			}
		}
		st.LastChangeTime, st.HeartbeatTime = prev.LastChangeTime, prev.HeartbeatTime
		heartbeatDue := now.Sub(prev.HeartbeatTime.Time) >= a.cfg.Heartbeat
		if equality.Semantic.DeepEqual(*prev, st) {
			a.reportDue = time.Time{}
			if !heartbeatDue {
				return 0
			}
		} else if interval := a.reportInterval(); !heartbeatDue && (a.cfg.ReportDelay > 0 || interval > 0) {
			if a.reportDue.IsZero() {
				due := now
				if a.cfg.ReportDelay > 0 {
					due = now.Add(a.cfg.ReportDelay + rand.N(a.reportSpread()))
				}
				if next := a.reportWritten.Add(interval); next.After(due) {
					due = next
				}
				a.reportDue = due
			}
			if now.Before(a.reportDue) {
				return a.reportDue.Sub(now)
			}
		}
	}
	if now.Before(a.reportRetry) {
		return a.reportRetry.Sub(now)
	}
	stamp := metav1.NewTime(now.Truncate(time.Second))
	for i := range st.Conditions {
		if st.Conditions[i].LastTransitionTime.IsZero() {
			st.Conditions[i].LastTransitionTime = stamp
		}
	}
	if prev == nil || !sameContent(prev, &st) {
		st.LastChangeTime = &stamp
	}
	st.HeartbeatTime = &stamp

	// The report object is (re)created by the first write of a process,
	// for a Node recreated under a new UID (the old report went with the
	// old Node), and when it was found missing.
	a.reporting = true
	a.reports.jobs <- reportJob{st: st, create: !a.reportCreated || a.reportOwner != node.UID, nodeUID: node.UID, at: now}
	return 0
}

// collectReport takes in the outcome of the report write handed over by
// an earlier pass, if it has ended: the report written (the next one's
// time is then computed afresh, from this write), or a failure, logged
// and tried again after a backoff, with the report still due.
func (a *Agent) collectReport(ctx context.Context) {
	var out reportOutcome
	select {
	case out = <-a.reports.done:
	default:
		return
	}
	a.reporting = false
	if out.created {
		a.reportCreated, a.reportOwner = true, out.job.nodeUID
	}
	if out.err != nil {
		if apierrors.IsNotFound(out.err) {
			a.reportCreated = false
		}
		a.reportBackoff = nextBackoff(a.reportBackoff, a.cfg.Resync)
		a.reportRetry = a.now().Add(a.reportBackoff)
		logr.FromContextOrDiscard(ctx).Error(out.err, "Writing the node's report failed; retrying", "after", a.reportBackoff)
		return
	}
	a.reportBackoff, a.reportRetry = 0, time.Time{}
	a.report = &out.job.st
	a.reportDue = time.Time{}
	a.reportWritten = out.job.at
}

// doReport is the report writer's write of one job.
func (a *Agent) doReport(ctx context.Context, job reportJob) (created bool, err error) {
	if job.create {
		if err := a.applyReport(ctx, job.nodeUID, nil); err != nil {
			return false, err
		}
		created = true
	}
	return created, a.applyReport(ctx, job.nodeUID, &job.st)
}

// reportInterval is the shortest time between two writes of a changed
// report: the agent's own --report-interval, or the longer one the manager
// publishes for the cluster's size (at most nodefilter.MaxReportInterval,
// and at most half the heartbeat), so that a cluster's nodes under churn
// write their reports within the manager's budget.
func (a *Agent) reportInterval() time.Duration {
	d := a.cfg.ReportInterval
	if published, ok := a.src.reportInterval(); ok {
		d = max(d, min(published, a.cfg.Heartbeat/2))
	}
	return d
}

// reportSpread is the window over which the first report after a change
// is spread at random: ReportDelay, or, when the manager published a
// report interval longer than one nodefilter.ReportIntervalStep and than
// the agent's own (a cluster of more nodes than its report budget serves
// at the shortest step), that interval (reportInterval). A grant reaching
// every node of a large cluster then makes the nodes write their reports
// within the manager's budget, not at once: 1,000 nodes writing within a
// second held the API server, and the next change's rendered grant, for
// seconds. Such a report follows its change by at most ReportDelay plus
// the spread (and the interval after the previous write, as always).
func (a *Agent) reportSpread() time.Duration {
	spread := a.cfg.ReportDelay
	if published, ok := a.src.reportInterval(); ok && published > max(a.cfg.ReportInterval, nodefilter.ReportIntervalStep) {
		spread = max(spread, a.reportInterval())
	}
	return spread
}

// sameContent compares two reports without their times.
func sameContent(a, b *nav1.NodeAccessReportStatus) bool {
	x, y := a.DeepCopy(), b.DeepCopy()
	x.LastChangeTime, x.HeartbeatTime, y.LastChangeTime, y.HeartbeatTime = nil, nil, nil, nil
	return equality.Semantic.DeepEqual(x, y)
}

// applyReport server-side applies the report object (status nil) or its status.
// The report is owned by the Node, so it goes away with the node.
func (a *Agent) applyReport(ctx context.Context, nodeUID types.UID, st *nav1.NodeAccessReportStatus) error {
	obj := map[string]any{
		"apiVersion": nav1.GroupVersion.String(),
		"kind":       "NodeAccessReport",
	}
	if st == nil {
		obj["metadata"] = map[string]any{
			"name": a.cfg.NodeName,
			"ownerReferences": []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: a.cfg.NodeName, UID: nodeUID,
			}},
		}
		obj["spec"] = map[string]any{"nodeName": a.cfg.NodeName}
		if err := a.api.applyReport(ctx, obj, false); err != nil {
			return fmt.Errorf("creating node report: %w", err)
		}
		return nil
	}
	obj["metadata"] = map[string]any{"name": a.cfg.NodeName}
	obj["status"] = st
	if err := a.api.applyReport(ctx, obj, true); err != nil {
		return fmt.Errorf("writing node report: %w", err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

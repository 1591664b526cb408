package agent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
)

// Reasons the agent reports for grants.
const (
	// ReasonInvalidGrant: the rendered grant cannot be applied (bad selector or options).
	ReasonInvalidGrant = "InvalidGrant"
	// ReasonRevocationFailed: the grant's keys could not be removed from an account.
	ReasonRevocationFailed = "RevocationFailed"
)

// buildReport is a pure function of the plan and the per-account results: the
// report content, without times.
func buildReport(plan desiredstate.Plan, results map[string]accountResult) nav1.NodeAccessReportStatus {
	var st nav1.NodeAccessReportStatus

	// Which accounts still hold each grant after this pass.
	holders := map[string][]string{}
	names := map[string]string{}
	for acct, res := range results {
		for _, o := range res.owners {
			holders[o.UID] = append(holders[o.UID], acct)
			names[o.UID] = o.Name
		}
		if res.err != nil {
			st.AccountErrors = append(st.AccountErrors, nav1.AccountError{
				User: acct, Reason: reasonOf(res.err), Message: truncate(res.err.Error(), 1024),
			})
		}
	}

	seen := map[string]bool{}
	for _, g := range plan.Grants {
		seen[g.UID] = true
		gr := nav1.GrantReport{Name: g.Name, UID: g.UID, Generation: g.Generation, Hash: g.Hash}
		switch {
		case g.Err != nil:
			gr.Reason, gr.Message = ReasonInvalidGrant, truncate(g.Err.Error(), 1024)
		case g.Active:
			gr.Applied, gr.Keys = true, int32(g.Keys)
			for _, acct := range g.Accounts {
				if err := results[acct].err; err != nil {
					gr.Applied, gr.Reason = false, reasonOf(err)
					gr.Message = truncate(fmt.Sprintf("user %s: %v", acct, err), 1024)
					break
				}
			}
		case len(holders[g.UID]) > 0:
			gr.Reason = ReasonRevocationFailed
			gr.Message = truncate(fmt.Sprintf("keys still held by %v", holders[g.UID]), 1024)
		case g.Selected:
			// Selected but suspended or expired, and no key left: in sync.
			gr.Applied = true
		default:
			continue
		}
		st.Grants = append(st.Grants, gr)
	}
	// Grants no longer rendered whose keys could not be removed.
	for uid, accts := range holders {
		if seen[uid] {
			continue
		}
		sort.Strings(accts)
		st.Grants = append(st.Grants, nav1.GrantReport{
			Name: names[uid], UID: uid, Reason: ReasonRevocationFailed,
			Message: truncate(fmt.Sprintf("keys still held by %v", accts), 1024),
		})
	}
	sort.Slice(st.Grants, func(i, j int) bool {
		return st.Grants[i].Name+"/"+st.Grants[i].UID < st.Grants[j].Name+"/"+st.Grants[j].UID
	})
	sort.Slice(st.AccountErrors, func(i, j int) bool { return st.AccountErrors[i].User < st.AccountErrors[j].User })
	if len(st.Grants) > nav1.MaxReportedGrants {
		st.Grants = st.Grants[:nav1.MaxReportedGrants]
	}
	if len(st.AccountErrors) > nav1.MaxReportedAccountErrors {
		st.AccountErrors = st.AccountErrors[:nav1.MaxReportedAccountErrors]
	}
	for _, g := range st.Grants {
		st.Keys += g.Keys
	}

	ready := metav1.Condition{Type: nav1.ReadyCondition, Status: metav1.ConditionTrue, Reason: nav1.AllGrantsAppliedReason, Message: "every grant selecting this node is applied"}
	failed := 0
	for _, g := range st.Grants {
		if !g.Applied {
			failed++
		}
	}
	if failed > 0 || len(st.AccountErrors) > 0 {
		ready.Status, ready.Reason = metav1.ConditionFalse, nav1.AccountsFailingReason
		ready.Message = fmt.Sprintf("%d grants not applied, %d accounts failing", failed, len(st.AccountErrors))
	}
	st.Conditions = []metav1.Condition{ready}
	return st
}

// writeReport writes the node's report when its content changed or the
// heartbeat is due, and never otherwise. A changed report is written
// ReportDelay after the change, plus up to as much again at random: the
// files come first, one grant reaching many nodes does not make them all
// write at the same instant, and changes within the window make one write.
// It returns how long until a delayed write is due (0 when none is pending).
func (a *Agent) writeReport(ctx context.Context, node *corev1.Node, st nav1.NodeAccessReportStatus, now time.Time) (time.Duration, error) {
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
				return 0, nil
			}
		} else if !heartbeatDue && a.cfg.ReportDelay > 0 {
			if a.reportDue.IsZero() {
				a.reportDue = now.Add(a.cfg.ReportDelay + rand.N(a.cfg.ReportDelay))
			}
			if now.Before(a.reportDue) {
				return a.reportDue.Sub(now), nil
			}
		}
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
	if !a.reportCreated || a.reportOwner != node.UID {
		if err := a.applyReport(ctx, node, nil); err != nil {
			return 0, err
		}
		a.reportCreated, a.reportOwner = true, node.UID
	}
	if err := a.applyReport(ctx, node, &st); err != nil {
		if apierrors.IsNotFound(err) {
			a.reportCreated = false
		}
		return 0, err
	}
	a.report = &st
	a.reportDue = time.Time{}
	return 0, nil
}

// sameContent compares two reports without their times.
func sameContent(a, b *nav1.NodeAccessReportStatus) bool {
	x, y := a.DeepCopy(), b.DeepCopy()
	x.LastChangeTime, x.HeartbeatTime, y.LastChangeTime, y.HeartbeatTime = nil, nil, nil, nil
	return equality.Semantic.DeepEqual(x, y)
}

// applyReport server-side applies the report object (status nil) or its status.
// The report is owned by the Node, so it goes away with the node.
func (a *Agent) applyReport(ctx context.Context, node *corev1.Node, st *nav1.NodeAccessReportStatus) error {
	obj := map[string]any{
		"apiVersion": nav1.GroupVersion.String(),
		"kind":       "NodeAccessReport",
	}
	if st == nil {
		obj["metadata"] = map[string]any{
			"name": a.cfg.NodeName,
			"ownerReferences": []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
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

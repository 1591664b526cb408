package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
	"github.com/nodeaccess/nodeaccess-operator/internal/render"
)

// observation is what the manager read about the nodes for one NodeAccess.
type observation struct {
	// nodes are every Node's name and labels.
	nodes []nodeInfo
	// reports maps a node name to this NodeAccess's entry in its report.
	reports map[string]nav1.GrantReport
	// logins are the logins with this NodeAccess's keys the reports list.
	logins []nodeLogin
}

type nodeInfo struct {
	name   string
	labels map[string]string
}

// observe reads nodes (metadata only) and the node reports naming na from
// the cache. Nothing read is modified, so the cache's objects are read
// without copies: at a thousand nodes copying them was most of a status pass.
func (r *NodeAccessReconciler) observe(ctx context.Context, na *nav1.NodeAccess) (observation, error) {
	obs := observation{reports: map[string]nav1.GrantReport{}}
	nodes := &metav1.PartialObjectMetadataList{}
	nodes.SetGroupVersionKind(nodeListGVK)
	if err := r.Client.List(ctx, nodes, client.UnsafeDisableDeepCopy); err != nil {
		return obs, fmt.Errorf("listing nodes: %w", err)
	}
	for _, n := range nodes.Items {
		obs.nodes = append(obs.nodes, nodeInfo{name: n.Name, labels: n.Labels})
	}
	var reports nav1.NodeAccessReportList
	if err := r.Client.List(ctx, &reports, client.MatchingFields{reportedIndex: string(na.UID)}, client.UnsafeDisableDeepCopy); err != nil {
		return obs, fmt.Errorf("listing node reports: %w", err)
	}
	accounts := names(na)
	for _, rep := range reports.Items {
		if g, ok := rep.Status.Grant(string(na.UID)); ok {
			obs.reports[rep.Name] = g
		}
		for _, l := range rep.Status.Logins {
			// Only accounts the grant names: a report cannot add others
			// (nor metric series) to it.
			if l.NodeAccessUID == string(na.UID) && accounts[l.User] {
				obs.logins = append(obs.logins, nodeLogin{node: rep.Name, login: l})
			}
		}
	}
	return obs, nil
}

// names returns the accounts a NodeAccess names.
func names(na *nav1.NodeAccess) map[string]bool {
	out := make(map[string]bool, len(na.Spec.Users))
	for _, u := range na.Spec.Users {
		out[u.Name] = true
	}
	return out
}

// computeStatus is the whole status of a NodeAccess, from its rendering,
// whether it was over the cluster's limits, and what the nodes reported. It
// is pure; conditions keep their transition times from na.Status when their
// status does not change.
func computeStatus(na *nav1.NodeAccess, res *render.Result, overLimit error, obs observation, now time.Time) nav1.NodeAccessStatus {
	st := nav1.NodeAccessStatus{
		ObservedGeneration: na.Generation,
		KeysGranted:        int32(keysOf(&res.Spec)),
		NextExpiry:         res.NextExpiry,
		RefusedKeys:        res.Refused,
		Conditions:         append([]metav1.Condition(nil), na.Status.Conditions...),
		LastLogins:         lastLogins(na.Status.LastLogins, obs.logins),
	}
	selector, selErr := desiredstate.Selector(&na.Spec.NodeSelector)
	sort.Slice(obs.nodes, func(i, j int) bool { return obs.nodes[i].name < obs.nodes[j].name })
	for _, n := range obs.nodes {
		g, reported := obs.reports[n.name]
		if selErr == nil && selector.Matches(labels.Set(n.labels)) {
			st.SelectedNodes++
			if reported && g.Applied && g.Hash == res.Spec.Hash {
				st.NodesInSync++
			}
		}
		if reported && !g.Applied && g.Reason != "" && len(st.FailingNodes) < nav1.MaxFailingNodes {
			st.FailingNodes = append(st.FailingNodes, nav1.NodeFailure{Node: n.name, Reason: g.Reason, Message: g.Message})
		}
	}

	stamp := metav1.NewTime(now)
	set := func(c metav1.Condition) {
		c.ObservedGeneration, c.LastTransitionTime = na.Generation, stamp
		meta.SetStatusCondition(&st.Conditions, c)
	}
	set(degradedCondition(res, overLimit, st.FailingNodes, selErr))
	set(progressingCondition(st.SelectedNodes, st.NodesInSync))
	set(readyCondition(na, res, &st, selErr))
	return st
}

// keysOf counts the keys a rendered spec grants: what the nodes are given,
// which for a narrowed rendering is less than what the NodeAccess asks.
func keysOf(spec *nav1.RenderedNodeAccessSpec) int {
	n := 0
	for _, u := range spec.Users {
		n += len(u.Keys)
	}
	return n
}

// degradedCondition is True when part of the grant cannot be served.
func degradedCondition(res *render.Result, overLimit error, failing []nav1.NodeFailure, selErr error) metav1.Condition {
	c := metav1.Condition{Type: nav1.DegradedCondition, Status: metav1.ConditionTrue}
	kept := "; the nodes keep only the keys the last accepted version and this one both grant"
	switch {
	case selErr != nil:
		c.Reason, c.Message = nav1.InvalidSelectorReason, selErr.Error()
	case res.TooLarge != nil:
		c.Reason, c.Message = nav1.TooManyKeysReason, res.TooLarge.Error()+kept
	case overLimit != nil:
		c.Reason, c.Message = nav1.ClusterLimitReason, overLimit.Error()+kept
	case len(res.Forbidden) > 0:
		c.Reason, c.Message = nav1.KeySourceForbiddenReason, "the operator may not read "+sourceNames(res.Forbidden)+
			": the namespace must allow it (docs/usage.md, Keys from Secrets); their keys are not granted"
	case len(res.Missing) > 0:
		c.Reason, c.Message = nav1.KeySourceMissingReason, "missing: "+sourceNames(res.Missing)+"; the other keys are granted"
	case hasUserRefusal(res.Refused):
		c.Reason, c.Message = nav1.UserRefusedReason, fmt.Sprintf("%d accounts or keys refused; see status.refusedKeys", len(res.Refused))
	case len(res.Refused) > 0:
		c.Reason, c.Message = nav1.KeysRefusedReason, fmt.Sprintf("%d keys refused; see status.refusedKeys", len(res.Refused))
	case len(failing) > 0:
		c.Reason, c.Message = nav1.NodesFailingReason, fmt.Sprintf("%d nodes failed to apply the grant or to prove its keys gone; see status.failingNodes", len(failing))
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, nav1.AsExpectedReason, "every key is served"
	}
	return c
}

func sourceNames(refs []render.SourceRef) string {
	names := make([]string, 0, len(refs))
	for _, m := range refs {
		names = append(names, m.String())
	}
	return strings.Join(names, "; ")
}

func hasUserRefusal(refused []nav1.KeyRefusal) bool {
	for _, r := range refused {
		if r.Reason == nav1.UserRefusedReason {
			return true
		}
	}
	return false
}

// progressingCondition is True while selected nodes are not yet in sync.
func progressingCondition(selected, inSync int32) metav1.Condition {
	if inSync < selected {
		return metav1.Condition{Type: nav1.ProgressingCondition, Status: metav1.ConditionTrue, Reason: nav1.WaitingForNodesReason,
			Message: fmt.Sprintf("%d of %d selected nodes in sync", inSync, selected)}
	}
	return metav1.Condition{Type: nav1.ProgressingCondition, Status: metav1.ConditionFalse, Reason: nav1.AsExpectedReason,
		Message: "every selected node is in sync"}
}

// readyCondition is True when every selected node holds exactly this grant
// and nothing was refused. A suspended or expired grant is never Ready, and
// says its keys are removed only once every selected node has proven it.
func readyCondition(na *nav1.NodeAccess, res *render.Result, st *nav1.NodeAccessStatus, selErr error) metav1.Condition {
	c := metav1.Condition{Type: nav1.ReadyCondition, Status: metav1.ConditionFalse}
	degraded := meta.FindStatusCondition(st.Conditions, nav1.DegradedCondition)
	removed := func(what string) string {
		if st.NodesInSync < st.SelectedNodes {
			return fmt.Sprintf("the grant is %s; %d of %d selected nodes have proven its keys removed", what, st.NodesInSync, st.SelectedNodes)
		}
		return fmt.Sprintf("the grant is %s; every selected node has proven its keys removed", what)
	}
	switch {
	case na.Spec.Suspend:
		c.Reason, c.Message = nav1.SuspendedReason, removed("suspended")
	case res.Expired:
		c.Reason, c.Message = nav1.ExpiredReason, removed("expired")
	case selErr != nil || (degraded != nil && degraded.Status == metav1.ConditionTrue):
		c.Reason, c.Message = degraded.Reason, degraded.Message
	case st.SelectedNodes == 0:
		c.Reason, c.Message = nav1.NoNodesSelectedReason, "nodeSelector selects no node"
	case st.NodesInSync < st.SelectedNodes:
		c.Reason, c.Message = nav1.WaitingForNodesReason, fmt.Sprintf("%d of %d selected nodes in sync", st.NodesInSync, st.SelectedNodes)
	default:
		c.Status, c.Reason = metav1.ConditionTrue, nav1.AllNodesInSyncReason
		c.Message = fmt.Sprintf("all %d selected nodes hold the %d keys", st.SelectedNodes, st.KeysGranted)
	}
	return c
}

// writeStatus is the deferred end of every reconcile: the status a phase
// computed when it succeeded, or, after an error, the last status with
// Degraded and Ready saying what failed (observedGeneration not advanced)
// and a Warning Event when that is news.
func (r *NodeAccessReconciler) writeStatus(ctx context.Context, s *scope, retErr error) error {
	na := s.na
	if retErr == nil {
		if s.status == nil {
			return nil // nothing to say: released, or no change
		}
		return r.patchStatus(ctx, na, *s.status)
	}
	st := *na.Status.DeepCopy()
	if s.status != nil {
		st = *s.status.DeepCopy()
		st.ObservedGeneration = na.Status.ObservedGeneration
	}
	msg := truncate(retErr.Error(), 1024)
	stamp := metav1.NewTime(s.now)
	before := meta.FindStatusCondition(na.Status.Conditions, nav1.DegradedCondition)
	for _, t := range []string{nav1.DegradedCondition, nav1.ReadyCondition} {
		status := metav1.ConditionFalse
		if t == nav1.DegradedCondition {
			status = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: status, Reason: nav1.ReconcileFailedReason,
			Message: msg, ObservedGeneration: na.Generation, LastTransitionTime: stamp})
	}
	if before == nil || before.Reason != nav1.ReconcileFailedReason || before.Message != msg {
		r.Recorder.Eventf(na, nil, corev1.EventTypeWarning, nav1.ReconcileFailedReason, "Reconcile", "%s", msg)
	}
	if err := r.patchStatus(ctx, na, st); err != nil {
		return client.IgnoreNotFound(err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// patchStatus writes status only when it changed.
func (r *NodeAccessReconciler) patchStatus(ctx context.Context, na *nav1.NodeAccess, st nav1.NodeAccessStatus) error {
	recordStatus(na, &st)
	if equality.Semantic.DeepEqual(na.Status, st) {
		return nil
	}
	r.recordTransitions(na, st)
	patch := client.MergeFrom(na.DeepCopy())
	na.Status = st
	if err := r.Client.Status().Patch(ctx, na, patch); err != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	return nil
}

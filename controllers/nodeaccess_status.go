package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

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
	for _, rep := range reports.Items {
		for _, g := range rep.Status.Grants {
			if g.UID == string(na.UID) {
				obs.reports[rep.Name] = g
			}
		}
	}
	return obs, nil
}

// computeStatus is the whole status of a NodeAccess, from its rendering and
// what the nodes reported. It is pure; conditions keep their transition times
// from na.Status when their status does not change.
func computeStatus(na *nav1.NodeAccess, res *render.Result, obs observation, now time.Time) nav1.NodeAccessStatus {
	st := nav1.NodeAccessStatus{
		ObservedGeneration: na.Generation,
		KeysGranted:        int32(res.Keys),
		NextExpiry:         res.NextExpiry,
		RefusedKeys:        res.Refused,
		Conditions:         append([]metav1.Condition(nil), na.Status.Conditions...),
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
	set(degradedCondition(res, st.FailingNodes, selErr))
	set(progressingCondition(st.SelectedNodes, st.NodesInSync))
	set(readyCondition(na, res, &st, selErr))
	return st
}

// degradedCondition is True when part of the grant cannot be served.
func degradedCondition(res *render.Result, failing []nav1.NodeFailure, selErr error) metav1.Condition {
	c := metav1.Condition{Type: nav1.DegradedCondition, Status: metav1.ConditionTrue}
	switch {
	case selErr != nil:
		c.Reason, c.Message = nav1.InvalidSelectorReason, selErr.Error()
	case res.TooLarge != nil:
		c.Reason, c.Message = render.ReasonTooManyKeys, res.TooLarge.Error()+"; the nodes keep the last accepted keys"
	case len(res.Missing) > 0:
		names := make([]string, 0, len(res.Missing))
		for _, m := range res.Missing {
			names = append(names, m.String())
		}
		c.Reason, c.Message = nav1.KeySourceMissingReason, "missing: "+strings.Join(names, "; ")+"; the other keys are granted"
	case hasUserRefusal(res.Refused):
		c.Reason, c.Message = nav1.UserRefusedReason, fmt.Sprintf("%d accounts or keys refused; see status.refusedKeys", len(res.Refused))
	case len(res.Refused) > 0:
		c.Reason, c.Message = nav1.KeysRefusedReason, fmt.Sprintf("%d keys refused; see status.refusedKeys", len(res.Refused))
	case len(failing) > 0:
		c.Reason, c.Message = nav1.NodesFailingReason, fmt.Sprintf("%d nodes failed to apply; see status.failingNodes", len(failing))
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, nav1.AsExpectedReason, "every key is served"
	}
	return c
}

func hasUserRefusal(refused []nav1.KeyRefusal) bool {
	for _, r := range refused {
		if r.Reason == render.ReasonUserRefused {
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
// and nothing was refused.
func readyCondition(na *nav1.NodeAccess, res *render.Result, st *nav1.NodeAccessStatus, selErr error) metav1.Condition {
	c := metav1.Condition{Type: nav1.ReadyCondition, Status: metav1.ConditionFalse}
	degraded := meta.FindStatusCondition(st.Conditions, nav1.DegradedCondition)
	switch {
	case na.Spec.Suspend:
		c.Reason, c.Message = nav1.SuspendedReason, "the grant is suspended; its keys are removed from every node"
	case res.Expired:
		c.Reason, c.Message = nav1.ExpiredReason, "the grant has expired; its keys are removed from every node"
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

// patchStatus writes status only when it changed.
func (r *NodeAccessReconciler) patchStatus(ctx context.Context, na *nav1.NodeAccess, st nav1.NodeAccessStatus) error {
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

package plugin

import (
	"fmt"
	"sort"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
)

// StatusResult is status's answer; -o json and -o yaml print it.
type StatusResult struct {
	NodeAccess string `json:"nodeAccess"`
	// Ready is the NodeAccess's Ready condition.
	Ready *metav1.Condition `json:"ready,omitempty"`
	// SelectedNodes and NodesInSync count as the NodeAccess's status does.
	SelectedNodes int `json:"selectedNodes"`
	NodesInSync   int `json:"nodesInSync"`
	// Nodes are the selected nodes, then nodes not selected that still
	// hold the grant's keys.
	Nodes []NodeSyncState `json:"nodes"`
}

// NodeSyncState is one node's state for one grant.
type NodeSyncState struct {
	Node     string `json:"node"`
	Selected bool   `json:"selected"`
	InSync   bool   `json:"inSync"`
	Reason   string `json:"reason"`
	Message  string `json:"message,omitempty"`
	// Generation is the NodeAccess generation the node applied.
	Generation int64        `json:"generation,omitempty"`
	Heartbeat  *metav1.Time `json:"heartbeat,omitempty"`
}

func newStatusCommand(o *Options) *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Show, per selected node, whether a NodeAccess is in sync and why not",
		Long: `Show, for every node a NodeAccess selects, whether the node's agent
reported applying its current version, and if not why, from the nodes'
NodeAccessReports. Nodes it no longer selects that still hold its keys are
listed too.`,
		Example: `  kubectl nodeaccess status team-data
  kubectl nodeaccess status team-data -o wide
  kubectl nodeaccess status team-data -o json`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.validate(); err != nil {
				return err
			}
			return o.runStatus(cmd, args[0], out)
		},
	}
	out.add(cmd)
	return cmd
}

func (o *Options) runStatus(cmd *cobra.Command, name string, out outputFlag) error {
	ctx := cmd.Context()
	c, err := o.client()
	if err != nil {
		return err
	}
	na := &nav1.NodeAccess{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, na); err != nil {
		return err
	}
	var rendered *nav1.RenderedNodeAccess
	ns, err := o.operatorNamespace(ctx, c)
	if err != nil {
		return err
	}
	if ns != "" {
		r := &nav1.RenderedNodeAccess{}
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, r)
		switch {
		case err == nil && r.Spec.NodeAccessUID == string(na.UID):
			rendered = r
		case err != nil && !apierrors.IsNotFound(err):
			return err
		}
	}
	all, err := nodes(ctx, c)
	if err != nil {
		return err
	}
	reps, err := reports(ctx, c)
	if err != nil {
		return err
	}
	res, err := Status(na, rendered, all, reps)
	if err != nil {
		return err
	}
	if done, err := out.structured(o.Out, res); done {
		return err
	}
	ready := "Ready unknown"
	if res.Ready != nil {
		ready = fmt.Sprintf("Ready=%s (%s: %s)", res.Ready.Status, res.Ready.Reason, res.Ready.Message)
	}
	fmt.Fprintf(o.Out, "NodeAccess %s: %s\n%d of %d selected nodes in sync\n\n", name, clean(ready), res.NodesInSync, res.SelectedNodes)
	if len(res.Nodes) == 0 {
		fmt.Fprintf(o.ErrOut, "NodeAccess %s selects no node.\n", name)
		return nil
	}
	header := []string{"NODE", "IN-SYNC", "REASON", "MESSAGE"}
	if out.wide() {
		header = append(header, "SELECTED", "GENERATION", "HEARTBEAT")
	}
	rows := make([][]string, 0, len(res.Nodes))
	for _, n := range res.Nodes {
		row := []string{n.Node, fmt.Sprint(n.InSync), n.Reason, n.Message}
		if out.wide() {
			gen := ""
			if n.Generation > 0 {
				gen = fmt.Sprint(n.Generation)
			}
			row = append(row, fmt.Sprint(n.Selected), gen, timeString(n.Heartbeat))
		}
		rows = append(rows, row)
	}
	return table(o.Out, header, rows)
}

// Status computes, for every node na selects (desiredstate.SelectedNodes),
// whether its report shows the rendered version applied, as the manager
// counts nodes in sync; rendered is nil when the operator has not rendered
// na, and then no node is in sync.
func Status(na *nav1.NodeAccess, rendered *nav1.RenderedNodeAccess, all map[string]*corev1.Node, reps map[string]*nav1.NodeAccessReport) (StatusResult, error) {
	res := StatusResult{NodeAccess: na.Name, Nodes: []NodeSyncState{}, Ready: meta.FindStatusCondition(na.Status.Conditions, nav1.ReadyCondition)}
	selected, err := desiredstate.SelectedNodes(&na.Spec.NodeSelector, labelsOf(all))
	if err != nil {
		return res, err
	}
	hash := ""
	if rendered != nil {
		hash = rendered.Spec.Hash
	}
	isSelected := map[string]bool{}
	for _, name := range selected {
		isSelected[name] = true
		st := NodeSyncState{Node: name, Selected: true}
		rep := reps[name]
		g, ok := grantIn(rep, string(na.UID))
		if rep != nil {
			st.Heartbeat = rep.Status.HeartbeatTime
		}
		if ok {
			st.Generation = g.Generation
		}
		switch {
		case rendered == nil:
			st.Reason, st.Message = ReasonNotRendered, "the operator has not rendered this NodeAccess; see its conditions"
		case rep == nil:
			st.Reason, st.Message = ReasonNoReport, "the node's agent has not reported"
		default:
			reported := map[string]nav1.GrantReport{}
			if ok {
				reported[g.UID] = g
			}
			var applied string
			applied, st.Reason = appliedState(rep, reported, string(na.UID), hash)
			st.InSync = applied == appliedTrue
			switch {
			case applied == appliedFalse:
				st.Message = g.Message
			case st.Reason == ReasonNotYetApplied:
				st.Message = "the node's report does not list this NodeAccess yet"
			case st.Reason == ReasonOlderVersionApplied:
				st.Message = fmt.Sprintf("the node applied generation %d; the current one is %d", g.Generation, rendered.Spec.Generation)
			}
		}
		if st.InSync {
			res.NodesInSync++
		}
		res.Nodes = append(res.Nodes, st)
	}
	res.SelectedNodes = len(selected)
	// Nodes it no longer selects that still report its keys.
	var others []NodeSyncState
	for name, rep := range reps {
		g, ok := grantIn(rep, string(na.UID))
		if !ok || isSelected[name] {
			continue
		}
		msg := "not selected, but the node's report still lists it"
		if g.Reason != "" {
			msg = fmt.Sprintf("not selected, but the node reports %s: %s", g.Reason, g.Message)
		}
		others = append(others, NodeSyncState{Node: name, Reason: ReasonStillHeld, Message: msg, Heartbeat: rep.Status.HeartbeatTime})
	}
	sort.Slice(others, func(i, j int) bool { return others[i].Node < others[j].Node })
	res.Nodes = append(res.Nodes, others...)
	return res, nil
}

// grantIn returns the report's entry for the grant uid.
func grantIn(rep *nav1.NodeAccessReport, uid string) (nav1.GrantReport, bool) {
	if rep == nil {
		return nav1.GrantReport{}, false
	}
	return rep.Status.Grant(uid)
}

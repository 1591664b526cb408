package plugin

import (
	"fmt"
	"sort"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
)

// Applied states of a grant on a node, as who and status print them.
const (
	appliedTrue    = "True"
	appliedFalse   = "False"
	appliedPending = "Pending"
	appliedUnknown = "Unknown"
)

// Reasons the plugin gives when a node's report does not show a grant applied.
const (
	// ReasonNoReport: the node has no NodeAccessReport; its agent never reported.
	ReasonNoReport = "NoReport"
	// ReasonNotYetApplied: the node's report does not list the grant yet.
	ReasonNotYetApplied = "NotYetApplied"
	// ReasonOlderVersionApplied: the node applied an earlier version of the grant.
	ReasonOlderVersionApplied = "OlderVersionApplied"
	// ReasonNotRendered: the operator has not rendered the grant (yet).
	ReasonNotRendered = "NotRendered"
	// ReasonApplied: the node applied the current version of the grant.
	ReasonApplied = "Applied"
	// ReasonStillHeld: a node the grant does not select still holds its keys.
	ReasonStillHeld = "StillHeld"
)

// WhoResult is who's answer; -o json and -o yaml print it.
type WhoResult struct {
	// Node is the node's name.
	Node string `json:"node"`
	// Reported says whether the node's agent has written a report, and
	// Ready and Heartbeat what it last said.
	Reported  bool         `json:"reported"`
	Ready     string       `json:"ready,omitempty"`
	Heartbeat *metav1.Time `json:"heartbeat,omitempty"`
	// Keys are the keys that reach the node now, one per grant, account and key.
	Keys []WhoKey `json:"keys"`
	// Warnings are grants that select the node but cannot be applied,
	// and keys of grants still held although they should be gone.
	Warnings []string `json:"warnings,omitempty"`
}

// WhoKey is one key that reaches a node.
type WhoKey struct {
	NodeAccess  string       `json:"nodeAccess"`
	User        string       `json:"user"`
	Type        string       `json:"type"`
	Comment     string       `json:"comment,omitempty"`
	Fingerprint string       `json:"fingerprint"`
	ExpiresAt   *metav1.Time `json:"expiresAt,omitempty"`
	Options     string       `json:"options,omitempty"`
	// Applied is True when the node's agent reported this grant's current
	// version applied, Pending while it has not, False when it failed
	// (Reason says why), Unknown without a report.
	Applied string `json:"applied"`
	Reason  string `json:"reason,omitempty"`
}

func newWhoCommand(o *Options) *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "who NODE",
		Short: "List the NodeAccess grants, accounts and keys that reach a node now",
		Long: `List the NodeAccess grants, accounts and keys that reach a node now:
per key its comment, SHA256 fingerprint and expiry, and whether the node's
agent has applied the grant. The keys are computed from the rendered grants
exactly as the node's agent computes them.`,
		Example: `  kubectl nodeaccess who node-a
  kubectl nodeaccess who node-a -o wide
  kubectl nodeaccess who node-a -o yaml`,
		Args: exactArgs("NODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.validate(); err != nil {
				return err
			}
			return o.runWho(cmd, args[0], out)
		},
	}
	out.add(cmd)
	return cmd
}

func (o *Options) runWho(cmd *cobra.Command, name string, out outputFlag) error {
	ctx := cmd.Context()
	c, err := o.client()
	if err != nil {
		return err
	}
	node := &corev1.Node{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, node); err != nil {
		return err
	}
	rendered, err := o.rendered(ctx, c)
	if err != nil {
		return err
	}
	report := &nav1.NodeAccessReport{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, report); apierrors.IsNotFound(err) {
		report = nil
	} else if err != nil {
		return err
	}
	res := Who(node, rendered, report, time.Now())
	if done, err := out.structured(o.Out, res); done {
		return err
	}
	for _, w := range res.Warnings {
		o.warnf("%s", clean(w))
	}
	if !res.Reported {
		o.warnf("node %s has no NodeAccessReport: its agent has not reported", name)
	}
	if len(res.Keys) == 0 {
		fmt.Fprintf(o.ErrOut, "No NodeAccess grants keys on node %s.\n", name)
		return nil
	}
	header := []string{"NODEACCESS", "USER", "COMMENT", "FINGERPRINT", "EXPIRES", "APPLIED"}
	if out.wide() {
		header = append(header, "TYPE", "OPTIONS", "REASON")
	}
	rows := make([][]string, 0, len(res.Keys))
	for _, k := range res.Keys {
		row := []string{k.NodeAccess, k.User, k.Comment, k.Fingerprint, timeString(k.ExpiresAt), k.Applied}
		if out.wide() {
			row = append(row, k.Type, k.Options, k.Reason)
		}
		rows = append(rows, row)
	}
	return table(o.Out, header, rows)
}

// Who computes which keys reach a node now from the rendered grants, with
// desiredstate.ForNode as the node's agent does, and whether the node's
// report shows each grant applied.
func Who(node *corev1.Node, rendered []nav1.RenderedNodeAccess, report *nav1.NodeAccessReport, now time.Time) WhoResult {
	res := WhoResult{Node: node.Name, Keys: []WhoKey{}}
	reported := map[string]nav1.GrantReport{}
	if report != nil {
		res.Reported, res.Heartbeat = true, report.Status.HeartbeatTime
		if c := meta.FindStatusCondition(report.Status.Conditions, nav1.ReadyCondition); c != nil {
			res.Ready = string(c.Status)
		}
		reported = report.Status.GrantsByUID()
	}
	plan := desiredstate.ForNode(node.Labels, rendered, now, desiredstate.Options{})

	// The keys the plan writes, by grant, account and key blob.
	type keyID struct{ uid, user, data string }
	planned := map[keyID]bool{}
	for user, sections := range plan.Accounts {
		for _, s := range sections {
			for _, k := range s.Keys {
				planned[keyID{s.UID, user, k.Base64}] = true
			}
		}
	}
	byUID := map[string]*nav1.RenderedNodeAccess{}
	for i := range rendered {
		byUID[rendered[i].Spec.NodeAccessUID] = &rendered[i]
	}
	active := map[string]bool{}
	for _, g := range plan.Grants {
		if g.Err != nil {
			res.Warnings = append(res.Warnings, fmt.Sprintf("NodeAccess %s cannot be applied on this node: %v", g.Name, g.Err))
		}
		r := byUID[g.UID]
		if !g.Active || r == nil {
			continue
		}
		active[g.UID] = true
		applied, reason := appliedState(report, reported, g.UID, g.Hash)
		for _, u := range r.Spec.Users {
			for _, k := range u.Keys {
				if !planned[keyID{g.UID, u.Name, k.Data}] {
					continue
				}
				opts, _ := desiredstate.RenderOptions(k.Options)
				res.Keys = append(res.Keys, WhoKey{
					NodeAccess: g.Name, User: u.Name, Type: k.Type, Comment: k.Comment, Fingerprint: k.Fingerprint,
					ExpiresAt: earliest(k.ExpiresAt, r.Spec.ExpiresAt), Options: opts, Applied: applied, Reason: reason,
				})
			}
		}
	}
	// Keys the node reports it could not remove.
	for _, g := range reportedGrants(reported) {
		if !active[g.UID] && !g.Applied && g.Reason != "" {
			res.Warnings = append(res.Warnings, fmt.Sprintf("NodeAccess %s: the node reports %s: %s", g.Name, g.Reason, g.Message))
		}
	}
	sort.SliceStable(res.Keys, func(i, j int) bool {
		a, b := res.Keys[i], res.Keys[j]
		if a.NodeAccess != b.NodeAccess {
			return a.NodeAccess < b.NodeAccess
		}
		return a.User < b.User
	})
	return res
}

// appliedState says whether a node's report shows the version hash of the
// grant uid applied.
func appliedState(report *nav1.NodeAccessReport, reported map[string]nav1.GrantReport, uid, hash string) (string, string) {
	if report == nil {
		return appliedUnknown, ReasonNoReport
	}
	g, ok := reported[uid]
	switch {
	case !ok:
		return appliedPending, ReasonNotYetApplied
	case !g.Applied:
		return appliedFalse, g.Reason
	case hash == "" || g.Hash != hash:
		return appliedPending, ReasonOlderVersionApplied
	}
	return appliedTrue, ReasonApplied
}

func reportedGrants(m map[string]nav1.GrantReport) []nav1.GrantReport {
	out := make([]nav1.GrantReport, 0, len(m))
	for _, g := range m {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name+out[i].UID < out[j].Name+out[j].UID })
	return out
}

func earliest(a, b *metav1.Time) *metav1.Time {
	switch {
	case a == nil:
		return b
	case b == nil || a.Before(b):
		return a
	}
	return b
}

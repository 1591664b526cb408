package plugin

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// revokePollInterval is how often revoke --wait looks at the reports.
const revokePollInterval = 250 * time.Millisecond

func newRevokeCommand(o *Options) *cobra.Command {
	var (
		wait    bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "revoke NAME [--wait]",
		Short: "Delete a NodeAccess and, with --wait, wait until every node confirms its keys are gone",
		Long: `Delete the NodeAccess NAME: every node's agent removes its keys. With
--wait, return only when the object is gone and no node's report still
lists the grant, printing the nodes that still hold its keys while it
waits; after --timeout it fails, naming them.`,
		Example: `  kubectl nodeaccess revoke oncall
  kubectl nodeaccess revoke oncall --wait --timeout 2m`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.runRevoke(cmd, args[0], wait, timeout)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "Wait until every node has confirmed that the keys are removed.")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "How long --wait waits.")
	return cmd
}

func (o *Options) runRevoke(cmd *cobra.Command, name string, wait bool, timeout time.Duration) error {
	ctx := cmd.Context()
	c, err := o.client()
	if err != nil {
		return err
	}
	na := &nav1.NodeAccess{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, na); err != nil {
		return err
	}
	uid := string(na.UID)
	if err := c.Delete(ctx, na, client.Preconditions{UID: &na.UID}); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "nodeaccess.nodeaccess.io %q deleted\n", name)
	if !wait {
		return nil
	}

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last []string
	for {
		gone, holders, err := revocationState(ctx, c, name, uid)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if err == nil && gone && len(holders) == 0 {
			fmt.Fprintf(o.Out, "NodeAccess %s revoked: no node holds its keys\n", name)
			return nil
		}
		if err == nil && !slices.Equal(holders, last) {
			if len(holders) > 0 {
				fmt.Fprintf(o.ErrOut, "Waiting for %d nodes to remove the keys: %s\n", len(holders), strings.Join(holders, "; "))
			}
			last = holders
		}
		select {
		case <-ctx.Done():
			if len(last) == 0 {
				return fmt.Errorf("timed out after %s waiting for NodeAccess %s to be removed", timeout, name)
			}
			return fmt.Errorf("timed out after %s: %d nodes still hold the keys of NodeAccess %s: %s", timeout, len(last), name, strings.Join(last, "; "))
		case <-time.After(revokePollInterval):
		}
	}
}

// revocationState says whether the NodeAccess (of this uid) is gone, and
// which nodes' reports still list its grant, with the reason they give.
func revocationState(ctx context.Context, c client.Client, name, uid string) (bool, []string, error) {
	gone := false
	na := &nav1.NodeAccess{}
	err := c.Get(ctx, client.ObjectKey{Name: name}, na)
	switch {
	case apierrors.IsNotFound(err):
		gone = true
	case err != nil:
		return false, nil, err
	default:
		gone = string(na.UID) != uid
	}
	reps, err := reports(ctx, c)
	if err != nil {
		return false, nil, err
	}
	var holders []string
	for node, rep := range reps {
		if g, ok := grantIn(rep, uid); ok {
			h := node
			if g.Reason != "" {
				h += fmt.Sprintf(" (%s: %s)", g.Reason, g.Message)
			}
			holders = append(holders, clean(h))
		}
	}
	sort.Strings(holders)
	return gone, holders, nil
}

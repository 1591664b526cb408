// Package plugin is kubectl-nodeaccess, the kubectl plugin for the people
// who grant node access and use it: who can reach a node, whether a grant is
// in sync, grant and revoke with a TTL, and known_hosts and ssh_config from
// the host keys the agents publish. Each command is one file; they read the
// project's API types and compute nothing the manager or the agents
// compute: selection goes through internal/desiredstate, refusals come from
// the API server itself.
package plugin

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// Options are what every command shares: the kubeconfig flags (--kubeconfig,
// --context, -n, ...) and the streams.
type Options struct {
	genericiooptions.IOStreams
	ConfigFlags *genericclioptions.ConfigFlags

	// namespaceSet is true when -n was given: it names the operator's
	// namespace, instead of finding it.
	namespaceSet bool
}

// NewCommand returns the kubectl-nodeaccess command and its subcommands.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &Options{IOStreams: streams, ConfigFlags: genericclioptions.NewConfigFlags(true)}
	// --user names a node account in these commands; a kubeconfig user is
	// chosen with --context.
	o.ConfigFlags.AuthInfoName = nil
	root := &cobra.Command{
		Use: "kubectl-nodeaccess",
		// kubectl runs kubectl-nodeaccess as "kubectl nodeaccess".
		Annotations: map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl nodeaccess"},
		Short:       "Grant, inspect and use SSH access to nodes managed by nodeaccess-operator",
		Long: `Grant, inspect and use SSH access to the nodes of a cluster run by
nodeaccess-operator: who can reach a node, whether a grant is in sync on
every node, grant with a TTL, revoke and wait for every node, and
known_hosts and ssh_config from the host keys the node agents publish.

-n names the operator's namespace (where the rendered grants live); without
it the plugin finds it.`,
		Example: `  kubectl nodeaccess grant oncall --selector pool=gpu --user ops --key-file ~/.ssh/id_ed25519.pub --ttl 8h
  kubectl nodeaccess who node-a
  kubectl nodeaccess known-hosts > ~/.ssh/nodeaccess_known_hosts
  kubectl nodeaccess ssh-config --user ops >> ~/.ssh/config`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			o.namespaceSet = cmd.Flags().Changed("namespace")
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	o.ConfigFlags.AddFlags(root.PersistentFlags())
	root.AddCommand(
		newWhoCommand(o),
		newStatusCommand(o),
		newGrantCommand(o),
		newRevokeCommand(o),
		newKnownHostsCommand(o),
		newSSHConfigCommand(o),
	)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	return root
}

// Run runs the plugin with args and returns its exit code: 0 on success, 1
// on an error, which is printed on stderr as kubectl prints it.
func Run(ctx context.Context, args []string, streams genericiooptions.IOStreams) int {
	cmd := NewCommand(streams)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(ctx); err != nil {
		printError(streams.ErrOut, err)
		return 1
	}
	return 0
}

// warnf prints a warning on stderr, as kubectl does.
func (o *Options) warnf(format string, args ...any) {
	fmt.Fprintf(o.ErrOut, "Warning: "+format+"\n", args...)
}

// clean makes a string read from the cluster safe to print on a terminal:
// control characters (escape sequences among them) become '?'.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

// exactArgs is cobra.ExactArgs with the argument's name in the error.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return fmt.Errorf("%s needs %s (see %s --help)", cmd.CommandPath(), strings.Join(names, " "), cmd.CommandPath())
		}
		return nil
	}
}

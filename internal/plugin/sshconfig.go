package plugin

import (
	"fmt"
	"regexp"

	"github.com/spf13/cobra"
)

// DefaultKnownHostsFile is where ssh-config points UserKnownHostsFile by
// default; ssh expands the ~.
const DefaultKnownHostsFile = "~/.ssh/nodeaccess_known_hosts"

// accountName is the API's pattern for a node account.
var accountName = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

func newSSHConfigCommand(o *Options) *cobra.Command {
	var selector, user, knownHosts string
	cmd := &cobra.Command{
		Use:   "ssh-config [--selector SELECTOR] [--user USER] [--known-hosts-file FILE]",
		Short: "Print ssh_config Host stanzas for the nodes, verified by the published host keys",
		Long: `Print an ssh_config Host stanza for each node --selector selects (every
node by default) whose agent published its host keys: HostName and Port
of the node's sshd as the agent probed it, User, and HostKeyAlias (the
node's name) with UserKnownHostsFile pointing at the file known-hosts
wrote, and StrictHostKeyChecking yes: "ssh NODE" then just works, and
refuses a host key that is not the published one.`,
		Example: `  kubectl nodeaccess known-hosts > ~/.ssh/nodeaccess_known_hosts
  kubectl nodeaccess ssh-config --user ops >> ~/.ssh/config
  ssh node-a`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if user != "" && !accountName.MatchString(user) {
				return fmt.Errorf("--user %q is not an account name", user)
			}
			hosts, err := o.hostsFromCluster(cmd.Context(), selector)
			if err != nil {
				return err
			}
			out, err := SSHConfig(hosts, user, knownHosts)
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(o.Out, out)
			return err
		},
	}
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "Label selector of the nodes (default: every node).")
	cmd.Flags().StringVar(&user, "user", "", "Account to log in as on the nodes (default: ssh's own choice).")
	cmd.Flags().StringVar(&knownHosts, "known-hosts-file", DefaultKnownHostsFile, "The file known-hosts wrote.")
	return cmd
}

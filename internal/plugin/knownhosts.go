package plugin

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

func newKnownHostsCommand(o *Options) *cobra.Command {
	var selector, file string
	cmd := &cobra.Command{
		Use:   "known-hosts [--selector SELECTOR] [--file FILE]",
		Short: "Print known_hosts lines for the nodes, from the host keys their agents publish",
		Long: `Print known_hosts lines for the nodes --selector selects (every node by
default): each node's name and addresses (from its Node object) with the
SSH host keys its agent observed and published in its NodeAccessReport, so
that ssh never has to trust a key on first use. Use the file with the Host
stanzas of ssh-config.

A key is only as trustworthy as the report it comes from: the plugin warns
when the policy that lets an agent write only its own node's report
(ValidatingAdmissionPolicy ` + ReportPolicyName + `) is not installed. Nodes
without a valid published key are left out, with a warning.`,
		Example: `  kubectl nodeaccess known-hosts > ~/.ssh/nodeaccess_known_hosts
  kubectl nodeaccess known-hosts -l pool=gpu --file ~/.ssh/nodeaccess_known_hosts`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			hosts, err := o.hostsFromCluster(cmd.Context(), selector)
			if err != nil {
				return err
			}
			out := KnownHosts(hosts)
			if file == "" {
				_, err := fmt.Fprint(o.Out, out)
				return err
			}
			return writeFileAtomic(file, []byte(out))
		},
	}
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "Label selector of the nodes (default: every node).")
	cmd.Flags().StringVarP(&file, "file", "f", "", "Write the lines to this file, replacing it whole (default: standard output).")
	return cmd
}

// writeFileAtomic replaces path with data: a temporary file in the same
// directory, synced, then renamed over it.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

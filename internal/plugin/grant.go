package plugin

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
)

// maxKeyFileBytes bounds a --key-file: a public key file is a few hundred bytes.
const maxKeyFileBytes = 64 << 10

// grantOptions are grant's flags.
type grantOptions struct {
	selector  string
	allNodes  bool
	users     []string
	keyFiles  []string
	secrets   []string
	comment   string
	ttl       time.Duration
	from      []string
	restrict  bool
	command   string
	dryRun    string
	printFlag *genericclioptions.PrintFlags
}

func newGrantCommand(o *Options) *cobra.Command {
	g := &grantOptions{printFlag: genericclioptions.NewPrintFlags("created").WithTypeSetter(scheme)}
	cmd := &cobra.Command{
		Use:   "grant NAME --selector SELECTOR --user USER (--key-file FILE | --key-from-secret NS/NAME[:KEY]) --ttl DURATION",
		Short: "Create a NodeAccess that expires: keys for accounts on the nodes a selector selects",
		Long: `Create a NodeAccess named NAME that grants the public keys of --key-file
(and of the Secrets of --key-from-secret) to the accounts --user on the
nodes --selector selects, until --ttl from now. The API server checks the
object: whatever it refuses is refused here with its message.

--dry-run=client prints the object without sending it; --dry-run=server has
the API server check it without creating it. Both print the nodes the
selector selects today.`,
		Example: `  # Eight hours of access for ops on the GPU pool, with your own key.
  kubectl nodeaccess grant oncall --selector pool=gpu --user ops --key-file ~/.ssh/id_ed25519.pub --ttl 8h

  # Keys from a Secret, only from the office network, nothing but a shell.
  kubectl nodeaccess grant audit -l 'pool in (web,db)' --user auditor \
    --key-from-secret security/auditors:authorized_keys --from 10.0.0.0/8 --restrict --ttl 24h

  # See what would be created and which nodes it reaches, checked by the API server.
  kubectl nodeaccess grant oncall -l pool=gpu --user ops --key-file key.pub --ttl 8h --dry-run=server`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.runGrant(cmd, args[0], g)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&g.selector, "selector", "l", "", "Label selector of the nodes, as kubectl get -l takes it (e.g. 'pool=gpu,zone in (a,b)').")
	f.BoolVar(&g.allNodes, "all-nodes", false, "Select every node (instead of --selector).")
	f.StringArrayVar(&g.users, "user", nil, "Local account on the nodes that accepts the keys (repeatable).")
	f.StringArrayVar(&g.keyFiles, "key-file", nil, "File of public keys, one per line, for example ~/.ssh/id_ed25519.pub (repeatable).")
	f.StringArrayVar(&g.secrets, "key-from-secret", nil, "Secret holding public keys, as NAMESPACE/NAME[:KEY] (KEY defaults to authorized_keys; repeatable).")
	f.StringVar(&g.comment, "comment", "", "Comment written after each key of --key-file on the nodes (default: the key's own).")
	f.DurationVar(&g.ttl, "ttl", 0, "How long the grant lasts, for example 8h; at its end every key is removed from every node.")
	f.StringArrayVar(&g.from, "from", nil, "Accept the keys only from these addresses, host names or CIDR ranges (repeatable).")
	f.BoolVar(&g.restrict, "restrict", false, "Turn on every sshd restriction: no forwarding of any kind, no pty, no ~/.ssh/rc.")
	f.StringVar(&g.command, "command", "", "Force this command whatever the client asks, for example internal-sftp.")
	f.StringVar(&g.dryRun, "dry-run", "none", `"none", "client" (print the object only) or "server" (the API server checks it, nothing is created).`)
	g.printFlag.AddFlags(cmd)
	return cmd
}

func (o *Options) runGrant(cmd *cobra.Command, name string, g *grantOptions) error {
	ctx := cmd.Context()
	switch g.dryRun {
	case "none", "client", "server":
	default:
		return fmt.Errorf(`invalid --dry-run %q: must be "none", "client" or "server"`, g.dryRun)
	}
	na, err := g.nodeAccess(name, time.Now())
	if err != nil {
		return err
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	switch g.dryRun {
	case "server":
		err = c.Create(ctx, na, client.DryRunAll)
	case "none":
		err = c.Create(ctx, na)
	}
	if err != nil {
		return err
	}
	preview, err := o.preview(cmd, c, na)
	if err != nil {
		// The grant is made (or checked) all the same.
		o.warnf("%s", clean(err.Error()))
	}

	operation := "%s"
	switch g.dryRun {
	case "client":
		operation = "%s (dry run)"
	case "server":
		operation = "%s (server dry run)"
	}
	if err := g.printFlag.Complete(operation); err != nil {
		return err
	}
	format := ""
	if g.printFlag.OutputFormat != nil {
		format = *g.printFlag.OutputFormat
	}
	dryRunYAML := format == "" && g.dryRun != "none"
	if dryRunYAML {
		// A dry run prints the object; the preview goes with it as
		// comments, so that the output can still be applied.
		yamlFormat := "yaml"
		g.printFlag.OutputFormat = &yamlFormat
		for _, line := range preview {
			fmt.Fprintf(o.Out, "# %s\n", line)
		}
	}
	printer, err := g.printFlag.ToPrinter()
	if err != nil {
		return err
	}
	if err := printer.PrintObj(na, o.Out); err != nil {
		return err
	}
	if dryRunYAML {
		return nil
	}
	w := o.Out
	if format != "" {
		w = o.ErrOut
	}
	for _, line := range preview {
		fmt.Fprintln(w, line)
	}
	return nil
}

// preview says which nodes the grant selects today and when it ends.
func (o *Options) preview(cmd *cobra.Command, c client.Client, na *nav1.NodeAccess) ([]string, error) {
	all, err := nodes(cmd.Context(), c)
	if err != nil {
		return nil, fmt.Errorf("listing nodes for the preview: %w", err)
	}
	selected, err := desiredstate.SelectedNodes(&na.Spec.NodeSelector, labelsOf(all))
	if err != nil {
		return nil, err
	}
	var lines []string
	if len(selected) == 0 {
		lines = append(lines, fmt.Sprintf("NodeAccess %s selects no node today", na.Name))
	} else {
		lines = append(lines, fmt.Sprintf("NodeAccess %s selects %d nodes today: %s", na.Name, len(selected), strings.Join(selected, ", ")))
	}
	if na.Spec.ExpiresAt != nil {
		lines = append(lines, fmt.Sprintf("its keys are removed from every node at %s (in %s)",
			timeString(na.Spec.ExpiresAt), time.Until(na.Spec.ExpiresAt.Time).Round(time.Second)))
	}
	return lines, nil
}

// nodeAccess builds the NodeAccess the flags describe; it checks only what
// the API server cannot: the flags' own syntax, and that no key file is a
// private key (which is never sent).
func (g *grantOptions) nodeAccess(name string, now time.Time) (*nav1.NodeAccess, error) {
	if (g.selector == "") == !g.allNodes {
		return nil, errors.New("exactly one of --selector and --all-nodes is required")
	}
	if len(g.users) == 0 {
		return nil, errors.New("--user is required")
	}
	if len(g.keyFiles) == 0 && len(g.secrets) == 0 {
		return nil, errors.New("at least one --key-file or --key-from-secret is required")
	}
	if g.ttl <= 0 {
		return nil, errors.New("--ttl is required and must be positive: a grant made here always expires")
	}
	sel := &metav1.LabelSelector{}
	if g.selector != "" {
		var err error
		if sel, err = metav1.ParseToLabelSelector(g.selector); err != nil {
			return nil, fmt.Errorf("parsing --selector: %w", err)
		}
	}
	var keys []nav1.AuthorizedKey
	for _, path := range g.keyFiles {
		lines, err := readKeyFile(path)
		if err != nil {
			return nil, err
		}
		for _, line := range lines {
			keys = append(keys, nav1.AuthorizedKey{Key: line, Comment: g.comment})
		}
	}
	var sources []nav1.KeySource
	for _, s := range g.secrets {
		ref, err := parseSecretRef(s)
		if err != nil {
			return nil, err
		}
		sources = append(sources, nav1.KeySource{SecretKeyRef: ref})
	}
	var opts *nav1.KeyOptions
	if len(g.from) > 0 || g.restrict || g.command != "" {
		opts = &nav1.KeyOptions{From: g.from, Restrict: g.restrict, Command: g.command}
	}
	expires := metav1.NewTime(now.Add(g.ttl).Truncate(time.Second))
	na := &nav1.NodeAccess{
		TypeMeta:   metav1.TypeMeta{APIVersion: nav1.GroupVersion.String(), Kind: "NodeAccess"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       nav1.NodeAccessSpec{NodeSelector: *sel, ExpiresAt: &expires},
	}
	for _, u := range g.users {
		na.Spec.Users = append(na.Spec.Users, nav1.UserAccess{Name: u, Keys: keys, KeysFrom: sources, Options: opts})
	}
	return na, nil
}

// readKeyFile returns the key lines of a public key file: blank lines and
// '#' comments skipped. A private key is refused without being read further.
func readKeyFile(path string) ([]string, error) {
	if rest, ok := strings.CutPrefix(path, "~/"); ok {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("expanding %s: %w", path, err)
		}
		path = filepath.Join(home, rest)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading key file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading key file %s: %w", path, err)
	}
	if len(data) > maxKeyFileBytes {
		return nil, fmt.Errorf("key file %s is larger than %d bytes: not a public key file", path, maxKeyFileBytes)
	}
	if bytes.Contains(data, []byte("PRIVATE KEY")) {
		return nil, fmt.Errorf("key file %s holds a private key; pass the public key (%s.pub) instead", path, path)
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxKeyFileBytes)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		lines = append(lines, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading key file %s: %w", path, err)
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("key file %s holds no key", path)
	}
	return lines, nil
}

// parseSecretRef parses NAMESPACE/NAME[:KEY].
func parseSecretRef(s string) (*nav1.ObjectKeySelector, error) {
	ref, key, _ := strings.Cut(s, ":")
	ns, name, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || name == "" {
		return nil, fmt.Errorf("--key-from-secret %q: want NAMESPACE/NAME[:KEY]", s)
	}
	if key == "" {
		key = "authorized_keys"
	}
	return &nav1.ObjectKeySelector{Namespace: ns, Name: name, Key: key}, nil
}

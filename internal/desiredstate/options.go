package desiredstate

import (
	"fmt"
	"regexp"
	"strings"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

var (
	fromPattern    = regexp.MustCompile(`^!?[A-Za-z0-9.:*?/_%-]{1,253}$`)
	commandPattern = regexp.MustCompile(`^[^"\\\x00-\x1f\x7f]+$`)
)

// RenderOptions returns the authorized_keys options prefix for o, in a fixed
// order, or "" when o sets nothing. It checks every value again, whatever the
// API server accepted, since a quote or comma here would let a value escape
// its option.
func RenderOptions(o *nav1.KeyOptions) (string, error) {
	if o == nil {
		return "", nil
	}
	var opts []string
	if o.Restrict {
		opts = append(opts, "restrict")
	}
	if len(o.From) > 0 {
		for _, p := range o.From {
			if !fromPattern.MatchString(p) {
				return "", fmt.Errorf("from pattern %q is not a host, address or CIDR pattern", p)
			}
		}
		opts = append(opts, `from="`+strings.Join(o.From, ",")+`"`)
	}
	if o.Command != "" {
		if len(o.Command) > 1024 || !commandPattern.MatchString(o.Command) {
			return "", fmt.Errorf("command %q has a quote, backslash or control character", o.Command)
		}
		opts = append(opts, `command="`+o.Command+`"`)
	}
	flags := []struct {
		set  bool
		name string
	}{
		{o.NoPortForwarding, "no-port-forwarding"},
		{o.NoAgentForwarding, "no-agent-forwarding"},
		{o.NoX11Forwarding, "no-X11-forwarding"},
		{o.NoPTY, "no-pty"},
		{o.NoUserRC, "no-user-rc"},
	}
	for _, f := range flags {
		if f.set {
			opts = append(opts, f.name)
		}
	}
	return strings.Join(opts, ","), nil
}

// Package flagenv lets environment variables set a program's flags, so
// that an install that can change only a Deployment's environment (OLM's
// Subscription spec.config.env) configures every flag. A flag given on the
// command line wins over its variable; a variable wins over the default.
package flagenv

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// Name is the environment variable for a flag: the prefix, an underscore,
// and the flag's name upper-cased with dashes and dots as underscores
// (--home-roots with prefix NODEACCESS is NODEACCESS_HOME_ROOTS).
func Name(prefix, flagName string) string {
	return prefix + "_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
}

// Apply sets each flag of fs that the command line left unset from its
// variable (see Name), when that is set. It must run after fs.Parse. A
// value the flag refuses is an error that names the variable; nothing is
// ignored silently. lookup reads the environment (os.LookupEnv when nil).
func Apply(fs *flag.FlagSet, prefix string, lookup func(string) (string, bool)) error {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] {
			return
		}
		env := Name(prefix, f.Name)
		value, ok := lookup(env)
		if !ok {
			return
		}
		if setErr := fs.Set(f.Name, value); setErr != nil {
			err = fmt.Errorf("setting --%s from $%s: %w", f.Name, env, setErr)
		}
	})
	return err
}

// Usage is a line for a program's help saying how variables set flags.
func Usage(prefix string) string {
	return fmt.Sprintf("Every flag can also be set by an environment variable %s_<FLAG> (upper case, dashes as underscores, e.g. %s); a flag on the command line wins.",
		prefix, Name(prefix, "home-roots"))
}

package flagenv

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestApply(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		roots   string
		root    bool
		timeout time.Duration
		wantErr string
	}{
		{name: "defaults without variables", roots: "/home", timeout: time.Minute},
		{name: "variables set unset flags", env: map[string]string{"NODEACCESS_HOME_ROOTS": "/home,/var/home", "NODEACCESS_ALLOW_ROOT_USER": "true", "NODEACCESS_REVOCATION_TIMEOUT": "2m"},
			roots: "/home,/var/home", root: true, timeout: 2 * time.Minute},
		{name: "the command line wins", args: []string{"--home-roots=/srv", "--allow-root-user=false"}, env: map[string]string{"NODEACCESS_HOME_ROOTS": "/var/home", "NODEACCESS_ALLOW_ROOT_USER": "true"},
			roots: "/srv", timeout: time.Minute},
		{name: "an empty variable is a value", env: map[string]string{"NODEACCESS_HOME_ROOTS": ""}, timeout: time.Minute},
		{name: "other prefixes are ignored", env: map[string]string{"HOME_ROOTS": "/x", "OTHER_HOME_ROOTS": "/y"}, roots: "/home", timeout: time.Minute},
		{name: "a bad value names its variable", env: map[string]string{"NODEACCESS_ALLOW_ROOT_USER": "yes please"}, wantErr: "$NODEACCESS_ALLOW_ROOT_USER"},
		{name: "a bad duration names its variable", env: map[string]string{"NODEACCESS_REVOCATION_TIMEOUT": "soon"}, wantErr: "--revocation-timeout from $NODEACCESS_REVOCATION_TIMEOUT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("manager", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			roots := fs.String("home-roots", "/home", "")
			root := fs.Bool("allow-root-user", false, "")
			timeout := fs.Duration("revocation-timeout", time.Minute, "")
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			err := Apply(fs, "NODEACCESS", func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *roots != tc.roots || *root != tc.root || *timeout != tc.timeout {
				t.Fatalf("flags %q %v %s, want %q %v %s", *roots, *root, *timeout, tc.roots, tc.root, tc.timeout)
			}
		})
	}
}

func TestName(t *testing.T) {
	for flagName, want := range map[string]string{
		"home-roots": "NODEACCESS_HOME_ROOTS", "zap-log-level": "NODEACCESS_ZAP_LOG_LEVEL", "kube-api-qps": "NODEACCESS_KUBE_API_QPS", "a.b": "NODEACCESS_A_B",
	} {
		if got := Name("NODEACCESS", flagName); got != want {
			t.Errorf("Name(%q) = %q, want %q", flagName, got, want)
		}
	}
}

package plugin_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

func TestGrant(t *testing.T) {
	ctx := context.Background()
	createNode(t, "grant-a", map[string]string{"pool": "grant"}, "")
	createNode(t, "grant-b", map[string]string{"pool": "grant", "zone": "z1"}, "")
	createNode(t, "grant-c", map[string]string{"pool": "elsewhere"}, "")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "id_ed25519.pub")
	must(t, os.WriteFile(keyFile, []byte("# mine\nssh-ed25519 "+aliceData+" alice@laptop\n\n"), 0o644))
	exists := func(name string) bool {
		err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, &nav1.NodeAccess{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		return err == nil
	}
	base := []string{"grant", "oncall", "--selector", "pool=grant", "--user", "alice", "--key-file", keyFile, "--ttl", "8h"}

	// Dry runs print the object and the nodes it selects today, and create nothing.
	for _, mode := range []string{"client", "server"} {
		res := mustRun(t, append(base, "--dry-run="+mode)...)
		if !strings.HasPrefix(res.stdout, "# NodeAccess oncall selects 2 nodes today: grant-a, grant-b\n# its keys are removed from every node at ") {
			t.Errorf("--dry-run=%s printed:\n%s", mode, res.stdout)
		}
		var na nav1.NodeAccess
		must(t, yaml.Unmarshal([]byte(res.stdout), &na))
		if na.Kind != "NodeAccess" || na.Name != "oncall" || na.Spec.ExpiresAt == nil ||
			time.Until(na.Spec.ExpiresAt.Time) < 7*time.Hour || len(na.Spec.Users) != 1 || len(na.Spec.Users[0].Keys) != 1 ||
			na.Spec.Users[0].Keys[0].Key != "ssh-ed25519 "+aliceData+" alice@laptop" {
			t.Errorf("--dry-run=%s object: %+v", mode, na)
		}
		if mode == "server" && na.UID == "" {
			t.Error("a server dry run returns the object as the API server would store it, with a UID")
		}
		if exists("oncall") {
			t.Fatalf("--dry-run=%s created the object", mode)
		}
	}

	// The API server's refusals, with its own message, before anything exists.
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"an account name the API refuses", []string{"grant", "bad-user", "-l", "pool=grant", "--user", "Root", "--key-file", keyFile, "--ttl", "1h"}},
		{"a from pattern escaping its list", []string{"grant", "bad-from", "-l", "pool=grant", "--user", "alice", "--key-file", keyFile, "--ttl", "1h", "--from", "10.0.0.1,*"}},
		{"a command escaping its quotes", []string{"grant", "bad-command", "-l", "pool=grant", "--user", "alice", "--key-file", keyFile, "--ttl", "1h", "--command", `true" ssh-ed25519 AAAA`}},
	} {
		for _, dryRun := range []string{"server", "none"} {
			res := run(t, append(tc.args, "--dry-run="+dryRun)...)
			name := tc.args[1]
			if res.code != 1 || exists(name) {
				t.Errorf("%s (--dry-run=%s): exit %d, created %v; stderr %s", tc.name, dryRun, res.code, exists(name), res.stderr)
				continue
			}
			// The same object sent by a client gets the same message.
			na := nodeAccessFromDryRun(t, append(tc.args, "--dry-run=client"))
			err := k8sClient.Create(ctx, na, client.DryRunAll)
			var status apierrors.APIStatus
			if err == nil || !apierrorsAs(err, &status) || status.Status().Details == nil {
				t.Fatalf("%s: the API server accepted it: %v", tc.name, err)
			}
			want := fmt.Sprintf("The NodeAccess %q is invalid: ", name)
			if !strings.HasPrefix(res.stderr, want) {
				t.Errorf("%s: stderr %q, want it to start with %q", tc.name, res.stderr, want)
			}
			for _, c := range status.Status().Details.Causes {
				if !strings.Contains(res.stderr, c.Field+": "+c.Message) {
					t.Errorf("%s: stderr %q lacks the API's %q", tc.name, res.stderr, c.Field+": "+c.Message)
				}
			}
		}
	}

	// Refused here, before anything is sent.
	private := filepath.Join(dir, "id_ed25519")
	must(t, os.WriteFile(private, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"), 0o600))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"grant", "x", "-l", "pool=grant", "--user", "alice", "--key-file", private, "--ttl", "1h"}, "holds a private key; pass the public key"},
		{[]string{"grant", "x", "-l", "pool=grant", "--user", "alice", "--key-file", keyFile}, "--ttl is required"},
		{[]string{"grant", "x", "--user", "alice", "--key-file", keyFile, "--ttl", "1h"}, "exactly one of --selector and --all-nodes"},
		{[]string{"grant", "x", "-l", "pool=grant", "--key-file", keyFile, "--ttl", "1h"}, "--user is required"},
		{[]string{"grant", "x", "-l", "pool=grant", "--user", "alice", "--ttl", "1h"}, "--key-file or --key-from-secret"},
		{[]string{"grant", "x", "-l", "pool=grant", "--user", "alice", "--key-from-secret", "nonamespace", "--ttl", "1h"}, "want NAMESPACE/NAME[:KEY]"},
	} {
		res := run(t, tc.args...)
		if res.code != 1 || !strings.Contains(res.stderr, "error: ") || !strings.Contains(res.stderr, tc.want) || exists("x") {
			t.Errorf("%v: exit %d, stderr %q; want %q", tc.args, res.code, res.stderr, tc.want)
		}
	}

	// The real thing.
	res := mustRun(t, append(base, "--comment", "alice (on call)", "--from", "10.0.0.0/8", "--restrict",
		"--key-from-secret", "team/oncall-keys")...)
	if !strings.HasPrefix(res.stdout, "nodeaccess.nodeaccess.io/oncall created\nNodeAccess oncall selects 2 nodes today: grant-a, grant-b\n") {
		t.Errorf("grant printed:\n%s", res.stdout)
	}
	var na nav1.NodeAccess
	must(t, k8sClient.Get(ctx, client.ObjectKey{Name: "oncall"}, &na))
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), &na) })
	u := na.Spec.Users[0]
	if d := time.Until(na.Spec.ExpiresAt.Time); d < 7*time.Hour+59*time.Minute || d > 8*time.Hour {
		t.Errorf("expiresAt in %s, want 8h", d)
	}
	if u.Name != "alice" || len(u.Keys) != 1 || u.Keys[0].Comment != "alice (on call)" || u.Options == nil || !u.Options.Restrict ||
		strings.Join(u.Options.From, ",") != "10.0.0.0/8" || len(u.KeysFrom) != 1 || u.KeysFrom[0].SecretKeyRef.Key != "authorized_keys" {
		t.Errorf("created %+v", u)
	}
	// Creating it twice is refused by the API server.
	res = run(t, base...)
	if res.code != 1 || !strings.Contains(res.stderr, `Error from server (AlreadyExists): nodeaccesses.nodeaccess.io "oncall" already exists`) {
		t.Errorf("second grant: exit %d, stderr %q", res.code, res.stderr)
	}
	// -o name, -o json: the object on stdout, the preview on stderr.
	res = mustRun(t, "grant", "oncall-2", "--all-nodes", "--user", "alice", "--key-file", keyFile, "--ttl", "1h", "-o", "name")
	t.Cleanup(func() {
		_ = k8sClient.Delete(context.Background(), &nav1.NodeAccess{ObjectMeta: metav1.ObjectMeta{Name: "oncall-2"}})
	})
	if res.stdout != "nodeaccess.nodeaccess.io/oncall-2\n" || !strings.Contains(res.stderr, "selects 3 nodes today") {
		t.Errorf("-o name: stdout %q stderr %q", res.stdout, res.stderr)
	}
}

// nodeAccessFromDryRun runs a client dry run and decodes the object it prints.
func nodeAccessFromDryRun(t *testing.T, args []string) *nav1.NodeAccess {
	t.Helper()
	res := mustRun(t, args...)
	na := &nav1.NodeAccess{}
	must(t, yaml.Unmarshal([]byte(res.stdout), na))
	return na
}

func apierrorsAs(err error, target *apierrors.APIStatus) bool {
	s, ok := err.(apierrors.APIStatus)
	if ok {
		*target = s
	}
	return ok
}

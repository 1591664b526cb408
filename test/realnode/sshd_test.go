package realnode

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// The node's sshd lets alice in with the key in her authorized_keys and
// refuses another key, and says so in the node's /var/log/auth.log
// through rsyslog. alice exists only in the namespaces' /etc.
func TestSSHDAcceptsAGrantedKeyAndRefusesOthers(t *testing.T) {
	ctx := context.Background()
	keys := t.TempDir()
	granted, other := filepath.Join(keys, "granted"), filepath.Join(keys, "other")
	grantedPub, err := localcluster.WriteKeyPair(granted, "alice@laptop")
	if err != nil {
		t.Fatal(err)
	}
	otherPub, err := localcluster.WriteKeyPair(other, "mallory@laptop")
	if err != nil {
		t.Fatal(err)
	}
	writeAuthorizedKeys(t, alice, grantedPub+"\n")

	out, err := sshd.Login(ctx, alice.Name, granted, "id", "-un")
	if err != nil || strings.TrimSpace(string(out)) != "alice" {
		t.Fatalf("login with the granted key: %v: %s", err, out)
	}
	out, err = sshd.Login(ctx, alice.Name, other, "true")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 255 {
		t.Fatalf("login with another key: %v (want exit status 255): %s", err, out)
	}
	// bob has no authorized_keys: even alice's granted key does not open his account.
	if _, err := sshd.Login(ctx, bob.Name, granted, "true"); !errors.As(err, &exit) || exit.ExitCode() != 255 {
		t.Fatalf("login as bob: %v (want exit status 255)", err)
	}

	testenv.Eventually(t, 10*time.Second, "sshd's messages in "+localcluster.AuthLog, func() error {
		data, err := os.ReadFile(localcluster.AuthLog)
		if err != nil {
			return err
		}
		log := string(data)
		for _, want := range []string{
			"Accepted publickey for alice from " + node.IP() + " port",
			fingerprint(t, grantedPub),
			"Failed publickey for alice from " + node.IP(),
			fingerprint(t, otherPub),
		} {
			if !strings.Contains(log, want) {
				return errors.New("no " + want)
			}
		}
		return nil
	})
}

// writeAuthorizedKeys writes an account's authorized_keys as sshd's
// StrictModes wants it: .ssh 0700 and the file 0600, owned by the account.
func writeAuthorizedKeys(t *testing.T, a localcluster.Account, content string) {
	t.Helper()
	dir := filepath.Join("/home", a.Name, ".ssh")
	file := filepath.Join(dir, "authorized_keys")
	for _, err := range []error{
		os.MkdirAll(dir, 0o700), os.Chown(dir, a.UID, a.UID),
		os.WriteFile(file, []byte(content), 0o600), os.Chown(file, a.UID, a.UID),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func fingerprint(t *testing.T, authorizedLine string) string {
	t.Helper()
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(authorizedLine))
	if err != nil {
		t.Fatal(err)
	}
	return ssh.FingerprintSHA256(key)
}

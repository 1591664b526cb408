package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Account is a local account of a simulated node.
type Account struct {
	Name string
	ID   int // uid and gid
}

// Host is a temp directory standing for one node's file system, as the agent
// sees it through --host-root: an etc/passwd and the accounts' homes.
type Host struct {
	Root string
}

// NewHost makes a host root with the given accounts (plus root) and their
// homes, owned by each account. Run as root, as CI does, so ownership is real.
func NewHost(t testing.TB, accounts ...Account) *Host {
	t.Helper()
	root := t.TempDir()
	var passwd strings.Builder
	passwd.WriteString("root:x:0:0:root:/root:/bin/bash\n")
	for _, a := range accounts {
		fmt.Fprintf(&passwd, "%s:x:%d:%d::/home/%s:/bin/bash\n", a.Name, a.ID, a.ID, a.Name)
	}
	check(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	check(t, os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte(passwd.String()), 0o644))
	for _, a := range accounts {
		home := filepath.Join(root, "home", a.Name)
		check(t, os.MkdirAll(home, 0o755))
		check(t, os.Chown(home, a.ID, a.ID))
	}
	return &Host{Root: root}
}

// KeysFile is the host path of an account's authorized_keys.
func (h *Host) KeysFile(user string) string {
	return filepath.Join(h.Root, "home", user, ".ssh", "authorized_keys")
}

// WriteKeys writes an account's authorized_keys as the user would, owned by id.
func (h *Host) WriteKeys(t testing.TB, user string, id int, content string) {
	t.Helper()
	dir := filepath.Dir(h.KeysFile(user))
	check(t, os.MkdirAll(dir, 0o700))
	check(t, os.Chown(dir, id, id))
	check(t, os.WriteFile(h.KeysFile(user), []byte(content), 0o600))
	check(t, os.Chown(h.KeysFile(user), id, id))
}

// Read returns an account's authorized_keys, or "" when it does not exist.
func (h *Host) Read(user string) string {
	data, err := os.ReadFile(h.KeysFile(user))
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		return "read error: " + err.Error()
	}
	return string(data)
}

// ManagedKeys returns the key blobs inside the operator's managed block of
// an account's file, in order.
func (h *Host) ManagedKeys(user string) []string {
	var blobs []string
	inBlock := false
	for _, line := range strings.Split(h.Read(user), "\n") {
		switch {
		case strings.HasPrefix(line, "# BEGIN nodeaccess-operator"):
			inBlock = true
		case strings.HasPrefix(line, "# END nodeaccess-operator"):
			inBlock = false
		case inBlock && line != "" && !strings.HasPrefix(line, "#"):
			fields := strings.Fields(line)
			for i, f := range fields {
				if (strings.HasPrefix(f, "ssh-") || strings.HasPrefix(f, "ecdsa-") || strings.HasPrefix(f, "sk-")) && i+1 < len(fields) {
					blobs = append(blobs, fields[i+1])
					break
				}
			}
		}
	}
	return blobs
}

func check(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

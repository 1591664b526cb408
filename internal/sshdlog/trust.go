package sshdlog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Procfs reads processes from a /proc mount. Only a /proc of the host's PID
// namespace (the agent pod's hostPID) shows the node's sshd.
type Procfs struct {
	// Root is the /proc mount, "/proc" in the agent's container.
	Root string
}

// SessionOf checks that pid is, now, the privileged monitor of an sshd
// session of user: its real and effective uid are 0, its command is sshd
// (or sshd-session, OpenSSH 9.8 on), and its title, which sshd sets for
// each session, is "sshd: USER [priv]". A non-root process cannot be that,
// so a line a local user forged with logger(1) naming any other PID, the
// kubelet's say, is not trusted, and nothing is ever signalled on its word.
// It returns why not when it is not.
func (p Procfs) SessionOf(pid int, user string) error {
	if pid <= 1 {
		return fmt.Errorf("pid %d is not a session", pid)
	}
	dir := filepath.Join(p.Root, strconv.Itoa(pid))
	comm, err := os.ReadFile(filepath.Join(dir, "comm"))
	if err != nil {
		return fmt.Errorf("process %d: %w", pid, err)
	}
	if name := strings.TrimSpace(string(comm)); name != "sshd" && name != "sshd-session" {
		return fmt.Errorf("process %d is %q, not sshd", pid, name)
	}
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return fmt.Errorf("process %d: %w", pid, err)
	}
	if uids, ok := statusField(status, "Uid:"); !ok || len(uids) < 2 || uids[0] != "0" || uids[1] != "0" {
		return fmt.Errorf("process %d does not run as root (uids %v): not an sshd monitor", pid, uids)
	}
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		return fmt.Errorf("process %d: %w", pid, err)
	}
	title := strings.TrimSpace(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
	if title != "sshd: "+user+" [priv]" && title != "sshd-session: "+user+" [priv]" {
		return fmt.Errorf("process %d is %q, not the session monitor of %s", pid, title, user)
	}
	return nil
}

// statusField returns the fields after name in a /proc/PID/status.
func statusField(status []byte, name string) ([]string, bool) {
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok {
			return strings.Fields(rest), true
		}
	}
	return nil, false
}

// ErrNoHostPID is returned when the /proc the agent sees is not the host's:
// no line can be verified there.
var ErrNoHostPID = errors.New("the agent does not share the host's PID namespace; syslog lines cannot be verified")

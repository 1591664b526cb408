package sshdlog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
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

// Authenticated checks that the session monitor pid of user has a child
// that sshd starts only once the client has authenticated: the session's
// unprivileged process, titled "sshd: USER", "sshd: USER@TTY" or
// "sshd-session: USER [postauth]" and the like. sshd titles the monitor
// "sshd: USER [priv]" as soon as the client names the user, before any key
// is checked (its pre-authentication child is "sshd: USER [net]"), so a
// connection left waiting at authentication has a monitor of that shape
// too: without this check a line forged with logger(1) naming such a
// monitor would pass as the login of a key that never authenticated.
func (p Procfs) Authenticated(pid int, user string) error {
	entries, err := os.ReadDir(p.Root)
	if err != nil {
		return fmt.Errorf("reading %s: %w", p.Root, err)
	}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		if parent, ok := p.parentOf(child); !ok || parent != pid {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join(p.Root, e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if postAuthTitle(strings.TrimSpace(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))), user) {
			return nil
		}
	}
	return fmt.Errorf("process %d has no authenticated session process for %s (a connection still authenticating, or not sshd's)", pid, user)
}

// postAuthTitle tells whether title is one sshd gives the session process
// of user after authentication.
func postAuthTitle(title, user string) bool {
	for _, prog := range []string{"sshd: ", "sshd-session: "} {
		rest, ok := strings.CutPrefix(title, prog+user)
		if !ok {
			continue
		}
		if rest == "" || rest == " [postauth]" || strings.HasPrefix(rest, "@") {
			return true
		}
	}
	return false
}

// parentOf reads a process's parent PID from /proc/PID/stat.
func (p Procfs) parentOf(pid int) (int, bool) {
	stat, err := os.ReadFile(filepath.Join(p.Root, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	// "PID (comm) STATE PPID ...": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
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

// ticksPerSecond is the unit of a process's start time in /proc/PID/stat
// (USER_HZ, 100 on every Linux architecture Kubernetes runs on).
const ticksPerSecond = 100

// Session is one sshd session monitor, as verified: its PID, the user it
// serves, and when it started, which tells it apart from a later process
// given the same PID.
type Session struct {
	PID  int
	User string
	// Start is the process's start time, in clock ticks since boot.
	Start uint64
}

// Session verifies that pid is a session monitor of user now (SessionOf)
// and returns it with its start time.
func (p Procfs) Session(pid int, user string) (Session, error) {
	start, err := p.startTicks(pid)
	if err != nil {
		return Session{}, err
	}
	if err := p.SessionOf(pid, user); err != nil {
		return Session{}, err
	}
	// Read again: the process checked is the one whose start was read.
	if again, err := p.startTicks(pid); err != nil || again != start {
		return Session{}, fmt.Errorf("process %d changed while it was checked", pid)
	}
	return Session{PID: pid, User: user, Start: start}, nil
}

// Check tells whether s is still running as the same process and the same
// session: it returns why not when it is not.
func (p Procfs) Check(s Session) error {
	got, err := p.Session(s.PID, s.User)
	if err != nil {
		return err
	}
	if got.Start != s.Start {
		return fmt.Errorf("process %d is not the session that started at tick %d: it started at %d", s.PID, s.Start, got.Start)
	}
	return nil
}

// Terminate sends SIGTERM to the session's monitor, which ends the session
// (it passes the signal to the user's process and closes the connection),
// after checking that s is still that very process. The check and the
// signal go through one pidfd, so a PID reused in between is never
// signalled. Nothing is sent when the check fails.
func (p Procfs) Terminate(s Session) error {
	fd, err := unix.PidfdOpen(s.PID, 0)
	switch {
	case errors.Is(err, unix.ESRCH):
		return fmt.Errorf("process %d is gone", s.PID)
	case errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM):
		// Before Linux 5.3, or a seccomp profile without pidfds: the
		// check and kill(2), microseconds apart.
		fd = -1
	case err != nil:
		return fmt.Errorf("opening process %d: %w", s.PID, err)
	default:
		defer unix.Close(fd)
	}
	// The pidfd names the process that had the PID when it was opened; a
	// process with the remembered start time there now is that one.
	if err := p.Check(s); err != nil {
		return err
	}
	if fd >= 0 {
		err = unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0)
	} else {
		err = unix.Kill(s.PID, unix.SIGTERM)
	}
	if err != nil {
		return fmt.Errorf("signalling process %d: %w", s.PID, err)
	}
	return nil
}

// startTicks reads a process's start time, field 22 of /proc/PID/stat.
func (p Procfs) startTicks(pid int) (uint64, error) {
	if pid <= 1 {
		return 0, fmt.Errorf("pid %d is not a session", pid)
	}
	data, err := os.ReadFile(filepath.Join(p.Root, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, fmt.Errorf("process %d: %w", pid, err)
	}
	// The command, field 2, is in parentheses and may hold anything.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("process %d: unreadable stat", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("process %d: unreadable stat", pid)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("process %d: unreadable start time: %w", pid, err)
	}
	return start, nil
}

// BootTicks is the time since boot in the unit of a process's start time:
// a session whose monitor started before a given BootTicks cannot have
// logged its login after it.
func BootTicks() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, fmt.Errorf("reading the time since boot: %w", err)
	}
	return uint64(ts.Sec)*ticksPerSecond + uint64(ts.Nsec)/(1e9/ticksPerSecond), nil
}

package sshdlog

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeProc writes a /proc entry for pid into root: what a process of that
// command, uids and title shows, with the stat line given.
func fakeProc(t *testing.T, root string, pid int, comm, uids, title, stat string) {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"comm":    comm + "\n",
		"status":  "Name:\t" + comm + "\nUid:\t" + uids + "\nGid:\t0\t0\t0\t0\n",
		"cmdline": strings.ReplaceAll(title, " ", "\x00") + "\x00",
		"stat":    stat,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func statLine(pid int, comm string, start uint64) string {
	f := make([]string, 50)
	for i := range f {
		f[i] = "0"
	}
	f[0] = "S"
	f[19] = strconv.FormatUint(start, 10)
	return strconv.Itoa(pid) + " (" + comm + ") " + strings.Join(f, " ") + "\n"
}

// Only a root sshd (or sshd-session) process titled "sshd: USER [priv]" is
// a session of USER: a non-root process cannot take that shape.
func TestSessionOf(t *testing.T) {
	root := t.TempDir()
	fakeProc(t, root, 100, "sshd", "0\t0\t0\t0", "sshd: alice [priv]", statLine(100, "sshd", 5000))
	fakeProc(t, root, 101, "sshd-session", "0\t0\t0\t0", "sshd-session: alice [priv]", statLine(101, "sshd-session", 5000))
	fakeProc(t, root, 102, "sshd", "1001\t1001\t1001\t1001", "sshd: alice [priv]", statLine(102, "sshd", 5000))
	fakeProc(t, root, 103, "sshd", "0\t0\t0\t0", "sshd: alice@pts/0", statLine(103, "sshd", 5000))
	fakeProc(t, root, 104, "kubelet", "0\t0\t0\t0", "sshd: alice [priv]", statLine(104, "kubelet", 5000))
	fakeProc(t, root, 105, "sshd", "0\t1001\t0\t0", "sshd: alice [priv]", statLine(105, "sshd", 5000))
	fakeProc(t, root, 106, "sshd", "0\t0\t0\t0", "sshd: bob [priv]", statLine(106, "sshd", 5000))
	p := Procfs{Root: root}
	cases := []struct {
		pid   int
		user  string
		trust bool
	}{
		{100, "alice", true},
		{101, "alice", true},
		{102, "alice", false}, // a user's process
		{103, "alice", false}, // the unprivileged child, not the monitor
		{104, "alice", false}, // not sshd
		{105, "alice", false}, // effective uid not root
		{106, "alice", false}, // another user's session
		{107, "alice", false}, // no such process
		{1, "alice", false},
		{0, "alice", false},
		{-3, "alice", false},
	}
	for _, tc := range cases {
		err := p.SessionOf(tc.pid, tc.user)
		if (err == nil) != tc.trust {
			t.Errorf("pid %d user %s: trusted %v (%v), want %v", tc.pid, tc.user, err == nil, err, tc.trust)
		}
	}
	s, err := p.Session(100, "alice")
	if err != nil || s.Start != 5000 {
		t.Fatalf("Session: %+v %v", s, err)
	}
	if err := p.Check(Session{PID: 100, User: "alice", Start: 4999}); err == nil {
		t.Error("a process with another start time passed as the remembered session")
	}
}

// Terminate signals the verified process itself, and nothing when the
// process at that PID is not the remembered session. A real process stands
// for the monitor, described by a fake /proc entry.
func TestTerminateSignalsOnlyTheVerifiedSession(t *testing.T) {
	start := func() (*exec.Cmd, chan error) {
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		return cmd, done
	}
	realStart := func(pid int) uint64 {
		s, err := Procfs{Root: "/proc"}.startTicks(pid)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	cmd, done := start()
	pid := cmd.Process.Pid
	root := t.TempDir()
	fakeProc(t, root, pid, "sshd", "0\t0\t0\t0", "sshd: alice [priv]", statLine(pid, "sshd", realStart(pid)))
	p := Procfs{Root: root}
	s, err := p.Session(pid, "alice")
	if err != nil {
		t.Fatal(err)
	}
	// Remembered with another start time: a later process under the same PID.
	if err := p.Terminate(Session{PID: pid, User: "alice", Start: s.Start + 1}); err == nil {
		t.Fatal("Terminate accepted a session with another start time")
	}
	// The real /proc says it is sleep, not sshd: a forged line naming it kills nothing.
	if err := (Procfs{Root: "/proc"}).Terminate(Session{PID: pid, User: "alice", Start: s.Start}); err == nil {
		t.Fatal("Terminate accepted a process that is not sshd")
	}
	select {
	case err := <-done:
		t.Fatalf("the process ended after refused checks: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := p.Terminate(s); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
			t.Fatalf("the process ended with %v, not SIGTERM", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the session was not signalled")
	}
	if err := p.Terminate(s); err == nil {
		t.Fatal("Terminate of a process that is gone succeeded")
	}
}

func TestBootTicksFollowsProcessStartTimes(t *testing.T) {
	before, err := BootTicks()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	started, err := Procfs{Root: "/proc"}.startTicks(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := BootTicks()
	if started+1 < before || started > after+1 {
		t.Fatalf("a process started at tick %d, between %d and %d", started, before, after)
	}
}

// statWithParent is a /proc/PID/stat line of a process whose parent is ppid.
func statWithParent(pid int, comm string, ppid int) string {
	f := make([]string, 50)
	for i := range f {
		f[i] = "0"
	}
	f[0], f[1] = "S", strconv.Itoa(ppid)
	return strconv.Itoa(pid) + " (" + comm + ") " + strings.Join(f, " ") + "\n"
}

// A monitor counts as an authenticated session only with the session
// process sshd starts after authentication: sshd titles the monitor
// "sshd: USER [priv]" as soon as the client names the user, so a
// connection left waiting at authentication looks the same, with only its
// pre-authentication child "sshd: USER [net]".
func TestAuthenticated(t *testing.T) {
	root := t.TempDir()
	// 200: a connection still authenticating as alice.
	fakeProc(t, root, 200, "sshd", "0\t0\t0\t0", "sshd: alice [priv]", statWithParent(200, "sshd", 1))
	fakeProc(t, root, 201, "sshd", "105\t105\t105\t105", "sshd: alice [net]", statWithParent(201, "sshd", 200))
	// 300: alice's session, with a terminal; 400: without (ssh host cmd);
	// 500: OpenSSH 9.8's sshd-session after authentication.
	fakeProc(t, root, 300, "sshd", "0\t0\t0\t0", "sshd: alice [priv]", statWithParent(300, "sshd", 1))
	fakeProc(t, root, 301, "sshd", "1001\t1001\t1001\t1001", "sshd: alice@pts/0", statWithParent(301, "sshd", 300))
	fakeProc(t, root, 400, "sshd", "0\t0\t0\t0", "sshd: alice [priv]", statWithParent(400, "sshd", 1))
	fakeProc(t, root, 401, "sshd", "1001\t1001\t1001\t1001", "sshd: alice@notty", statWithParent(401, "sshd", 400))
	fakeProc(t, root, 500, "sshd-session", "0\t0\t0\t0", "sshd-session: alice [priv]", statWithParent(500, "sshd-session", 1))
	fakeProc(t, root, 501, "sshd-session", "1001\t1001\t1001\t1001", "sshd-session: alice [postauth]", statWithParent(501, "sshd-session", 500))
	// 600: a process of alice's titled like a session, but not a child of
	// the monitor it claims; 700: bob's session process under alice's monitor name.
	fakeProc(t, root, 600, "sshd", "0\t0\t0\t0", "sshd: alice [priv]", statWithParent(600, "sshd", 1))
	fakeProc(t, root, 650, "sleep", "1001\t1001\t1001\t1001", "sshd: alice@pts/1", statWithParent(650, "sleep", 1))
	fakeProc(t, root, 700, "sshd", "0\t0\t0\t0", "sshd: alice [priv]", statWithParent(700, "sshd", 1))
	fakeProc(t, root, 701, "sshd", "1002\t1002\t1002\t1002", "sshd: bob@pts/2", statWithParent(701, "sshd", 700))
	p := Procfs{Root: root}
	for _, tc := range []struct {
		pid  int
		want bool
	}{{200, false}, {300, true}, {400, true}, {500, true}, {600, false}, {700, false}, {999, false}} {
		if err := p.Authenticated(tc.pid, "alice"); (err == nil) != tc.want {
			t.Errorf("pid %d: authenticated %v (%v), want %v", tc.pid, err == nil, err, tc.want)
		}
	}
}

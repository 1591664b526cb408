package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/authorizedkeys"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
)

// testKey is a public key as a grant renders it, and its fingerprint.
type testKey struct {
	key authorizedkeys.Key
	fp  string
}

func newTestKey(t *testing.T, comment string) testKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	k := authorizedkeys.Key{Type: sp.Type(), Base64: base64.StdEncoding.EncodeToString(sp.Marshal()), Comment: comment}
	return testKey{key: k, fp: ssh.FingerprintSHA256(sp)}
}

// trackerHost is a host root with an auth.log and a fake /proc.
type trackerHost struct {
	root, proc, log string
	tracker         *loginTracker
}

func newTrackerHost(t *testing.T, endSessions bool) *trackerHost {
	t.Helper()
	h := &trackerHost{root: t.TempDir(), proc: t.TempDir()}
	h.log = filepath.Join(h.root, "var", "log", "auth.log")
	if err := os.MkdirAll(filepath.Dir(h.log), 0o755); err != nil {
		t.Fatal(err)
	}
	tr, err := newLoginTracker(h.root, []string{"/var/log/auth.log", "/var/log/secure"}, h.proc, endSessions)
	if err != nil {
		t.Fatal(err)
	}
	h.tracker = tr
	t.Cleanup(func() {
		for _, f := range tr.followers {
			f.Close()
		}
	})
	return h
}

// process writes a /proc entry: a root sshd monitor of user when monitor
// is set, else a user's process, with the given start tick.
func (h *trackerHost) process(t *testing.T, pid int, user string, monitor bool, start uint64) {
	t.Helper()
	comm, uids, title := "sshd", "0\t0\t0\t0", "sshd: "+user+" [priv]"
	if !monitor {
		comm, uids, title = "logger", "1002\t1002\t1002\t1002", "logger -t sshd[1]"
	}
	h.entry(t, pid, 1, comm, uids, title, start)
	if monitor {
		// The session's process, which sshd starts once the client authenticated.
		h.entry(t, pid+1000000, pid, "sshd", "1001\t1001\t1001\t1001", "sshd: "+user+"@pts/0", start)
	}
}

// waiting writes a root sshd monitor of user whose client has not
// authenticated: sshd titles it as a session's already, and its only child
// is the pre-authentication process.
func (h *trackerHost) waiting(t *testing.T, pid int, user string, start uint64) {
	t.Helper()
	h.entry(t, pid, 1, "sshd", "0\t0\t0\t0", "sshd: "+user+" [priv]", start)
	h.entry(t, pid+1000000, pid, "sshd", "105\t105\t105\t105", "sshd: "+user+" [net]", start)
}

// entry writes one /proc entry.
func (h *trackerHost) entry(t *testing.T, pid, ppid int, comm, uids, title string, start uint64) {
	t.Helper()
	dir := filepath.Join(h.proc, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	stat := fmt.Sprintf("%d (%s) S %d%s %d 0 0\n", pid, comm, ppid, strings.Repeat(" 0", 17), start)
	for name, content := range map[string]string{
		"comm": comm + "\n", "status": "Uid:\t" + uids + "\n", "cmdline": strings.ReplaceAll(title, " ", "\x00") + "\x00", "stat": stat,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// line appends a raw sshd line for pid to the log.
func (h *trackerHost) line(t *testing.T, pid int, msg string) {
	t.Helper()
	f, err := os.OpenFile(h.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%s node-1 sshd[%d]: %s\n", time.Now().Format(time.Stamp), pid, msg); err != nil {
		t.Fatal(err)
	}
}

func (h *trackerHost) accepted(t *testing.T, pid int, user string, k testKey, port int) {
	t.Helper()
	f, err := os.OpenFile(h.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line := fmt.Sprintf("%s node-1 sshd[%d]: Accepted publickey for %s from 198.18.0.7 port %d ssh2: ED25519 %s\n",
		time.Now().Format(time.Stamp), pid, user, port, k.fp)
	if _, err := f.WriteString(line); err != nil {
		t.Fatal(err)
	}
}

func plan(sections map[string][]authorizedkeys.Section) desiredstate.Plan {
	return desiredstate.Plan{Accounts: sections}
}

// Logins are attributed to the grant that gives the key to that account,
// with its comment; trusted only when the PID is a live sshd monitor of
// that account that started after reading began, and named by one line;
// keys no grant gives are only counted.
func TestLoginAttributionAndTrust(t *testing.T) {
	ctx := context.Background()
	h := newTrackerHost(t, false)
	tr := h.tracker
	if _, changed := tr.readOnce(ctx); changed {
		t.Fatal("read before the first pass gave the keys")
	}
	bob, carol, own := newTestKey(t, "bob"), newTestKey(t, "carol (contractor)"), newTestKey(t, "alice's own")
	tr.update(plan(map[string][]authorizedkeys.Section{
		"alice":  {{Owner: "team-a", UID: "uid-a", Keys: []authorizedkeys.Key{bob.key}}},
		"deploy": {{Owner: "team-b", UID: "uid-b", Keys: []authorizedkeys.Key{carol.key}}, {Owner: "team-c", UID: "uid-c", Keys: []authorizedkeys.Key{carol.key}}},
	}))
	if _, changed := tr.readOnce(ctx); !changed {
		t.Fatal("the first read changed nothing")
	}
	if _, st := tr.status(); st.Reason != nav1.SSHDLogNotFoundReason {
		t.Fatalf("without a log: %+v", st)
	}
	if err := os.WriteFile(h.log, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	tr.readOnce(ctx)
	later := tr.since + 50
	h.process(t, 200, "alice", true, later)
	h.process(t, 201, "deploy", true, later)
	h.process(t, 202, "alice", false, later)       // the forger's own process
	h.process(t, 203, "alice", true, tr.since-500) // a session older than the agent's reading
	h.process(t, 204, "alice", true, later)
	h.process(t, 205, "alice", true, later)
	h.waiting(t, 206, "alice", later)
	h.process(t, 207, "alice", true, later)

	h.accepted(t, 200, "alice", bob, 1000)
	h.accepted(t, 201, "deploy", carol, 1001)
	h.accepted(t, 202, "alice", bob, 1002) // forged, naming the forger's process
	h.accepted(t, 201, "alice", bob, 1003) // forged, naming deploy's session as alice's
	h.accepted(t, 999, "alice", bob, 1004) // forged, naming no process (or one already gone)
	h.accepted(t, 203, "alice", bob, 1005) // the session predates reading
	h.accepted(t, 204, "alice", own, 1006) // the account's own key
	h.accepted(t, 205, "alice", bob, 1007) // sshd's line...
	h.accepted(t, 205, "alice", bob, 1008) // ...and a forged second one for the same session
	h.accepted(t, 206, "alice", bob, 1010) // forged, naming a connection still authenticating
	h.line(t, 207, "Accepted password for alice from 198.18.0.7 port 1011 ssh2")
	h.accepted(t, 207, "alice", bob, 1012)    // forged, claiming a password session for a key
	h.accepted(t, 200, "deploy", carol, 1009) // forged: alice's session claimed for deploy
	if _, changed := tr.readOnce(ctx); !changed {
		t.Fatal("reading logins changed nothing")
	}
	logins, st := tr.status()
	if st.Reason != "" || len(st.Files) != 1 || st.Files[0] != "/var/log/auth.log" || st.UnmanagedLogins != 1 {
		t.Fatalf("tracking %+v", st)
	}
	type want struct {
		na, comment string
		trusted     bool
		reason      string
	}
	byPort := map[int32][]want{
		1000: {{"team-a", "bob", true, ""}},
		1001: {{"team-b", "carol (contractor)", true, ""}, {"team-c", "carol (contractor)", true, ""}},
		1002: {{"team-a", "bob", false, nav1.SenderUnverifiedReason}},
		1003: {{"team-a", "bob", false, nav1.SenderUnverifiedReason}},
		1004: {{"team-a", "bob", false, nav1.SenderUnverifiedReason}},
		1005: {{"team-a", "bob", false, nav1.SessionPredatesReadingReason}},
		1007: {{"team-a", "bob", false, nav1.DisputedSessionReason}},
		1008: {{"team-a", "bob", false, nav1.DisputedSessionReason}},
		1010: {{"team-a", "bob", false, nav1.SenderUnverifiedReason}},
		1012: {{"team-a", "bob", false, nav1.DisputedSessionReason}},
		1009: {{"team-b", "carol (contractor)", false, nav1.SenderUnverifiedReason}, {"team-c", "carol (contractor)", false, nav1.SenderUnverifiedReason}},
	}
	got := map[int32][]want{}
	for _, l := range logins {
		got[l.Port] = append(got[l.Port], want{l.NodeAccess, l.Comment, l.Trusted, l.Reason})
		if l.Fingerprint == own.fp {
			t.Errorf("the account's own key was stored: %+v", l)
		}
	}
	for port, w := range byPort {
		g := got[port]
		if len(g) != len(w) {
			t.Errorf("port %d: got %+v, want %+v", port, g, w)
			continue
		}
		for i := range w {
			// Newest first: grants of one login in reverse.
			if g[len(g)-1-i] != w[i] && g[i] != w[i] {
				t.Errorf("port %d: got %+v, want %+v", port, g, w)
			}
		}
	}
	if len(logins) != 13 || logins[0].Port != 1009 {
		t.Errorf("%d logins, newest %d", len(logins), logins[0].Port)
	}
	if logins[0].Time.IsZero() || logins[0].From != "198.18.0.7" || logins[0].User != "deploy" {
		t.Errorf("newest login %+v", logins[0])
	}
}

// The most recent logins are kept, and a new agent process starts from
// those its predecessor reported.
func TestLoginsAreBoundedAndSeeded(t *testing.T) {
	ctx := context.Background()
	h := newTrackerHost(t, false)
	bob := newTestKey(t, "bob")
	h.tracker.update(plan(map[string][]authorizedkeys.Section{"alice": {{Owner: "team-a", UID: "uid-a", Keys: []authorizedkeys.Key{bob.key}}}}))
	if err := os.WriteFile(h.log, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	h.tracker.readOnce(ctx)
	for i := range 30 {
		h.accepted(t, 300, "alice", bob, 2000+i)
	}
	h.tracker.readOnce(ctx)
	logins, st := h.tracker.status()
	if len(logins) != nav1.MaxReportedLogins || logins[0].Port != 2029 || logins[len(logins)-1].Port != 2010 {
		t.Fatalf("%d logins from %d to %d", len(logins), logins[0].Port, logins[len(logins)-1].Port)
	}
	st.UnmanagedLogins = 7
	next := newTrackerHost(t, false)
	next.tracker.seed(&nav1.NodeAccessReportStatus{Logins: logins, LoginTracking: st})
	again, st2 := next.tracker.status()
	if len(again) != len(logins) || again[0] != logins[0] || st2.UnmanagedLogins != 7 {
		t.Fatalf("seeded %d logins, unmanaged %d", len(again), st2.UnmanagedLogins)
	}
}

// With EndSessions, a trusted session whose key the account no longer has
// is signalled once, and nothing else is: not a session still granted, not
// an untrusted or disputed one. Real processes stand for the monitors,
// described by the fake /proc.
func TestEndingRevokedSessions(t *testing.T) {
	ctx := context.Background()
	h := newTrackerHost(t, true)
	tr := h.tracker
	bob, dave := newTestKey(t, "bob"), newTestKey(t, "dave")
	granted := map[string][]authorizedkeys.Section{
		"alice": {{Owner: "team-a", UID: "uid-a", Keys: []authorizedkeys.Key{bob.key}}},
		"dave":  {{Owner: "team-d", UID: "uid-d", Keys: []authorizedkeys.Key{dave.key}}},
	}
	tr.update(plan(granted))
	if err := os.WriteFile(h.log, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	tr.readOnce(ctx)

	type proc struct {
		cmd  *exec.Cmd
		done chan error
	}
	start := func(user string) proc {
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		p := proc{cmd, make(chan error, 1)}
		go func() { p.done <- cmd.Wait() }()
		ticks, err := readStart(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		h.process(t, cmd.Process.Pid, user, true, ticks)
		return p
	}
	alice, disputed, other := start("alice"), start("alice"), start("dave")
	h.accepted(t, alice.cmd.Process.Pid, "alice", bob, 3000)
	h.accepted(t, disputed.cmd.Process.Pid, "alice", bob, 3001)
	h.accepted(t, disputed.cmd.Process.Pid, "alice", bob, 3002)
	h.accepted(t, other.cmd.Process.Pid, "dave", dave, 3003)
	tr.readOnce(ctx)

	tr.endRevoked(ctx) // everything still granted
	delete(granted, "alice")
	tr.update(plan(granted))
	tr.endRevoked(ctx)
	// The disputed session ends too: a second line, forged by the
	// session's own user, must not keep a revoked key's session open.
	for _, p := range []proc{alice, disputed} {
		select {
		case err := <-p.done:
			if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
				t.Fatalf("the revoked session ended with %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the revoked session was not ended")
		}
		// The process is gone from /proc, as the kernel does.
		if err := os.RemoveAll(filepath.Join(h.proc, strconv.Itoa(p.cmd.Process.Pid))); err != nil {
			t.Fatal(err)
		}
	}
	logins, _ := tr.status()
	for _, l := range logins {
		if (l.Port != 3003) != (l.EndedAt != nil) || l.EndError != "" {
			t.Errorf("login %d: endedAt %v, error %q", l.Port, l.EndedAt, l.EndError)
		}
	}
	tr.endRevoked(ctx) // the ended session is forgotten; nothing else is signalled
	if err := other.cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the other account's session is gone: %v", err)
	}
	if len(tr.sessions) != 1 {
		t.Errorf("%d sessions remembered, want the other account's only", len(tr.sessions))
	}
}

func readStart(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	return strconv.ParseUint(f[19], 10, 64)
}

package realnode

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/agentdaemonset"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/sshdlog"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// endWithin bounds the time from deleting a NodeAccess to the end of the
// open session that logged in with its key.
const endWithin = 5 * time.Second

// Login tracking and ending sessions on revoke, on the real node, set as
// a user sets them: NODEACCESS_TRACK_LOGINS and
// NODEACCESS_END_SESSIONS_ON_REVOKE in the Subscription's
// spec.config.env roll the agent DaemonSet once, its pod then runs as
// rendered with the node's /var/log read-only and the node's PID
// namespace (hostPID), which is the namespace of the node's kubelet,
// containerd and sshd. The node's sshd logs as a Debian node's with
// systemd does: to journald's /dev/log, which keeps the node's journal in
// /var/log/journal and forwards to rsyslogd, which writes the node's own
// /var/log/auth.log.
//
//   - alice and bob log in with keys of two NodeAccess objects: each
//     login is attributed to its NodeAccess, account and key comment,
//     trusted (the agent saw, through the shared PID namespace, the root
//     sshd monitor of that account the line names), in the node's report
//     and in each NodeAccess's lastLogins;
//   - lines bob forges with logger(1) naming a managed key's fingerprint
//     (naming his own process, alice's session as his, a second line for
//     alice's session) are never trusted, and the second disputes alice's
//     real login; in auth.log they read as sshd's own lines, only the
//     journal records their sender (_PID, _UID);
//   - logrotate's rotation (rename, a login into the renamed file, HUP,
//     a login into the new file), with the agent frozen throughout, loses
//     no login;
//   - deleting alice's NodeAccess ends her open `ssh -tt node sleep 600`
//     within endWithin, while bob's stays open and the kubelet, which a
//     forged line names as alice's session, lives on.
//
// At the end the Subscription gets the install's settings back and the
// agents roll back.
func TestLoginsAreTrackedAndRevokedSessionsEndOnTheRealNode(t *testing.T) {
	ctx := context.Background()
	opts := agentOptions(nil, false)
	opts.TrackLogins, opts.EndSessions = true, true
	want := agentdaemonset.DaemonSet(opts).Spec.Template.Spec
	start := time.Now()
	setSubscriptionEnv(t, append(slices.Clone(installEnv),
		corev1.EnvVar{Name: "NODEACCESS_TRACK_LOGINS", Value: "true"},
		corev1.EnvVar{Name: "NODEACCESS_END_SESSIONS_ON_REVOKE", Value: "true"}))
	t.Cleanup(func() {
		setSubscriptionEnv(t, installEnv)
		testenv.Eventually(t, timeout, "the agents back to the defaults", func() error { return agentRolledOut(agentDaemonSetFor(nil, false)) })
	})
	testenv.Eventually(t, timeout, "the agents rolled with the node's /var/log and hostPID", func() error {
		return agentRolledOut(func(ds *appsv1.DaemonSet) error {
			got := ds.Spec.Template.Spec
			if !slices.Equal(got.Containers[0].Args, want.Containers[0].Args) || len(got.Volumes) != len(want.Volumes) || got.HostPID != want.HostPID {
				return fmt.Errorf("agent DaemonSet args %v, %d volumes, hostPID %v; want %v, %d, %v",
					got.Containers[0].Args, len(got.Volumes), got.HostPID, want.Containers[0].Args, len(want.Volumes), want.HostPID)
			}
			return nil
		})
	})
	testenv.Eventually(t, timeout, "the agent follows the node's auth.log and ends sessions", func() error {
		rep, err := report(ctx)
		if err != nil {
			return err
		}
		if lt := rep.Status.LoginTracking; lt == nil || !slices.Equal(lt.Files, []string{localcluster.AuthLog}) || !lt.EndSessionsOnRevoke || lt.Reason != "" {
			return fmt.Errorf("loginTracking %+v", lt)
		}
		return nil
	})
	t.Logf("Subscription changed: agents rolled and following auth.log in %s", time.Since(start).Round(100*time.Millisecond))
	compareAgentPod(t, agentPod(t), want)
	// The agent sees the node's processes: its PID namespace is sshd's.
	agentPID := processPID(t, "/agent")
	sshdPID := 0
	for pid, name := range sshd.Processes() {
		if name == "sshd" {
			sshdPID = pid
		}
	}
	if a, s := nsOf(t, agentPID, "pid"), nsOf(t, sshdPID, "pid"); a != s {
		t.Fatalf("the agent's PID namespace %s, sshd's %s", a, s)
	}

	aliceKey, alicePub := newKey(t, "alice@laptop")
	bobKey, bobPub := newKey(t, "bob@laptop")
	aliceFP, bobFP := fingerprint(t, alicePub), fingerprint(t, bobPub)
	create(t, grant("rn-ann", nav1.UserAccess{Name: alice.Name, Keys: []nav1.AuthorizedKey{{Key: alicePub, Comment: "ann"}}}))
	create(t, grant("rn-ben", nav1.UserAccess{Name: bob.Name, Keys: []nav1.AuthorizedKey{{Key: bobPub, Comment: "ben"}}}))
	testenv.Eventually(t, timeout, "rn-ann in sync", inSync("rn-ann"))
	testenv.Eventually(t, timeout, "rn-ben in sync", inSync("rn-ben"))
	t.Cleanup(func() { _ = os.Remove(localcluster.AuthLog + ".1") })

	t.Run("attribution and forgeries", func(t *testing.T) {
		a := openSession(t, alice.Name, aliceKey)
		b := openSession(t, bob.Name, bobKey)
		defer a.close()
		defer b.close()
		first := waitNodeLogin(t, "alice's login attributed to rn-ann, trusted", a.is(alice.Name, "rn-ann", "ann", aliceFP, true))
		waitNodeLogin(t, "bob's login attributed to rn-ben, trusted", b.is(bob.Name, "rn-ben", "ben", bobFP, true))
		for _, g := range []struct{ na, user, comment, fp string }{{"rn-ann", alice.Name, "ann", aliceFP}, {"rn-ben", bob.Name, "ben", bobFP}} {
			testenv.Eventually(t, timeout, g.na+"'s status lists the login", func() error {
				na := &nav1.NodeAccess{}
				if err := k8s.Get(ctx, client.ObjectKey{Name: g.na}, na); err != nil {
					return err
				}
				for _, l := range na.Status.LastLogins {
					if l.User == g.user && l.Comment == g.comment && l.Fingerprint == g.fp && l.Node == nodeName && l.From == node.IP() && l.Trusted {
						return nil
					}
				}
				return fmt.Errorf("lastLogins %+v", na.Status.LastLogins)
			})
		}

		// bob forges sshd's lines with logger, as any local user can.
		sleeper := exec.Command("setpriv", "--reuid="+strconv.Itoa(bob.UID), "--regid="+strconv.Itoa(bob.UID), "--clear-groups", "sleep", "600")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() }()
		forge(t, sleeper.Process.Pid, alice.Name, "10.9.9.1", aliceFP) // bob's own process
		forge(t, a.pid, bob.Name, "10.9.9.2", bobFP)                   // alice's session claimed as bob's
		forge(t, a.pid, alice.Name, "10.9.9.3", aliceFP)               // a second line for alice's real session
		for _, f := range []struct{ from, reason string }{
			{"10.9.9.1", nav1.SenderUnverifiedReason}, {"10.9.9.2", nav1.SenderUnverifiedReason}, {"10.9.9.3", nav1.DisputedSessionReason},
		} {
			waitNodeLogin(t, "the forged login from "+f.from+" untrusted, "+f.reason, func(l nav1.NodeLogin) bool {
				return l.From == f.from && !l.Trusted && l.Reason == f.reason
			})
		}
		waitNodeLogin(t, "alice's disputed login untrusted", func(l nav1.NodeLogin) bool {
			return l.Time.Equal(&first.Time) && l.Port == first.Port && !l.Trusted && l.Reason == nav1.DisputedSessionReason
		})
		rep, err := report(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range rep.Status.Logins {
			if strings.HasPrefix(l.From, "10.9.9.") && l.Trusted {
				t.Errorf("a forged login is trusted: %+v", l)
			}
		}
		// In auth.log the forged line reads as sshd's own; only the
		// journal knows who sent each (its _PID and _UID, which never
		// reach the file).
		for _, l := range accepted(t) {
			if l.From == "10.9.9.1" && (l.Program != "sshd" || l.PID != sleeper.Process.Pid) {
				t.Errorf("the forged line in auth.log: %+v", l)
			}
		}
		testenv.Eventually(t, 10*time.Second, "the journal's senders of alice's login and of bob's forgery", func() error {
			entries, err := journal()
			if err != nil {
				return err
			}
			real := fmt.Sprintf("Accepted publickey for %s from %s port %d ", alice.Name, node.IP(), a.port)
			var found []string
			for _, e := range entries {
				switch {
				case strings.HasPrefix(e["MESSAGE"], real) && e["_PID"] == strconv.Itoa(a.pid) && e["SYSLOG_PID"] == e["_PID"] && e["_UID"] == "0" && e["_COMM"] == "sshd":
					found = append(found, "alice")
				case strings.Contains(e["MESSAGE"], " from 10.9.9.1 ") && e["SYSLOG_PID"] == strconv.Itoa(sleeper.Process.Pid) && e["_PID"] != e["SYSLOG_PID"] && e["_UID"] == strconv.Itoa(bob.UID):
					found = append(found, "forged")
				}
			}
			if slices.Sort(found); !slices.Equal(found, []string{"alice", "forged"}) {
				return fmt.Errorf("found %v in the journal's %d sshd entries", found, len(entries))
			}
			return nil
		})
	})

	t.Run("rotation", func(t *testing.T) {
		// logrotate's rotation with the agent frozen throughout: a login
		// before the rename, one after it (rsyslog writes on into the
		// renamed file until it is told to reopen), one into the new file.
		thaw := freeze(t, agentPID)
		defer thaw()
		before := openSession(t, alice.Name, aliceKey)
		defer before.close()
		if err := os.Rename(localcluster.AuthLog, localcluster.AuthLog+".1"); err != nil {
			t.Fatal(err)
		}
		between := openSession(t, bob.Name, bobKey)
		defer between.close()
		if err := sshd.ReopenLogs(); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, "rsyslogd closed the renamed file", func() error {
			for pid, name := range sshd.Processes() {
				if name == "rsyslogd" && holds(pid, localcluster.AuthLog+".1") {
					return fmt.Errorf("rsyslogd still holds %s.1", localcluster.AuthLog)
				}
			}
			return nil
		})
		after := openSession(t, alice.Name, aliceKey)
		defer after.close()
		for s, file := range map[*session]string{before: localcluster.AuthLog + ".1", between: localcluster.AuthLog + ".1", after: localcluster.AuthLog} {
			if !slices.ContainsFunc(acceptedIn(t, file), func(l sshdlog.Login) bool { return l.Port == s.port && l.PID == s.pid }) {
				t.Fatalf("%s's login from port %d is not in %s", s.user, s.port, file)
			}
		}
		thaw()
		waitNodeLogin(t, "the login before the rename reported, trusted", before.is(alice.Name, "rn-ann", "ann", aliceFP, true))
		waitNodeLogin(t, "the login into the renamed file reported, trusted", between.is(bob.Name, "rn-ben", "ben", bobFP, true))
		waitNodeLogin(t, "the login into the new file reported, trusted", after.is(alice.Name, "rn-ann", "ann", aliceFP, true))
	})

	t.Run("revoke ends the session", func(t *testing.T) {
		a := openSession(t, alice.Name, aliceKey)
		b := openSession(t, bob.Name, bobKey)
		defer a.close()
		defer b.close()
		waitNodeLogin(t, "alice's session trusted", a.is(alice.Name, "rn-ann", "ann", aliceFP, true))
		waitNodeLogin(t, "bob's session trusted", b.is(bob.Name, "rn-ben", "ben", bobFP, true))
		// A line claiming the kubelet is alice's session.
		kubelet := 0
		for pid, name := range node.Processes() {
			if name == "kubelet" {
				kubelet = pid
			}
		}
		kubeletStart := startTime(t, kubelet)
		forge(t, kubelet, alice.Name, "10.9.9.4", aliceFP)
		waitNodeLogin(t, "the forged line naming the kubelet read, untrusted", func(l nav1.NodeLogin) bool {
			return l.From == "10.9.9.4" && !l.Trusted && l.Reason == nav1.SenderUnverifiedReason
		})

		na := &nav1.NodeAccess{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: "rn-ann"}, na); err != nil {
			t.Fatal(err)
		}
		deleted := time.Now()
		if err := k8s.Delete(ctx, na); err != nil {
			t.Fatal(err)
		}
		select {
		case <-a.ended:
			t.Logf("alice's session ended %s after the delete", time.Since(deleted).Round(time.Millisecond))
		case <-time.After(endWithin):
			t.Fatalf("alice's session still open %s after the delete", endWithin)
		}
		waitNodeLogin(t, "the report says alice's session was ended", func(l nav1.NodeLogin) bool {
			return a.names(l) && l.User == alice.Name && l.Trusted && l.EndedAt != nil
		})
		remove(t, "rn-ann")
		if !b.running() {
			t.Fatalf("bob's session ended: %v: %s", b.err, b.out.String())
		}
		if err := syscall.Kill(kubelet, 0); err != nil || startTime(t, kubelet) != kubeletStart {
			t.Fatalf("the kubelet, named by a forged line, is gone (%v)", err)
		}
		rep, err := report(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range rep.Status.Logins {
			if l.EndedAt != nil && (l.User == bob.Name || l.From != node.IP()) {
				t.Errorf("ended a session it must not: %+v", l)
			}
		}
		if !b.running() {
			t.Fatalf("bob's session ended: %v", b.err)
		}
	})
}

// session is an open `ssh -tt node sleep 600` of one account, configured
// by what the plugin wrote, and the sshd session it logged in auth.log.
type session struct {
	user  string
	cmd   *exec.Cmd
	out   bytes.Buffer
	ended chan struct{}
	err   error
	// pid, port and at are what sshd's login line names: its session
	// monitor, the client's source port and the time.
	pid, port int
	at        time.Time
}

// names says whether the report's login is this session's: its port and
// time (to the second, as the report keeps it), since a port can be an
// earlier session's too.
func (s *session) names(l nav1.NodeLogin) bool {
	return l.Port == int32(s.port) && l.Time.Unix() == s.at.Unix()
}

// openSession starts the session and waits until sshd logged its login.
func openSession(t *testing.T, user, identity string) *session {
	t.Helper()
	// A login is new when its sshd process and client port were in no
	// line before: the client's port alone can be one an earlier session
	// of the suite had (the kernel may reuse a local port), and each
	// connection has an sshd process of its own.
	type sessionID struct{ pid, port int }
	known, ports := map[sessionID]bool{}, map[int]bool{}
	for _, l := range accepted(t) {
		known[sessionID{l.PID, l.Port}], ports[l.Port] = true, true
	}
	s := &session{user: user, ended: make(chan struct{})}
	s.cmd = exec.Command("ssh", "-F", sshConfig, "-tt", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5",
		"-o", "LogLevel=ERROR", "-i", identity, "-l", user, nodeName, "--", "sleep", "600")
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.ended) }()
	t.Cleanup(s.close)
	defer func() {
		if t.Failed() {
			logSSHDState(t, s)
		}
	}()
	testenv.Eventually(t, timeout, user+"'s login in auth.log", func() error {
		if !s.running() {
			t.Fatalf("%s's ssh ended: %v: %s", user, s.err, s.out.String())
		}
		for _, l := range accepted(t) {
			if l.User == user && l.From == node.IP() && !known[sessionID{l.PID, l.Port}] {
				s.pid, s.port, s.at = l.PID, l.Port, l.Time
				if ports[l.Port] {
					t.Logf("%s's client port %d was an earlier session's too", user, l.Port)
				}
				return nil
			}
		}
		return fmt.Errorf("no new login of %s", user)
	})
	return s
}

// logSSHDState logs what tells why a session's login is not in auth.log:
// the client's output, the ends of auth.log, of the journal's sshd entries
// and of journald's and rsyslogd's own logs, and the node's sshd processes.
func logSSHDState(t *testing.T, s *session) {
	t.Helper()
	t.Logf("ssh %s: running %v, output %q", s.user, s.running(), s.out.String())
	for _, l := range accepted(t) {
		if l.User == s.user {
			t.Logf("%s's login in the files: sshd %d, port %d, at %s", l.User, l.PID, l.Port, l.Time.Format(time.RFC3339Nano))
		}
	}
	tail := func(file string, n int) string {
		data, err := os.ReadFile(file)
		if err != nil {
			return err.Error()
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		return strings.Join(lines[max(0, len(lines)-n):], "\n")
	}
	for _, f := range []string{localcluster.AuthLog, localcluster.AuthLog + ".1", filepath.Join(workDir, "sshd", "journald.log"), filepath.Join(workDir, "sshd", "rsyslogd.log"), filepath.Join(workDir, "sshd", "sshd.log")} {
		t.Logf("the end of %s:\n%s", f, tail(f, 25))
	}
	if entries, err := journal(); err != nil {
		t.Log(err)
	} else {
		for _, e := range entries[max(0, len(entries)-25):] {
			t.Logf("journal: _PID %s _COMM %s: %s", e["_PID"], e["_COMM"], e["MESSAGE"])
		}
	}
	out, _ := exec.Command("ps", "-eo", "pid,ppid,stat,wchan:24,args").CombinedOutput()
	t.Logf("processes:\n%s", out)
}

func (s *session) running() bool {
	select {
	case <-s.ended:
		return false
	default:
		return true
	}
}

// close ends the client, which ends sshd's session, and waits for it.
func (s *session) close() {
	_ = s.cmd.Process.Kill()
	<-s.ended
}

// is matches the report's login of this session.
func (s *session) is(user, nodeAccess, comment, fp string, trusted bool) func(nav1.NodeLogin) bool {
	return func(l nav1.NodeLogin) bool {
		return s.names(l) && l.User == user && l.NodeAccess == nodeAccess && l.Comment == comment &&
			l.Fingerprint == fp && l.From == node.IP() && l.Trusted == trusted
	}
}

// accepted are sshd's key login lines in auth.log and its rotated copy.
func accepted(t *testing.T) []sshdlog.Login {
	t.Helper()
	var all []sshdlog.Login
	for _, f := range []string{localcluster.AuthLog + ".1", localcluster.AuthLog} {
		all = append(all, acceptedIn(t, f)...)
	}
	return all
}

func acceptedIn(t *testing.T, file string) []sshdlog.Login {
	t.Helper()
	data, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []sshdlog.Login
	for _, line := range strings.Split(string(data), "\n") {
		if l, ok := sshdlog.ParseLine(line, time.Now()); ok {
			out = append(out, l)
		}
	}
	return out
}

// waitNodeLogin waits until the node's report lists a login for which
// match holds, and returns it.
func waitNodeLogin(t *testing.T, what string, match func(nav1.NodeLogin) bool) nav1.NodeLogin {
	t.Helper()
	var found nav1.NodeLogin
	testenv.Eventually(t, timeout, what, func() error {
		rep, err := report(context.Background())
		if err != nil {
			return err
		}
		for _, l := range rep.Status.Logins {
			if match(l) {
				found = l
				return nil
			}
		}
		return fmt.Errorf("report logins %+v", rep.Status.Logins)
	})
	return found
}

// forge sends sshd's login line for user from a client address, naming
// pid, as bob would with logger(1) on the node: through the node's
// /dev/log, so rsyslogd writes it into auth.log like sshd's own.
func forge(t *testing.T, pid int, user, from, fp string) {
	t.Helper()
	id := strconv.Itoa(bob.UID)
	out, err := exec.Command("setpriv", "--reuid="+id, "--regid="+id, "--clear-groups", "logger", "--id=0", "-p", "auth.info",
		"-t", fmt.Sprintf("sshd[%d]", pid), fmt.Sprintf("Accepted publickey for %s from %s port 4444 ssh2: ED25519 %s", user, from, fp)).CombinedOutput()
	if err != nil {
		t.Fatalf("logger: %v\n%s", err, out)
	}
}

// journal is journald's entries tagged sshd, as journalctl reads them from
// the node's /var/log/journal: their string fields.
func journal() ([]map[string]string, error) {
	out, err := exec.Command("journalctl", "--directory=/var/log/journal", "--no-pager", "-o", "json", "SYSLOG_IDENTIFIER=sshd").Output()
	if err != nil {
		return nil, fmt.Errorf("journalctl: %w", err)
	}
	var entries []map[string]string
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		var raw map[string]any
		if err := json.Unmarshal(line, &raw); err != nil {
			return nil, fmt.Errorf("reading journalctl's output: %w", err)
		}
		e := map[string]string{}
		for k, v := range raw {
			if s, ok := v.(string); ok {
				e[k] = s
			}
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// holds says whether the process has the file open.
func holds(pid int, file string) bool {
	fds, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "fd", "*"))
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err == nil && target == file {
			return true
		}
	}
	return false
}

// nsOf is the namespace of kind (pid, mnt, net) the process is in.
func nsOf(t *testing.T, pid int, kind string) string {
	t.Helper()
	ns, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns", kind))
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// startTime is the process's start time, in clock ticks since boot
// (/proc/PID/stat), which tells a process from a later one with its PID.
func startTime(t *testing.T, pid int) string { return procStat(t, pid)[19] }

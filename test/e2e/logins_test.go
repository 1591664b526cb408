package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/sshdlog"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

var bob = testenv.Account{Name: "bob", ID: 1002}

// loginNode is a node whose real sshd logs through rsyslog into the host
// root's /var/log/auth.log, with an agent following it as a DaemonSet's
// agent does with --end-sessions-on-revoke. The agent runs as a plain
// process, so its /proc is the host's, as with the pod's hostPID.
type loginNode struct {
	name  string
	host  *testenv.Host
	sshd  *testenv.SSHD
	agent *localcluster.Process
}

func startLoginNode(t *testing.T, name string) *loginNode {
	t.Helper()
	ctx := context.Background()
	obj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pool": name},
		Annotations: map[string]string{localcluster.KwokAnnotation: "fake"}}}
	must(t, k8s.Create(ctx, obj))
	t.Cleanup(func() { _ = k8s.Delete(ctx, obj) })
	n := &loginNode{name: name, host: testenv.NewHost(t, alice, bob)}
	n.sshd = testenv.StartSSHD(t, testenv.SSHDOptions{HostRoot: n.host.Root, Syslog: true})
	agent, err := cluster.StartProcess(filepath.Join(workDir, "logs"), "agent-"+name, filepath.Join(binDir, "agent"), "--node-name="+name,
		"--namespace="+namespace, "--host-root="+n.host.Root, "--kubeconfig="+cluster.Kubeconfig, "--resync=5s",
		"--sshd-port=0", "--sshd-logs=/var/log/auth.log,/var/log/secure", "--end-sessions-on-revoke")
	must(t, err)
	n.agent = agent
	t.Cleanup(func() { _ = agent.Signal(syscall.SIGCONT); agent.Stop(syscall.SIGTERM) })
	testenv.Eventually(t, timeout, "the agent follows auth.log", func() error {
		r, err := n.report()
		if err != nil {
			return err
		}
		if lt := r.Status.LoginTracking; lt == nil || len(lt.Files) != 1 || lt.Files[0] != "/var/log/auth.log" || !lt.EndSessionsOnRevoke {
			return fmt.Errorf("loginTracking %+v", lt)
		}
		return nil
	})
	return n
}

func (n *loginNode) report() (*nav1.NodeAccessReport, error) {
	r := &nav1.NodeAccessReport{}
	return r, k8s.Get(context.Background(), client.ObjectKey{Name: n.name}, r)
}

// session is an open ssh session of one account, with a terminal, running
// sleep 600 until it is ended.
type session struct {
	cmd    *exec.Cmd
	ended  chan struct{}
	user   string
	sshErr error
}

func (n *loginNode) open(t *testing.T, user, key string) *session {
	t.Helper()
	cmd := exec.Command("ssh", "-tt", "-i", key, "-p", strconv.Itoa(n.sshd.Port), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		user+"@127.0.0.1", "sleep 600")
	must(t, cmd.Start())
	s := &session{cmd: cmd, ended: make(chan struct{}), user: user}
	go func() { s.sshErr = cmd.Wait(); close(s.ended) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-s.ended })
	return s
}

func (s *session) running() bool {
	select {
	case <-s.ended:
		return false
	default:
		return true
	}
}

// loginsMatch waits until the node's report lists a login for which
// match holds, and returns it.
func (n *loginNode) waitLogin(t *testing.T, what string, match func(nav1.NodeLogin) bool) nav1.NodeLogin {
	t.Helper()
	var found nav1.NodeLogin
	testenv.Eventually(t, timeout, what, func() error {
		r, err := n.report()
		if err != nil {
			return err
		}
		for _, l := range r.Status.Logins {
			if match(l) {
				found = l
				return nil
			}
		}
		return fmt.Errorf("report logins %+v; sshd log:\n%s", r.Status.Logins, n.sshd.Log())
	})
	return found
}

// monitorOf finds, in auth.log, the PID sshd logged for the newest login of user.
func (n *loginNode) monitorOf(t *testing.T, user string) int {
	t.Helper()
	data, err := os.ReadFile(n.sshd.AuthLog())
	must(t, err)
	pid := 0
	for _, line := range strings.Split(string(data), "\n") {
		if l, ok := sshdlog.ParseLine(line, time.Now()); ok && l.User == user && l.From == "127.0.0.1" {
			pid = l.PID
		}
	}
	if pid == 0 {
		t.Fatalf("no login of %s in auth.log:\n%s", user, data)
	}
	return pid
}

func fingerprintOf(t *testing.T, private string) string {
	t.Helper()
	out, err := exec.Command("ssh-keygen", "-l", "-E", "sha256", "-f", private+".pub").Output()
	must(t, err)
	return strings.Fields(string(out))[1]
}

func grantTo(t *testing.T, name, node, user, public, comment string) {
	t.Helper()
	na := nodeAccess(name, map[string]string{"pool": node})
	na.Spec.Users = []nav1.UserAccess{{Name: user, Keys: []nav1.AuthorizedKey{{Key: public, Comment: comment}}}}
	create(t, na)
	testenv.Eventually(t, timeout, name+" ready", ready(name))
}

// Two accounts log in with keys of two NodeAccess objects on a node whose
// sshd logs through rsyslog: each login is attributed to its NodeAccess,
// account and key comment, trusted, and reaches the NodeAccess's status.
// Lines forged with logger(1) by a local user never count as trusted:
// naming the user's own process, another account's session, or (a second
// line for) a real session of the same account. A rotated log loses no
// login, also with the agent frozen across the rotation, and neither does
// copytruncate.
func TestLoginsAreAttributedAndForgeriesNeverTrusted(t *testing.T) {
	n := startLoginNode(t, "logins")
	aliceKey, alicePub := userKey(t, "alice@laptop")
	bobKey, bobPub := userKey(t, "bob@laptop")
	aliceFP, bobFP := fingerprintOf(t, aliceKey), fingerprintOf(t, bobKey)
	grantTo(t, "logins-ann", n.name, "alice", alicePub, "ann")
	grantTo(t, "logins-ben", n.name, "bob", bobPub, "ben")

	n.open(t, "alice", aliceKey)
	n.open(t, "bob", bobKey)
	trustedLogin := func(user, na, comment, fp string) func(nav1.NodeLogin) bool {
		return func(l nav1.NodeLogin) bool {
			return l.User == user && l.NodeAccess == na && l.Comment == comment && l.Fingerprint == fp && l.From == "127.0.0.1" && l.Trusted
		}
	}
	first := n.waitLogin(t, "alice's login attributed to logins-ann, trusted", trustedLogin("alice", "logins-ann", "ann", aliceFP))
	n.waitLogin(t, "bob's login attributed to logins-ben, trusted", trustedLogin("bob", "logins-ben", "ben", bobFP))
	for _, g := range []struct{ na, user, comment, fp string }{{"logins-ann", "alice", "ann", aliceFP}, {"logins-ben", "bob", "ben", bobFP}} {
		testenv.Eventually(t, timeout, g.na+" status lists the login", func() error {
			na := &nav1.NodeAccess{}
			if err := k8s.Get(context.Background(), client.ObjectKey{Name: g.na}, na); err != nil {
				return err
			}
			if l := na.Status.LastLogins; len(l) != 1 || l[0].User != g.user || l[0].Comment != g.comment || l[0].Fingerprint != g.fp ||
				l[0].Node != n.name || !l[0].Trusted {
				return fmt.Errorf("lastLogins %+v", l)
			}
			return nil
		})
	}

	// bob forges lines with logger, as any local user can.
	sleeper := exec.Command("setpriv", "--reuid="+strconv.Itoa(bob.ID), "--regid="+strconv.Itoa(bob.ID), "--clear-groups", "sleep", "600")
	must(t, sleeper.Start())
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	alicePID := n.monitorOf(t, "alice")
	forge := func(pid int, user, from, fp string) {
		n.sshd.Syslog(t, bob.ID, fmt.Sprintf("sshd[%d]", pid),
			fmt.Sprintf("Accepted publickey for %s from %s port 4444 ssh2: ED25519 %s", user, from, fp))
	}
	forge(sleeper.Process.Pid, "alice", "10.9.9.1", aliceFP) // bob's own process
	forge(alicePID, "bob", "10.9.9.2", bobFP)                // alice's session claimed as bob's
	forge(alicePID, "alice", "10.9.9.3", aliceFP)            // a second line for alice's real session
	for _, f := range []struct{ from, reason string }{
		{"10.9.9.1", nav1.SenderUnverifiedReason}, {"10.9.9.2", nav1.SenderUnverifiedReason}, {"10.9.9.3", nav1.DisputedSessionReason},
	} {
		n.waitLogin(t, "forged login from "+f.from+" untrusted, "+f.reason, func(l nav1.NodeLogin) bool {
			return l.From == f.from && !l.Trusted && l.Reason == f.reason
		})
	}
	// The second line disputes alice's session: her real login is no longer trusted either.
	n.waitLogin(t, "alice's disputed login untrusted", func(l nav1.NodeLogin) bool {
		return l.Time.Equal(&first.Time) && l.Port == first.Port && !l.Trusted && l.Reason == nav1.DisputedSessionReason
	})
	r, err := n.report()
	must(t, err)
	for _, l := range r.Status.Logins {
		if strings.HasPrefix(l.From, "10.9.9.") && l.Trusted {
			t.Errorf("a forged login is trusted: %+v", l)
		}
	}

	// logrotate's rotation, with the agent frozen throughout: a login
	// before the rename, one after it (rsyslog still writes the old file
	// until it is told to reopen), one into the new file.
	must(t, n.agent.Signal(syscall.SIGSTOP))
	countLines := func() int { // in auth.log and its rotated copies
		files, _ := filepath.Glob(n.sshd.AuthLog() + "*")
		count := 0
		for _, f := range files {
			data, _ := os.ReadFile(f)
			count += strings.Count(string(data), "Accepted publickey for")
		}
		return count
	}
	loggedIn := func(user, key string) *session {
		before := countLines()
		s := n.open(t, user, key)
		testenv.Eventually(t, timeout, user+"'s login logged", func() error {
			if countLines() == before {
				return fmt.Errorf("not logged yet")
			}
			return nil
		})
		return s
	}
	loggedIn("alice", aliceKey)
	must(t, os.Rename(n.sshd.AuthLog(), n.sshd.AuthLog()+".1"))
	loggedIn("bob", bobKey)
	n.sshd.ReopenLogs(t)
	loggedIn("alice", aliceKey)
	if _, err := os.Stat(n.sshd.AuthLog()); err != nil {
		t.Fatalf("alice's login after the HUP: %v", err) // rsyslogd writes a new auth.log
	}
	must(t, n.agent.Signal(syscall.SIGCONT))
	testenv.Eventually(t, timeout, "the three logins around the rotation reported", func() error {
		r, err := n.report()
		if err != nil {
			return err
		}
		trusted := 0
		for _, l := range r.Status.Logins {
			if l.From == "127.0.0.1" && l.Trusted {
				trusted++
			}
		}
		// bob's first login and the three new ones (alice's first is disputed).
		if trusted != 4 {
			return fmt.Errorf("%d trusted logins, want 4: %+v", trusted, r.Status.Logins)
		}
		return nil
	})

	// copytruncate: the file copied, then truncated in place.
	data, err := os.ReadFile(n.sshd.AuthLog())
	must(t, err)
	must(t, os.WriteFile(n.sshd.AuthLog()+".2", data, 0o640))
	must(t, os.Truncate(n.sshd.AuthLog(), 0))
	loggedIn("bob", bobKey)
	testenv.Eventually(t, timeout, "the login after copytruncate reported", func() error {
		r, err := n.report()
		if err != nil {
			return err
		}
		n := 0
		for _, l := range r.Status.Logins {
			if l.From == "127.0.0.1" && l.Trusted {
				n++
			}
		}
		if n != 5 {
			return fmt.Errorf("%d trusted logins, want 5: %+v", n, r.Status.Logins)
		}
		return nil
	})
}

// With sessions ended on revoke, deleting a NodeAccess ends, within 2 s,
// the open session that logged in with its key, while another account's
// session stays; a forged line naming another process (the test's own
// sleep) kills nothing.
func TestRevokeEndsTheSessionsOfTheKey(t *testing.T) {
	n := startLoginNode(t, "endsessions")
	aliceKey, alicePub := userKey(t, "alice@laptop")
	bobKey, bobPub := userKey(t, "bob@laptop")
	aliceFP := fingerprintOf(t, aliceKey)
	grantTo(t, "end-ann", n.name, "alice", alicePub, "ann")
	grantTo(t, "end-ben", n.name, "bob", bobPub, "ben")
	aliceSession := n.open(t, "alice", aliceKey)
	bobSession := n.open(t, "bob", bobKey)
	n.waitLogin(t, "alice's session trusted", func(l nav1.NodeLogin) bool { return l.User == "alice" && l.Trusted })
	n.waitLogin(t, "bob's session trusted", func(l nav1.NodeLogin) bool { return l.User == "bob" && l.Trusted })

	// A root process of the test, and a line claiming it is alice's session.
	victim := exec.Command("sleep", "600")
	must(t, victim.Start())
	victimDone := make(chan struct{})
	go func() { _ = victim.Wait(); close(victimDone) }()
	t.Cleanup(func() { _ = victim.Process.Kill(); <-victimDone })
	n.sshd.Syslog(t, bob.ID, fmt.Sprintf("sshd[%d]", victim.Process.Pid),
		fmt.Sprintf("Accepted publickey for alice from 10.9.9.4 port 4444 ssh2: ED25519 %s", aliceFP))
	n.waitLogin(t, "the forged line read, untrusted", func(l nav1.NodeLogin) bool { return l.From == "10.9.9.4" && !l.Trusted })

	na := &nav1.NodeAccess{}
	must(t, k8s.Get(context.Background(), client.ObjectKey{Name: "end-ann"}, na))
	deleted := time.Now()
	must(t, k8s.Delete(context.Background(), na))
	select {
	case <-aliceSession.ended:
		t.Logf("alice's session ended %s after the delete", time.Since(deleted).Round(time.Millisecond))
	case <-time.After(2 * time.Second):
		t.Fatalf("alice's session still open 2 s after the delete; agent log in %s", filepath.Join(workDir, "logs"))
	}
	n.waitLogin(t, "the report says the session was ended", func(l nav1.NodeLogin) bool {
		return l.User == "alice" && l.Trusted && l.EndedAt != nil
	})
	testenv.Eventually(t, timeout, "end-ann gone", gone("end-ann"))
	if !bobSession.running() {
		t.Fatalf("bob's session ended: %v", bobSession.sshErr)
	}
	select {
	case <-victimDone:
		t.Fatal("the process a forged line named was killed")
	default:
	}
	r, err := n.report()
	must(t, err)
	for _, l := range r.Status.Logins {
		if l.User == "bob" && l.EndedAt != nil || l.From == "10.9.9.4" && l.EndedAt != nil {
			t.Errorf("ended a session it must not: %+v", l)
		}
	}
}

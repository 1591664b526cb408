package sshdlog_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodeaccess/nodeaccess-operator/internal/sshdlog"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// With Debian's sshd logging through rsyslog into auth.log, as on a node:
// sshd's "Accepted publickey" line parses, names the session's privileged
// monitor, which Procfs verifies and Terminate ends (the client's
// connection closes); a line forged with logger(1) by the account itself,
// byte for byte of the same shape, names a process that fails the check.
func TestRealSSHDLinesAndSessions(t *testing.T) {
	alice := testenv.Account{Name: "alice", ID: 1001}
	h := testenv.NewHost(t, alice)
	key := filepath.Join(t.TempDir(), "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	h.WriteKeys(t, "alice", alice.ID, string(pub))
	sshd := testenv.StartSSHD(t, testenv.SSHDOptions{HostRoot: h.Root, Syslog: true})
	follower := sshdlog.NewFollower(sshd.AuthLog())
	defer follower.Close()
	if _, _, err := follower.Read(); err != nil {
		t.Fatal(err)
	}

	// With a terminal, as an interactive session has: its command ends
	// with the session (the terminal hangs up).
	ssh := exec.Command("ssh", "-tt", "-i", key, "-p", strconv.Itoa(sshd.Port), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"alice@127.0.0.1", "sleep 600")
	if err := ssh.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- ssh.Wait() }()
	t.Cleanup(func() { _ = ssh.Process.Kill() })

	var login sshdlog.Login
	testenv.Eventually(t, 20*time.Second, "sshd's line in auth.log", func() error {
		lines, _, err := follower.Read()
		if err != nil {
			return err
		}
		for _, line := range lines {
			if l, ok := sshdlog.ParseLine(line, time.Now()); ok {
				login = l
				return nil
			}
		}
		return fmt.Errorf("no login line yet; log:\n%s", sshd.Log())
	})
	if login.User != "alice" || login.From != "127.0.0.1" || login.Program != "sshd" || !strings.HasPrefix(login.Fingerprint, "SHA256:") {
		t.Fatalf("parsed %+v", login)
	}
	proc := sshdlog.Procfs{Root: "/proc"}
	var session sshdlog.Session
	testenv.Eventually(t, 10*time.Second, "the session verified", func() error {
		session, err = proc.Session(login.PID, "alice")
		return err
	})
	testenv.Eventually(t, 10*time.Second, "the session's authenticated process", func() error {
		return proc.Authenticated(login.PID, "alice")
	})
	if err := proc.SessionOf(login.PID, "bob"); err == nil {
		t.Error("alice's session passed as bob's")
	}

	// alice forges a line naming her own process: the same shape, refused.
	sleeper := exec.Command("setpriv", "--reuid=1001", "--regid=1001", "--clear-groups", "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() }()
	sshd.Syslog(t, alice.ID, fmt.Sprintf("sshd[%d]", sleeper.Process.Pid),
		fmt.Sprintf("Accepted publickey for alice from 10.9.9.9 port 4444 ssh2: ED25519 %s", login.Fingerprint))
	var forged sshdlog.Login
	testenv.Eventually(t, 10*time.Second, "the forged line in auth.log", func() error {
		lines, _, err := follower.Read()
		if err != nil {
			return err
		}
		for _, line := range lines {
			if l, ok := sshdlog.ParseLine(line, time.Now()); ok {
				forged = l
				return nil
			}
		}
		return fmt.Errorf("not yet")
	})
	if forged.PID != sleeper.Process.Pid || forged.From != "10.9.9.9" {
		t.Fatalf("forged line parsed as %+v", forged)
	}
	if _, err := proc.Session(forged.PID, "alice"); err == nil {
		t.Fatal("a forged line naming alice's own process was verified")
	}

	ended := time.Now()
	if err := proc.Terminate(session); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		t.Logf("the client's session ended %s after the signal", time.Since(ended).Round(time.Millisecond))
	case <-time.After(2 * time.Second):
		t.Fatal("the session did not end within 2 s of the signal")
	}
	testenv.Eventually(t, 5*time.Second, "the session's processes gone", func() error {
		if pids := processesOf(t, alice.ID, "sleep\x00600\x00"); len(pids) > 0 {
			return fmt.Errorf("alice's sleep 600 still runs: %v", pids)
		}
		if proc.Check(session) == nil {
			return fmt.Errorf("the session's monitor %d still runs", session.PID)
		}
		return nil
	})
}

// processesOf lists the processes of uid whose command line is cmdline.
func processesOf(t *testing.T, uid int, cmdline string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		status, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if string(cmd) == cmdline && strings.Contains(string(status), fmt.Sprintf("\nUid:\t%d\t", uid)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

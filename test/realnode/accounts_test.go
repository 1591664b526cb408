package realnode

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// useradd adds an account to the node as an administrator does: Debian's
// useradd writes a new /etc/passwd and renames it into place. The password
// is "*": no password, but not locked (sshd without PAM refuses key logins
// of a locked account).
func useradd(t *testing.T, name string, uid int, home string) {
	t.Helper()
	before := inode(t, "/etc/passwd")
	out, err := exec.Command("useradd", "--create-home", "--home-dir", home, "--uid", strconv.Itoa(uid), "--user-group",
		"--password", "*", "--shell", "/bin/sh", name).CombinedOutput()
	if err != nil {
		t.Fatalf("useradd %s: %v: %s", name, err, out)
	}
	if inode(t, "/etc/passwd") == before {
		t.Fatal("useradd changed /etc/passwd in place; the test needs a replaced file")
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// agentRestarts is the agent container's restart count and ID.
func agentRestarts(t *testing.T) (int32, string) {
	t.Helper()
	pod := agentPod(t)
	cs := pod.Status.ContainerStatuses[0]
	return cs.RestartCount, cs.ContainerID
}

// An account created on the node after the agent started is served
// within a few seconds: the agent's single-file mount of /etc/passwd
// keeps the old file, so the agent sees it replaced (its link count drops
// to zero), exits cleanly, and the kubelet restarts its container with
// the new file. The grant waited with UserNotFound until then. A second
// account created right after is served as fast: with
// NODEACCESS_AGENT_RESTART_IN_PLACE (the install's setting), the agent's
// clean exit restarts the pod's containers in place, which the kubelet's
// crash-loop back-off does not delay (a plain restart within 10 minutes
// of the last one waits 10 s, then 20 s, up to 5 minutes: 11.6 s for the
// second account here without the setting).
func TestAccountAddedAfterTheAgentStartedIsServed(t *testing.T) {
	for i, user := range []struct {
		name string
		uid  int
	}{{"dave", 2004}, {"erin", 2005}} {
		key, pub := newKey(t, user.name+"@laptop")
		name := "account-" + user.name
		create(t, grant(name, nav1.UserAccess{Name: user.name, Keys: []nav1.AuthorizedKey{{Key: pub}}}))
		testenv.Eventually(t, timeout, name+" failing with UserNotFound", failingWith(name, nav1.UserNotFoundReason))
		restarts, id := agentRestarts(t)
		start := time.Now()
		useradd(t, user.name, user.uid, "/home/"+user.name)
		took := waitLogin(t, user.name, key, start, 30*time.Second)
		t.Logf("account %d (%s) served %s after useradd returned", i+1, user.name, took.Round(time.Millisecond))
		if took > 10*time.Second {
			t.Errorf("%s served only %s after useradd", user.name, took.Round(time.Millisecond))
		}
		testenv.Eventually(t, timeout, name+" in sync", inSync(name))
		pod := agentPod(t)
		cs := pod.Status.ContainerStatuses[0]
		// Restarted in place: a fresh container (with the new file) in
		// the same pod, started at once rather than after a back-off.
		if last := cs.LastTerminationState.Terminated; cs.ContainerID == id || cs.RestartCount != restarts+1 || last == nil || last.Reason != "RestartingAllContainers" {
			t.Errorf("the agent container after useradd: %s (was %s), %d restarts (was %d), last state %+v; want restarted in place once",
				cs.ContainerID, id, cs.RestartCount, restarts, cs.LastTerminationState)
		}
		checkHandWritten(t)
	}
}

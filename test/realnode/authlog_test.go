package realnode

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// burstLines is more than a namespace's default datagram queue (10) holds
// and less than journald's rate limit lets through.
const burstLines = 100

// The node's syslog loses no line of a burst while rsyslogd is busy: with
// rsyslogd stopped, burstLines auth messages go through /dev/log to
// journald, which forwards each to rsyslogd's socket without waiting;
// once rsyslogd runs again every one of them is in auth.log. Login
// tracking reads only auth.log: a line lost there is a login the agent
// never sees.
func TestTheNodesSyslogKeepsABurstWhileRsyslogdIsBusy(t *testing.T) {
	rsyslogd := 0
	for pid, name := range sshd.Processes() {
		if name == "rsyslogd" {
			rsyslogd = pid
		}
	}
	if rsyslogd == 0 {
		t.Fatal("rsyslogd does not run")
	}
	resume := freeze(t, rsyslogd)
	defer resume()
	testenv.Eventually(t, 10*time.Second, "rsyslogd stopped", func() error {
		if state := procStat(t, rsyslogd)[0]; state != "T" {
			return fmt.Errorf("rsyslogd's state %s", state)
		}
		return nil
	})
	nonce := make([]byte, 6)
	_, _ = rand.Read(nonce)
	tag := "burst-" + hex.EncodeToString(nonce)
	var lines strings.Builder
	for i := range burstLines {
		fmt.Fprintf(&lines, "line %d of the burst\n", i)
	}
	logger := exec.Command("logger", "-p", "auth.info", "-t", tag)
	logger.Stdin = strings.NewReader(lines.String())
	if out, err := logger.CombinedOutput(); err != nil {
		t.Fatalf("logger: %v\n%s", err, out)
	}
	// Every line is in journald's hands (logger waits for each send), and
	// rsyslogd, stopped throughout, has written none of them.
	if n := burstLinesIn(t, tag); n != 0 {
		t.Fatalf("%d lines of the burst in auth.log while rsyslogd was stopped", n)
	}
	resume()
	testenv.Eventually(t, 30*time.Second, "every line of the burst in auth.log", func() error {
		if n := burstLinesIn(t, tag); n != burstLines {
			return fmt.Errorf("%d of %d lines in %s", n, burstLines, localcluster.AuthLog)
		}
		return nil
	})
}

// burstLinesIn counts the lines tagged tag in auth.log.
func burstLinesIn(t *testing.T, tag string) int {
	t.Helper()
	data, err := os.ReadFile(localcluster.AuthLog)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), " "+tag+": line ")
}

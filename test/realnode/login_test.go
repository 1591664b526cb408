package realnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// loginWithin bounds the time from a change to the login state following
// it; the benchmark measures the figure itself.
const loginWithin = 15 * time.Second

// ssh checks the node's host key against what the plugin published: the
// known_hosts `kubectl nodeaccess known-hosts` wrote holds exactly the
// host key of the node's sshd, learnt by the agent through a handshake,
// and ssh-config makes ssh check it by the node's name. Alice's own key,
// which she wrote by hand, logs her in; another key and another account
// are refused, and sshd says so in the node's auth.log.
func TestSSHChecksTheHostKeyThePluginPublished(t *testing.T) {
	hostPub, err := os.ReadFile(filepath.Join(workDir, "sshd", "ssh_host_ed25519_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	known, err := os.ReadFile(filepath.Join(workDir, "ssh", "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	hostBlob := blobOf(string(hostPub))
	if !regexp.MustCompile(`(?m)^` + nodeName + `,` + regexp.QuoteMeta(node.IP()) + ` ssh-ed25519 ` + regexp.QuoteMeta(hostBlob) + `$`).Match(known) {
		t.Fatalf("known_hosts from the plugin does not hold the node's sshd host key %s:\n%s", hostBlob, known)
	}
	config, err := os.ReadFile(sshConfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Host " + nodeName, "HostName " + node.IP(), "HostKeyAlias " + nodeName, "StrictHostKeyChecking yes"} {
		if !bytes.Contains(config, []byte(want)) {
			t.Errorf("ssh-config from the plugin lacks %q:\n%s", want, config)
		}
	}
	out, err := sshRun(context.Background(), alice.Name, handKey, nil, "id", "-un")
	if err != nil || strings.TrimSpace(string(out)) != alice.Name {
		t.Fatalf("alice with her own key: %v: %s", err, out)
	}
	// Without the published host key ssh refuses the node: nothing is
	// trusted on first use.
	out, err = sshRun(context.Background(), alice.Name, handKey, []string{"-o", "UserKnownHostsFile=/dev/null"}, "true")
	if err == nil || !bytes.Contains(out, []byte("Host key verification failed")) {
		t.Fatalf("ssh without the published host key: %v: %s", err, out)
	}
	other, otherPub := newKey(t, "mallory@laptop")
	if err := login(alice.Name, other); !errors.Is(err, errRefused) {
		t.Fatalf("alice with another key: %v, want refused", err)
	}
	if err := login(bob.Name, handKey); !errors.Is(err, errRefused) {
		t.Fatalf("bob with alice's key: %v, want refused", err)
	}
	testenv.Eventually(t, 10*time.Second, "sshd's messages in "+localcluster.AuthLog, func() error {
		data, err := os.ReadFile(localcluster.AuthLog)
		if err != nil {
			return err
		}
		for _, want := range []string{
			"Accepted publickey for alice from " + node.IP() + " port", fingerprint(t, handKey+".pub"),
			"Failed publickey for alice from " + node.IP(), fingerprint(t, otherPub),
		} {
			if !strings.Contains(string(data), want) {
				return errors.New("no " + want)
			}
		}
		return nil
	})
	checkHandWritten(t)
}

func fingerprint(t *testing.T, pubOrFile string) string {
	t.Helper()
	if !strings.HasPrefix(pubOrFile, "ssh-") {
		data, err := os.ReadFile(pubOrFile)
		if err != nil {
			t.Fatal(err)
		}
		pubOrFile = string(data)
	}
	f := filepath.Join(t.TempDir(), "k.pub")
	if err := os.WriteFile(f, []byte(pubOrFile), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ssh-keygen", "-l", "-E", "sha256", "-f", f).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(out))[1]
}

// A granted key logs alice in, and after each way access ends the same
// login is refused: the NodeAccess deleted, suspended, the key's expiry,
// the grant's expiry, and the node relabelled out of the selector. sshd
// itself refuses expired keys (OpenSSH 9.2 honours expiry-time in UTC,
// which the agent writes; the report says so). Her own key and lines stay
// as she wrote them, and keep working, throughout.
func TestLoginsFollowTheGrant(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// expire sets the key's or the grant's expiry, when set.
		expire func(na *nav1.NodeAccess, at metav1.Time)
		// end ends access, when expiry does not.
		end func(t *testing.T, na *nav1.NodeAccess)
	}{
		{name: "delete", end: func(t *testing.T, na *nav1.NodeAccess) {
			if err := k8s.Delete(ctx, na); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "suspend", end: func(t *testing.T, na *nav1.NodeAccess) {
			patch(t, na, `{"spec":{"suspend":true}}`)
		}},
		{name: "key-expiry", expire: func(na *nav1.NodeAccess, at metav1.Time) { na.Spec.Users[0].Keys[0].ExpiresAt = &at }},
		{name: "grant-expiry", expire: func(na *nav1.NodeAccess, at metav1.Time) { na.Spec.ExpiresAt = &at }},
		{name: "relabel", end: func(t *testing.T, _ *nav1.NodeAccess) {
			labelNode(t, "elsewhere")
			t.Cleanup(func() { labelNode(t, "real") })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, pub := newKey(t, "alice@"+tc.name)
			na := grant("login-"+tc.name, nav1.UserAccess{Name: alice.Name, Keys: []nav1.AuthorizedKey{{Key: pub}}})
			var expiry time.Time
			if tc.expire != nil {
				// A few seconds ahead: enough to log in first.
				expiry = time.Now().Add(5 * time.Second).Truncate(time.Second)
				tc.expire(na, metav1.NewTime(expiry))
			}
			start := time.Now()
			create(t, na)
			took := waitLogin(t, alice.Name, key, start, loginWithin)
			checkHandWritten(t)
			var refusedAfter time.Duration
			if tc.expire != nil {
				if time.Now().After(expiry) {
					t.Fatalf("logged in only %s after the create, past the expiry", took)
				}
				checkExpiryEnforcedBySSHD(t, pub, expiry)
				for time.Now().Before(expiry) {
					if err := login(alice.Name, key); err != nil && time.Now().Before(expiry.Add(-100*time.Millisecond)) {
						t.Fatalf("refused before the expiry: %v", err)
					}
				}
				refusedAfter = waitRefused(t, alice.Name, key, expiry, loginWithin)
			} else {
				start = time.Now()
				tc.end(t, na)
				refusedAfter = waitRefused(t, alice.Name, key, start, loginWithin)
			}
			t.Logf("login %s after the create, refused %s after the %s", took.Round(time.Millisecond), refusedAfter.Round(time.Millisecond), tc.name)
			checkHandWritten(t)
			data, err := os.ReadFile(aliceFile)
			if err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, loginWithin, "the key gone from the file", func() error {
				if data, err = os.ReadFile(aliceFile); err != nil {
					return err
				}
				if bytes.Contains(data, []byte(blobOf(pub))) {
					return errors.New("still in alice's authorized_keys")
				}
				return nil
			})
		})
	}
}

// checkExpiryEnforcedBySSHD checks that the key's line carries sshd's own
// expiry-time at the instant, in UTC, and that the report says sshd
// enforces expiry on this node.
func checkExpiryEnforcedBySSHD(t *testing.T, pub string, at time.Time) {
	t.Helper()
	data, err := os.ReadFile(aliceFile)
	if err != nil {
		t.Fatal(err)
	}
	// sshd accepts a key through the whole second the option names, so the
	// line names the last second before the (whole-second) instant.
	want := `expiry-time="` + at.UTC().Add(-time.Second).Format("20060102150405") + `Z"`
	found := false
	for _, line := range strings.Split(string(data), "\n") {
		found = found || (strings.Contains(line, blobOf(pub)) && strings.HasPrefix(line, want+" "))
	}
	if !found {
		t.Errorf("no line with %s for the key in:\n%s", want, data)
	}
	rep, err := report(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Status.ExpiryEnforcedBy != nav1.ExpiryBySSHDAndAgent {
		t.Errorf("report says expiry enforced by %q, want %s (sshd %+v)", rep.Status.ExpiryEnforcedBy, nav1.ExpiryBySSHDAndAgent, rep.Status.SSHD)
	}
}

func patch(t *testing.T, obj client.Object, mergePatch string) {
	t.Helper()
	if err := k8s.Patch(context.Background(), obj, client.RawPatch(types.MergePatchType, []byte(mergePatch))); err != nil {
		t.Fatal(err)
	}
}

// labelNode sets the node's pool label.
func labelNode(t testing.TB, pool string) {
	t.Helper()
	if _, err := clientset.CoreV1().Nodes().Patch(context.Background(), nodeName, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"pool":`+strconv.Quote(pool)+`}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// The typed options are enforced by sshd itself: a from pattern excluding
// the client refuses the key and one including it accepts it; a forced
// command runs whatever the client asks; restrict and noPortForwarding
// refuse a forwarding (a local forward with -L, which sshd refuses when a
// connection comes through it; a stdio forward with -W, the same
// direct-tcpip channel; and a remote forward with -R), which works with an
// unrestricted key.
func TestOptionsAreEnforcedBySSHD(t *testing.T) {
	ctx := context.Background()
	type key struct {
		path, pub string
		options   *nav1.KeyOptions
	}
	keys := map[string]*key{
		"from-other": {options: &nav1.KeyOptions{From: []string{"10.0.0.0/8"}}},
		"from-node":  {options: &nav1.KeyOptions{From: []string{node.IP()}}},
		"command":    {options: &nav1.KeyOptions{Command: "echo forced command"}},
		"restrict":   {options: &nav1.KeyOptions{Restrict: true}},
		"no-pf":      {options: &nav1.KeyOptions{NoPortForwarding: true}},
		"plain":      {},
	}
	access := nav1.UserAccess{Name: alice.Name}
	for name, k := range keys {
		k.path, k.pub = newKey(t, "alice@"+name)
		access.Keys = append(access.Keys, nav1.AuthorizedKey{Key: k.pub, Options: k.options})
	}
	create(t, grant("options", access))
	testenv.Eventually(t, timeout, "options in sync", inSync("options"))

	if err := login(alice.Name, keys["from-other"].path); !errors.Is(err, errRefused) {
		t.Errorf("from=10.0.0.0/8, client %s: %v, want refused", node.IP(), err)
	}
	if err := login(alice.Name, keys["from-node"].path); err != nil {
		t.Errorf("from=%s: %v", node.IP(), err)
	}
	out, err := sshRun(ctx, alice.Name, keys["command"].path, nil, "id", "-un")
	if err != nil || strings.TrimSpace(string(out)) != "forced command" {
		t.Errorf("forced command: ran %q (%v), want the forced command's output", out, err)
	}
	port, err := localcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	forwards := map[string][]string{
		// -W opens the direct-tcpip channel that -L opens per connection.
		"stdio forward":  {"-W", node.IP() + ":22"},
		"remote forward": {"-R", fmt.Sprintf("127.0.0.1:%d:127.0.0.1:22", port)},
	}
	for _, name := range []string{"restrict", "no-pf", "plain"} {
		if err := login(alice.Name, keys[name].path); err != nil {
			t.Errorf("%s: a plain login: %v", name, err)
		}
		for what, args := range forwards {
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			command := []string{"true"}
			if args[0] == "-W" {
				command = nil
			}
			out, err := sshRun(cctx, alice.Name, keys[name].path, append([]string{"-o", "ExitOnForwardFailure=yes"}, args...), command...)
			cancel()
			var exit *exec.ExitError
			switch {
			case name == "plain" && err != nil:
				t.Errorf("an unrestricted key's %s failed: %v: %s", what, err, out)
			case name == "plain" && what == "stdio forward" && !bytes.HasPrefix(out, []byte("SSH-2.0-")):
				t.Errorf("the stdio forward reached %q, want the node's sshd", out)
			case name != "plain" && (!errors.As(err, &exit) || exit.ExitCode() != 255 || !bytes.Contains(out, []byte("forwarding failed"))):
				t.Errorf("%s: a %s: %v: %s; want refused", name, what, err, out)
			}
		}
	}
	// -L itself: the forward is set up locally, and sshd refuses the
	// channel when a connection comes through it.
	for _, name := range []string{"restrict", "no-pf", "plain"} {
		banner, err := throughLocalForward(t, keys[name].path)
		switch {
		case name == "plain" && (err != nil || !strings.HasPrefix(banner, "SSH-2.0-")):
			t.Errorf("an unrestricted key's -L forward reached %q (%v), want the node's sshd", banner, err)
		case name != "plain" && (err == nil || banner != ""):
			t.Errorf("%s: a -L forward reached %q (%v); want the channel refused", name, banner, err)
		}
	}
	checkHandWritten(t)
}

// throughLocalForward runs `ssh -N -L` as alice with the key, forwarding
// a local port to the node's sshd, connects through it, and returns what
// came back (the node's SSH banner when sshd opened the channel) and the
// error of reading it (io.EOF when sshd refused the channel).
func throughLocalForward(t *testing.T, key string) (string, error) {
	t.Helper()
	port, err := localcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	local := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"-F", sshConfig, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ExitOnForwardFailure=yes",
		"-o", "LogLevel=ERROR", "-i", key, "-l", alice.Name, "-N", "-L", local + ":" + node.IP() + ":22", nodeName}
	cmd := exec.CommandContext(ctx, "ssh", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() { _ = cmd.Process.Kill(); <-exited }()
	var conn net.Conn
	testenv.Eventually(t, 20*time.Second, "ssh listening on "+local, func() error {
		select {
		case <-exited:
			t.Fatalf("ssh -L exited: %s", out.String())
		default:
		}
		conn, err = net.DialTimeout("tcp", local, time.Second)
		return err
	})
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(conn, buf, 8)
	return string(buf[:n]), err
}

package hostkeys_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/hostkeys"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// A real sshd with host keys of every family: each key is found, with the
// type, key and fingerprint ssh-keygen gives, and the version string is
// the one this sshd sends.
func TestScanFindsEveryHostKeyOfARealSSHD(t *testing.T) {
	sshd := testenv.StartSSHD(t, testenv.SSHDOptions{HostKeyTypes: []string{"ed25519", "ecdsa", "rsa"}})
	res, err := hostkeys.Scan(context.Background(), sshd.Addr(), hostkeys.Options{})
	if err != nil {
		t.Fatalf("scan: %v\nsshd log:\n%s", err, sshd.Log())
	}
	want := map[string]string{"ed25519": "ssh-ed25519", "ecdsa": "ecdsa-sha2-nistp256", "rsa": "ssh-rsa"}
	if len(res.Keys) != len(want) {
		t.Fatalf("found %d keys, want %d: %+v", len(res.Keys), len(want), res.Keys)
	}
	for i, typ := range []string{"ed25519", "ecdsa", "rsa"} {
		pub, fp := sshd.HostKey(t, typ)
		fields := strings.Fields(pub)
		got := res.Keys[i]
		if got.Type != want[typ] || got.Type != fields[0] || got.Data != fields[1] || got.Fingerprint != fp {
			t.Errorf("key %d: got %s %s %s; want %s %s %s", i, got.Type, got.Fingerprint, got.Data, fields[0], fp, fields[1])
		}
	}
	// Debian's sshd says "SSH-2.0-OpenSSH_<upstream> Debian-<revision>" of
	// its package version "1:<upstream>-<revision>".
	out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", "openssh-server").Output()
	if err != nil {
		t.Fatal(err)
	}
	pkg := string(out)
	if _, v, ok := strings.Cut(pkg, ":"); ok {
		pkg = v
	}
	upstream, revision, _ := strings.Cut(pkg, "-")
	wantVersion := "SSH-2.0-OpenSSH_" + upstream + " Debian-" + revision
	if res.Version != wantVersion {
		t.Errorf("version %q, want %q", res.Version, wantVersion)
	}
	if res.Address != sshd.Addr() {
		t.Errorf("address %q, want %q", res.Address, sshd.Addr())
	}
	// No handshake went as far as authentication.
	if log := sshd.Log(); strings.Contains(log, "Accepted") || strings.Contains(log, "Failed") || strings.Contains(log, "Invalid user") {
		t.Errorf("a scan tried to authenticate:\n%s", log)
	}
}

// A family the server lacks is skipped, and a server with none of the
// offered families fails with NoHostKeys, still telling its version.
func TestScanSkipsFamiliesTheServerLacks(t *testing.T) {
	sshd := testenv.StartSSHD(t, testenv.SSHDOptions{HostKeyTypes: []string{"ed25519"}})
	res, err := hostkeys.Scan(context.Background(), sshd.Addr(), hostkeys.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, fp := sshd.HostKey(t, "ed25519")
	if len(res.Keys) != 1 || res.Keys[0].Type != "ssh-ed25519" || res.Keys[0].Fingerprint != fp {
		t.Fatalf("keys %+v, want the one ed25519 key %s", res.Keys, fp)
	}

	res, err = hostkeys.Scan(context.Background(), sshd.Addr(), hostkeys.Options{Families: hostkeys.Families[1:]})
	if hostkeys.ReasonOf(err) != nav1.NoHostKeysReason || len(res.Keys) != 0 {
		t.Fatalf("scan for ecdsa and rsa only: %+v, %v; want NoHostKeys", res, err)
	}
	if !strings.Contains(err.Error(), "ecdsa, rsa") || !strings.HasPrefix(res.Version, "SSH-2.0-OpenSSH_") {
		t.Errorf("error %q and version %q should name the families and keep the version", err, res.Version)
	}
}

func TestScanFailsClearly(t *testing.T) {
	cases := []struct {
		name   string
		addr   string
		reason string
		text   string
	}{
		{"no server", "", nav1.SSHDUnreachableReason, "connection refused"},
		{"an HTTP server", serve(t, func(c net.Conn) {
			_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
		}), nav1.NotAnSSHServerReason, "did not answer with an SSH version string"},
		{"a server that closes at once", serve(t, func(net.Conn) {}), nav1.NotAnSSHServerReason, "did not answer with an SSH version string"},
		{"a server that never answers", serve(t, func(c net.Conn) {
			// Reads what the client sends until it gives up, answering nothing.
			_, _ = io.Copy(io.Discard, c)
		}), nav1.SSHDTimeoutReason, "no SSH version string within 500ms"},
		{"a server sending an endless line", serve(t, func(c net.Conn) {
			junk := []byte(strings.Repeat("A", 4096))
			for range 1000 {
				if _, err := c.Write(junk); err != nil {
					return
				}
			}
		}), nav1.NotAnSSHServerReason, "did not answer with an SSH version string"},
		{"an SSH version, then garbage", serve(t, func(c net.Conn) {
			_, _ = c.Write([]byte("SSH-2.0-Evil\r\n\x00\x00\x00\x0c\x0a\x14garbage!!!!"))
			_, _ = c.Read(make([]byte, 4096))
		}), nav1.SSHDHandshakeFailedReason, "SSH handshake"},
	}
	// A port nothing listens on, taken after the servers above have theirs:
	// taken before, its number could be given to one of them.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cases[0].addr = ln.Addr().String()
	ln.Close()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			res, err := hostkeys.Scan(context.Background(), tc.addr, hostkeys.Options{Timeout: 500 * time.Millisecond})
			var herr *hostkeys.Error
			if !errors.As(err, &herr) || herr.Reason != tc.reason || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("got %+v, %v; want reason %s and %q", res, err, tc.reason, tc.text)
			}
			if !strings.HasPrefix(err.Error(), tc.addr+": ") {
				t.Errorf("the error %q does not start with the address", err)
			}
			if len(res.Keys) != 0 {
				t.Errorf("keys from a failed scan: %+v", res.Keys)
			}
			// One handshake per family at most, each within its timeout.
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("the scan took %s", d)
			}
		})
	}
}

func TestSanitise(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6", "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6"},
		{"SSH-2.0-x\x1b[31mred\x00\x7f", "SSH-2.0-x?[31mred??"},
		{"SSH-2.0-caf\xc3\xa9", "SSH-2.0-caf??"},
		{"SSH-2.0-" + strings.Repeat("v", 400), "SSH-2.0-" + strings.Repeat("v", nav1.MaxSSHDVersionLength-8)},
	} {
		if got := hostkeys.Sanitise(tc.in); got != tc.want {
			t.Errorf("Sanitise(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// serve runs a TCP server on loopback that handles each connection with
// handle, then closes it; it stops at the end of the test.
func serve(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

package sshdlog

import (
	"testing"
	"time"
)

// Lines as Debian's rsyslog writes sshd's (traditional and RFC 3339
// formats), and the lines that look like them but are not key logins.
func TestParseLine(t *testing.T) {
	now := time.Date(2026, 12, 1, 23, 0, 0, 0, time.UTC)
	const fp = "SHA256:uUu1uFOKrRKkqj0LmvzIbr0Yn1n5Bfk8tHGmmc3b3dE"
	cases := []struct {
		line string
		want *Login
	}{
		{"Dec  1 22:59:58 node-1 sshd[4242]: Accepted publickey for alice from 198.18.0.7 port 51234 ssh2: ED25519 " + fp,
			&Login{Time: time.Date(2026, 12, 1, 22, 59, 58, 0, time.UTC), Program: "sshd", PID: 4242, User: "alice", From: "198.18.0.7", Port: 51234, KeyType: "ED25519", Fingerprint: fp, Method: "publickey"}},
		{"2026-12-01T22:59:58.123456+00:00 node-1 sshd[77]: Accepted publickey for deploy from fd00::5 port 2222 ssh2: RSA " + fp,
			&Login{Time: time.Date(2026, 12, 1, 22, 59, 58, 123456000, time.UTC), Program: "sshd", PID: 77, User: "deploy", From: "fd00::5", Port: 2222, KeyType: "RSA", Fingerprint: fp, Method: "publickey"}},
		{"Dec 31 23:59:59 node-1 sshd-session[9]: Accepted publickey for alice from 10.0.0.1 port 1 ssh2: ECDSA " + fp,
			&Login{Time: time.Date(2025, 12, 31, 23, 59, 59, 0, time.UTC), Program: "sshd-session", PID: 9, User: "alice", From: "10.0.0.1", Port: 1, KeyType: "ECDSA", Fingerprint: fp, Method: "publickey"}},
		{"Dec  1 22:59:58 node-1 sshd[4242]: Accepted publickey for alice from 198.18.0.7 port 51234 ssh2: ED25519-CERT " + fp + " ID id (serial 0) CA ED25519 " + fp, nil},
		{"Dec  1 22:59:58 node-1 sshd[4242]: Accepted password for alice from 198.18.0.7 port 51234 ssh2", nil},
		{"Dec  1 22:59:58 node-1 sshd[4242]: Failed publickey for alice from 198.18.0.7 port 51234 ssh2: ED25519 " + fp, nil},
		{"Dec  1 22:59:58 node-1 su[4242]: Accepted publickey for alice from 198.18.0.7 port 51234 ssh2: ED25519 " + fp, nil},
		{"Dec  1 22:59:58 node-1 sshd: Accepted publickey for alice from 198.18.0.7 port 51234 ssh2: ED25519 " + fp, nil},
		{"Dec  1 22:59:58 node-1 sshd[4242]: Accepted publickey for ../etc from 198.18.0.7 port 51234 ssh2: ED25519 " + fp, nil},
		{"Dec  1 22:59:58 node-1 sshd[4242]: Accepted publickey for alice from evil.example port 51234 ssh2: ED25519 " + fp, nil},
		{"Dec  1 22:59:58 node-1 sshd[4242]: Accepted publickey for alice from 198.18.0.7 port 99999 ssh2: ED25519 " + fp, nil},
		{"not a syslog line", nil},
		{"", nil},
	}
	for _, tc := range cases {
		got, ok := ParseLine(tc.line, now)
		switch {
		case tc.want == nil && ok:
			t.Errorf("%q parsed as a login: %+v", tc.line, got)
		case tc.want != nil && (!ok || got != *tc.want):
			t.Errorf("%q: got %+v (%v), want %+v", tc.line, got, ok, *tc.want)
		}
	}
}

func FuzzParseLine(f *testing.F) {
	f.Add("Dec  1 22:59:58 node-1 sshd[4242]: Accepted publickey for alice from 198.18.0.7 port 51234 ssh2: ED25519 SHA256:x")
	f.Fuzz(func(t *testing.T, line string) {
		l, ok := ParseLine(line, time.Now())
		if ok && (!validUser(l.User) || !validAddress(l.From) || l.PID <= 0) {
			t.Fatalf("accepted %+v from %q", l, line)
		}
	})
}

// Every "Accepted" line of sshd claims its session, whatever the method:
// only key lines are logins, but any other names the session too, so a
// forged key line for it is seen as the second.
func TestParseSessionLine(t *testing.T) {
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		line, method string
	}{
		{"Dec  1 22:59:58 node-1 sshd[4242]: Accepted password for alice from 198.18.0.7 port 51234 ssh2", "password"},
		{"Dec  1 22:59:58 node-1 sshd[4242]: Accepted keyboard-interactive/pam for alice from 198.18.0.7 port 51234 ssh2", "keyboard-interactive/pam"},
		{"Dec  1 22:59:58 node-1 sshd[4242]: Accepted publickey for alice from 198.18.0.7 port 51234 ssh2: ED25519-CERT SHA256:abc ID id (serial 0) CA ED25519 SHA256:def", "publickey-cert"},
		{"Dec  1 22:59:58 node-1 sshd[4242]: Accepted publickey for alice from 198.18.0.7 port 51234 ssh2: ED25519 SHA256:abc", "publickey"},
	} {
		l, ok := ParseSessionLine(tc.line, now)
		if !ok || l.Method != tc.method || l.PID != 4242 || l.User != "alice" {
			t.Errorf("%q: %+v %v, want method %s", tc.line, l, ok, tc.method)
		}
		if _, isLogin := ParseLine(tc.line, now); isLogin != (tc.method == "publickey") {
			t.Errorf("%q: ParseLine says login %v", tc.line, isLogin)
		}
	}
	for _, line := range []string{
		"Dec  1 22:59:58 node-1 sshd[4242]: Failed password for alice from 198.18.0.7 port 51234 ssh2",
		"Dec  1 22:59:58 node-1 cron[4242]: Accepted password for alice from 198.18.0.7 port 51234 ssh2",
		"Dec  1 22:59:58 node-1 sshd[4242]: Accepted password for al ice from 198.18.0.7 port 51234 ssh2",
	} {
		if l, ok := ParseSessionLine(line, now); ok {
			t.Errorf("%q parsed as %+v", line, l)
		}
	}
}

// Package sshdlog reads what sshd logs about logins: it parses the syslog
// lines sshd writes through the node's syslog daemon (/var/log/auth.log,
// /var/log/secure), follows those files across rotation and truncation, and
// decides which lines can be trusted.
//
// A line in a syslog file says which program and PID sent it, but any local
// user can send the same bytes (`logger -t 'sshd[1234]' ...`): a line is
// trusted only when the PID it names is, at the time it is read, a live sshd
// session monitor of that very user (Trust), which needs the host's PID
// namespace. Everything else is attributed as untrusted.
package sshdlog

import (
	"strconv"
	"strings"
	"time"
)

// MaxLineBytes bounds a log line; longer lines are skipped.
const MaxLineBytes = 8 << 10

// Login is one "Accepted publickey" line of sshd.
type Login struct {
	// Time is when syslog received the line.
	Time time.Time
	// Program is the sending program's tag: sshd, or sshd-session (OpenSSH 9.8 on).
	Program string
	// PID is the process the line names.
	PID int
	// User is the account logged in to.
	User string
	// From is the client's address, Port its source port.
	From string
	Port int
	// KeyType is the key's type as sshd prints it (ED25519, RSA, ECDSA).
	KeyType string
	// Fingerprint is "SHA256:..." of the key that authenticated; empty
	// for a login by another method (Method).
	Fingerprint string
	// Method is how the session authenticated: "publickey" for a key
	// login; anything else (password, keyboard-interactive, a
	// certificate's "publickey-cert") is only a claim on the session.
	Method string
}

// ParseLine reads one syslog line: traditional ("Dec  1 22:59:59 host
// sshd[1234]: msg", the year taken from now) or RFC 3339 ("2026-12-01T22:59:59.123456+00:00
// host sshd[1234]: msg"). It returns the Login of an "Accepted publickey"
// line of sshd, and false for every other line. Certificate logins (a
// "-CERT" key type) are not key logins and are refused too.
func ParseLine(line string, now time.Time) (Login, bool) {
	l, ok := ParseSessionLine(line, now)
	if !ok || l.Method != "publickey" {
		return Login{}, false
	}
	return l, true
}

// ParseSessionLine reads, like ParseLine, any "Accepted METHOD for U from
// IP port P" line of sshd: every authenticated session has exactly one,
// so a second line naming the same session shows a forgery whatever the
// method of the first. Only key logins (Method "publickey") carry a
// fingerprint.
func ParseSessionLine(line string, now time.Time) (Login, bool) {
	if len(line) > MaxLineBytes {
		return Login{}, false
	}
	t, rest, ok := parseTime(line, now)
	if !ok {
		return Login{}, false
	}
	// host, then "program[pid]: message".
	_, rest, ok = strings.Cut(strings.TrimLeft(rest, " "), " ")
	if !ok {
		return Login{}, false
	}
	tag, msg, ok := strings.Cut(rest, ": ")
	if !ok {
		return Login{}, false
	}
	program, pidText, ok := strings.Cut(tag, "[")
	if !ok || !strings.HasSuffix(pidText, "]") || (program != "sshd" && program != "sshd-session") {
		return Login{}, false
	}
	pid, err := strconv.Atoi(strings.TrimSuffix(pidText, "]"))
	if err != nil || pid <= 0 {
		return Login{}, false
	}
	l, ok := parseAccepted(msg)
	if !ok {
		if l, ok = parseOtherAccepted(msg); !ok {
			return Login{}, false
		}
	}
	l.Time, l.Program, l.PID = t.UTC(), program, pid
	return l, true
}

// parseAccepted reads "Accepted publickey for U from IP port P ssh2: TYPE SHA256:FP".
func parseAccepted(msg string) (Login, bool) {
	f := strings.Fields(msg)
	if len(f) != 11 || f[0] != "Accepted" || f[1] != "publickey" || f[2] != "for" || f[4] != "from" ||
		f[6] != "port" || f[8] != "ssh2:" || strings.HasSuffix(f[9], "-CERT") || !strings.HasPrefix(f[10], "SHA256:") {
		return Login{}, false
	}
	port, err := strconv.Atoi(f[7])
	if err != nil || port <= 0 || port > 65535 || !validUser(f[3]) || !validAddress(f[5]) || !printable(f[9]) || !printable(f[10]) {
		return Login{}, false
	}
	return Login{User: f[3], From: f[5], Port: port, KeyType: f[9], Fingerprint: f[10], Method: "publickey"}, true
}

// parseOtherAccepted reads "Accepted METHOD for U from IP port P ssh2..."
// of any other method, and certificate logins.
func parseOtherAccepted(msg string) (Login, bool) {
	f := strings.Fields(msg)
	if len(f) < 8 || f[0] != "Accepted" || f[2] != "for" || f[4] != "from" || f[6] != "port" || !printable(f[1]) || len(f[1]) > 64 {
		return Login{}, false
	}
	port, err := strconv.Atoi(f[7])
	if err != nil || port <= 0 || port > 65535 || !validUser(f[3]) || !validAddress(f[5]) {
		return Login{}, false
	}
	method := f[1]
	if method == "publickey" {
		// Not a plain key line (parseAccepted refused it): a certificate.
		method = "publickey-cert"
	}
	return Login{User: f[3], From: f[5], Port: port, Method: method}, true
}

// parseTime reads the line's timestamp and returns the rest.
func parseTime(line string, now time.Time) (time.Time, string, bool) {
	// RFC 3339 (rsyslog's RSYSLOG_FileFormat, journald's short-iso).
	if first, rest, ok := strings.Cut(line, " "); ok && len(first) >= 20 && first[4] == '-' {
		t, err := time.Parse(time.RFC3339Nano, first)
		return t, rest, err == nil
	}
	// Traditional: "Jan _2 15:04:05", in the node's local time, no year.
	if len(line) < 16 {
		return time.Time{}, "", false
	}
	t, err := time.ParseInLocation(time.Stamp, line[:15], now.Location())
	if err != nil {
		return time.Time{}, "", false
	}
	t = t.AddDate(now.Year(), 0, 0)
	if t.After(now.Add(24 * time.Hour)) {
		t = t.AddDate(-1, 0, 0) // a December line read in January
	}
	return t, line[15:], true
}

func validUser(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validAddress(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

func printable(s string) bool {
	if len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

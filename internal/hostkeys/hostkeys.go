// Package hostkeys learns the host public keys of an SSH server the way
// ssh-keyscan does: one SSH handshake per host key algorithm family
// (Ed25519, ECDSA, RSA with SHA-2), each offering only that family, and
// aborted as soon as the server has proven it holds the key (its signature
// over the key exchange is verified before the key is taken) and before any
// authentication. It also returns the server's version string.
//
// The peer is treated as hostile: every connection has a deadline, the bytes
// read from it are bounded, and what is returned is bounded and reduced to
// printable ASCII.
package hostkeys

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// DefaultTimeout bounds one handshake when Options.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// maxReadBytes bounds what one handshake reads from the peer: a version
// exchange and a key exchange take a few KiB (an RSA host key of 16384 bits
// is 2 KiB); OpenSSH's own packet limit is 256 KiB.
const maxReadBytes = 512 << 10

// maxRecordedBytes bounds the bytes kept to find the version string in.
const maxRecordedBytes = 64 << 10

// Family is a set of host key algorithms offered in one handshake.
type Family struct {
	// Name names the family in errors, for example "ecdsa".
	Name string
	// Algorithms are offered in this order.
	Algorithms []string
}

// Families are the host key algorithm families probed by default, one
// handshake each. DSA and SHA-1 RSA signatures are not offered.
var Families = []Family{
	{Name: "ed25519", Algorithms: []string{ssh.KeyAlgoED25519}},
	{Name: "ecdsa", Algorithms: []string{ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521}},
	{Name: "rsa", Algorithms: []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}},
}

// Key is one host public key.
type Key struct {
	// Type is the key's type as known_hosts writes it: ssh-ed25519,
	// ecdsa-sha2-nistp256/384/521 or ssh-rsa.
	Type string
	// Data is the key in base64 (the SSH wire format).
	Data string
	// Fingerprint is the SHA256 fingerprint, "SHA256:...".
	Fingerprint string
}

// Result is what one scan learned.
type Result struct {
	// Address is the host:port scanned.
	Address string
	// Version is the server's version string ("SSH-2.0-..."), printable
	// ASCII, at most nav1.MaxSSHDVersionLength bytes.
	Version string
	// Keys are the host keys found, in the order of the families.
	Keys []Key
}

// Options tune a scan.
type Options struct {
	// Timeout bounds each handshake (dial included); DefaultTimeout when zero.
	Timeout time.Duration
	// Families are probed in order; Families when nil.
	Families []Family
}

// Error is a scan that learned no host key, with a reason.
type Error struct {
	// Reason is one of the api's SSHD reasons, for example nav1.SSHDUnreachableReason.
	Reason string
	// Address is the address scanned.
	Address string
	Err     error
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Address, e.Err) }

func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the reason of a Scan error, or
// nav1.SSHDHandshakeFailedReason for any other error.
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return nav1.SSHDHandshakeFailedReason
}

// Scan performs one handshake per family against addr ("host:port"). It
// returns the keys found and the server's version; it fails, with an
// *Error, when no key at all was found. A family the server does not offer
// is skipped.
func Scan(ctx context.Context, addr string, opts Options) (Result, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	families := opts.Families
	if families == nil {
		families = Families
	}
	res := Result{Address: addr}
	var notOffered []string
	var lastErr error
	for _, f := range families {
		key, version, err := handshake(ctx, addr, f.Algorithms, opts.Timeout)
		if version != "" && res.Version == "" {
			res.Version = version
		}
		var neg *ssh.AlgorithmNegotiationError
		switch {
		case err == nil:
			if !slices.ContainsFunc(res.Keys, func(k Key) bool { return k.Type == key.Type }) {
				res.Keys = append(res.Keys, key)
			}
		case errors.As(err, &neg) && neg.What == "host key":
			notOffered = append(notOffered, f.Name)
		case ReasonOf(err) != nav1.SSHDHandshakeFailedReason:
			// The server cannot be reached, is too slow or does not speak
			// SSH: nothing it said is kept, and another family would fail
			// the same way.
			return Result{Address: addr}, err
		default:
			// This family failed (for example a key too long to report);
			// the others may still succeed.
			lastErr = err
		}
	}
	if len(res.Keys) > 0 {
		return res, nil
	}
	if lastErr != nil {
		return res, lastErr
	}
	return res, &Error{Reason: nav1.NoHostKeysReason, Address: addr,
		Err: fmt.Errorf("the server offers no host key of the families %s", strings.Join(notOffered, ", "))}
}

// errKeyTaken aborts a handshake once the host key is known.
var errKeyTaken = errors.New("host key taken; not authenticating")

// handshake runs one SSH handshake offering algorithms and returns the host
// key the server proved it holds, and its version string.
func handshake(ctx context.Context, addr string, algorithms []string, timeout time.Duration) (Key, string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return Key{}, "", dialError(addr, err, timeout)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return Key{}, "", &Error{Reason: nav1.SSHDHandshakeFailedReason, Address: addr, Err: fmt.Errorf("setting deadline: %w", err)}
	}
	// The context's end (a stop, not the deadline) also ends the handshake.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	rec := &recordingConn{Conn: conn, left: maxReadBytes}
	var taken *Key
	cfg := &ssh.ClientConfig{
		User:              "nodeaccess-hostkeys",
		HostKeyAlgorithms: algorithms,
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			k := Key{Type: key.Type(), Data: base64.StdEncoding.EncodeToString(key.Marshal()), Fingerprint: ssh.FingerprintSHA256(key)}
			taken = &k
			return errKeyTaken
		},
		Timeout: timeout,
	}
	_, _, _, err = ssh.NewClientConn(rec, addr, cfg)
	version := rec.version()
	if taken != nil {
		if len(taken.Data) > nav1.MaxHostKeyLength {
			return Key{}, version, &Error{Reason: nav1.SSHDHandshakeFailedReason, Address: addr,
				Err: fmt.Errorf("the %s host key is longer than %d bytes", taken.Type, nav1.MaxHostKeyLength)}
		}
		return *taken, version, nil
	}
	if err == nil {
		// Authenticated without a host key check: cannot happen, since the
		// callback always refuses.
		return Key{}, version, &Error{Reason: nav1.SSHDHandshakeFailedReason, Address: addr, Err: errors.New("handshake ended without a host key")}
	}
	var neg *ssh.AlgorithmNegotiationError
	timedOut := errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() != nil
	switch {
	case version == "" && timedOut && len(rec.rec) == 0:
		return Key{}, "", &Error{Reason: nav1.SSHDTimeoutReason, Address: addr, Err: fmt.Errorf("no SSH version string within %s", timeout)}
	case version == "":
		// It answered, or closed the connection, with something else than
		// an SSH version string: what it sent is not repeated.
		return Key{}, "", &Error{Reason: nav1.NotAnSSHServerReason, Address: addr, Err: errors.New("the server did not answer with an SSH version string")}
	case errors.As(err, &neg) && neg.What == "host key":
		return Key{}, version, neg
	case timedOut:
		return Key{}, version, &Error{Reason: nav1.SSHDTimeoutReason, Address: addr, Err: fmt.Errorf("the SSH handshake did not finish within %s", timeout)}
	case rec.exhausted():
		return Key{}, version, &Error{Reason: nav1.SSHDHandshakeFailedReason, Address: addr, Err: fmt.Errorf("the server sent more than %d bytes during the handshake", maxReadBytes)}
	}
	return Key{}, version, &Error{Reason: nav1.SSHDHandshakeFailedReason, Address: addr, Err: fmt.Errorf("SSH handshake: %w", err)}
}

func dialError(addr string, err error, timeout time.Duration) error {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return &Error{Reason: nav1.SSHDTimeoutReason, Address: addr, Err: fmt.Errorf("connecting: no answer within %s", timeout)}
	case errors.Is(err, syscall.ECONNREFUSED):
		return &Error{Reason: nav1.SSHDUnreachableReason, Address: addr, Err: errors.New("connecting: connection refused (is sshd listening there?)")}
	}
	return &Error{Reason: nav1.SSHDUnreachableReason, Address: addr, Err: fmt.Errorf("connecting: %w", err)}
}

// recordingConn bounds what is read from the peer and keeps the first bytes
// read, to find the version string in.
type recordingConn struct {
	net.Conn
	left int
	rec  []byte
	hit  bool
}

var errTooMuch = errors.New("peer sent too much")

func (c *recordingConn) Read(p []byte) (int, error) {
	if c.left <= 0 {
		c.hit = true
		return 0, errTooMuch
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.Conn.Read(p)
	c.left -= n
	if keep := min(n, maxRecordedBytes-len(c.rec)); keep > 0 {
		c.rec = append(c.rec, p[:keep]...)
	}
	return n, err
}

func (c *recordingConn) exhausted() bool { return c.hit }

// version returns the peer's version line, sanitised, or "" when none was read.
func (c *recordingConn) version() string {
	lines := bytes.Split(c.rec, []byte("\n"))
	// The last piece is not terminated: not a version string yet.
	for _, line := range lines[:len(lines)-1] {
		if bytes.HasPrefix(line, []byte("SSH-")) {
			return Sanitise(string(bytes.TrimSuffix(line, []byte("\r"))))
		}
	}
	return ""
}

// Sanitise reduces a version string to printable ASCII (every other byte
// becomes '?') and to at most nav1.MaxSSHDVersionLength bytes.
func Sanitise(s string) string {
	if len(s) > nav1.MaxSSHDVersionLength {
		s = s[:nav1.MaxSSHDVersionLength]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}

var _ io.Reader = (*recordingConn)(nil)

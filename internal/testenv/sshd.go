package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SSHD is a real OpenSSH server (Debian's openssh-server) on 127.0.0.1 for
// tests. It runs in a private mount namespace in which /run and /var/log are
// empty tmpfs mounts and, when it serves a host root, /etc/passwd,
// /etc/group, /etc/shadow and /home come from that host root: the machine's
// own files are never changed, and the mounts vanish with the process.
type SSHD struct {
	// Port is the loopback port sshd listens on.
	Port int
	// Dir holds its configuration, host keys and log.
	Dir string

	keyTypes []string
	hostRoot string
	cmd      *exec.Cmd
	exited   chan struct{}
}

// SSHDOptions configure StartSSHD.
type SSHDOptions struct {
	// HostKeyTypes are the host key types generated with ssh-keygen
	// ("ed25519", "ecdsa", "rsa"); ed25519 alone when empty.
	HostKeyTypes []string
	// HostRoot, when set, is a host root made by NewHost whose accounts may
	// log in with the keys of their .ssh/authorized_keys.
	HostRoot string
}

// EnsureSSH installs openssh-server and openssh-client with the project's
// hack/node-packages.sh when sshd, ssh or ssh-keygen is missing.
func EnsureSSH(t testing.TB) {
	t.Helper()
	for _, bin := range []string{"/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"} {
		if _, err := os.Stat(bin); err == nil {
			continue
		}
		cmd := exec.Command(filepath.Join(RepoRoot(), "hack", "node-packages.sh"), "openssh-server", "openssh-client")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("installing openssh-server and openssh-client: %v\n%s", err, out)
		}
		return
	}
}

// StartSSHD starts sshd with freshly generated host keys; it stops at the
// end of the test.
func StartSSHD(t testing.TB, opts SSHDOptions) *SSHD {
	t.Helper()
	EnsureSSH(t)
	if len(opts.HostKeyTypes) == 0 {
		opts.HostKeyTypes = []string{"ed25519"}
	}
	s := &SSHD{Dir: t.TempDir(), keyTypes: opts.HostKeyTypes, hostRoot: opts.HostRoot}
	s.generateHostKeys(t)
	if opts.HostRoot != "" {
		s.writeAccounts(t)
	}
	var lastErr error
	for range 5 {
		s.Port = freePort(t)
		if lastErr = s.start(); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("starting sshd: %v", lastErr)
	return nil
}

// Addr is sshd's host:port.
func (s *SSHD) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// HostKey returns the public key line ("TYPE BASE64 COMMENT") and the
// SHA256 fingerprint, as ssh-keygen -l prints it, of the host key of type typ.
func (s *SSHD) HostKey(t testing.TB, typ string) (pub, fingerprint string) {
	t.Helper()
	path := filepath.Join(s.Dir, "host_"+typ+"_key.pub")
	data, err := os.ReadFile(path)
	check(t, err)
	out, err := exec.Command("ssh-keygen", "-l", "-E", "sha256", "-f", path).Output()
	check(t, err)
	fields := strings.Fields(string(out))
	if len(fields) < 2 || !strings.HasPrefix(fields[1], "SHA256:") {
		t.Fatalf("ssh-keygen -l printed %q", out)
	}
	return strings.TrimSpace(string(data)), fields[1]
}

// ReplaceHostKeys generates new host keys of the same types and restarts
// sshd with them on the same port, as a re-provisioned node would come back.
func (s *SSHD) ReplaceHostKeys(t testing.TB) {
	t.Helper()
	s.Stop()
	for _, typ := range s.keyTypes {
		path := filepath.Join(s.Dir, "host_"+typ+"_key")
		check(t, os.Remove(path))
		check(t, os.Remove(path+".pub"))
	}
	s.generateHostKeys(t)
	if err := s.start(); err != nil {
		t.Fatalf("restarting sshd: %v", err)
	}
}

// Log returns what sshd logged so far.
func (s *SSHD) Log() string {
	data, _ := os.ReadFile(filepath.Join(s.Dir, "sshd.log"))
	return string(data)
}

// Stop stops sshd and every session process it started, and waits for them.
func (s *SSHD) Stop() {
	if s.cmd == nil {
		return
	}
	// sshd and its session processes are one process group of its own.
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
	s.cmd = nil
}

func (s *SSHD) generateHostKeys(t testing.TB) {
	t.Helper()
	for _, typ := range s.keyTypes {
		path := filepath.Join(s.Dir, "host_"+typ+"_key")
		args := []string{"-q", "-t", typ, "-N", "", "-C", "test-host", "-f", path}
		if typ == "rsa" {
			args = append(args, "-b", "3072")
		}
		if out, err := exec.Command("ssh-keygen", args...).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen -t %s: %v\n%s", typ, err, out)
		}
	}
}

// writeAccounts writes the passwd, group and shadow sshd sees: the host
// root's accounts, plus the privilege separation user sshd needs.
func (s *SSHD) writeAccounts(t testing.TB) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(s.hostRoot, "etc", "passwd"))
	check(t, err)
	var passwd, group, shadow strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) != 7 || f[0] == "sshd" {
			continue
		}
		fmt.Fprintln(&passwd, sc.Text())
		fmt.Fprintf(&group, "%s:x:%s:\n", f[0], f[3])
		// "*": no password, but not locked (a locked account may not log
		// in with a key either).
		fmt.Fprintf(&shadow, "%s:*:19000:0:99999:7:::\n", f[0])
	}
	fmt.Fprintln(&passwd, "sshd:x:102:65534::/run/sshd:/usr/sbin/nologin")
	fmt.Fprintln(&group, "nogroup:x:65534:")
	fmt.Fprintln(&shadow, "sshd:*:19000:0:99999:7:::")
	check(t, os.WriteFile(filepath.Join(s.Dir, "passwd"), []byte(passwd.String()), 0o644))
	check(t, os.WriteFile(filepath.Join(s.Dir, "group"), []byte(group.String()), 0o644))
	check(t, os.WriteFile(filepath.Join(s.Dir, "shadow"), []byte(shadow.String()), 0o640))
}

func (s *SSHD) start() error {
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "Port %d\nListenAddress 127.0.0.1\nPidFile %s\n", s.Port, filepath.Join(s.Dir, "sshd.pid"))
	for _, typ := range s.keyTypes {
		fmt.Fprintf(&cfg, "HostKey %s\n", filepath.Join(s.Dir, "host_"+typ+"_key"))
	}
	cfg.WriteString("StrictModes yes\nUsePAM no\nPubkeyAuthentication yes\nPasswordAuthentication no\n" +
		"KbdInteractiveAuthentication no\nAuthorizedKeysFile .ssh/authorized_keys\nPermitRootLogin no\n" +
		"X11Forwarding no\nPrintMotd no\nPrintLastLog no\nUseDNS no\nLogLevel VERBOSE\n")
	conf := filepath.Join(s.Dir, "sshd_config")
	if err := os.WriteFile(conf, []byte(cfg.String()), 0o600); err != nil {
		return fmt.Errorf("writing sshd_config: %w", err)
	}
	// Inside the namespace only: an empty /run (with sshd's privilege
	// separation directory) and /var/log, and the host root's accounts.
	script := "mount -t tmpfs -o mode=755 tmpfs /run\nmkdir -m 755 /run/sshd\nmount -t tmpfs -o mode=755 tmpfs /var/log\n"
	if s.hostRoot != "" {
		for _, f := range []string{"passwd", "group", "shadow"} {
			script += fmt.Sprintf("mount --bind %q /etc/%s\n", filepath.Join(s.Dir, f), f)
		}
		script += fmt.Sprintf("mount --bind %q /home\n", filepath.Join(s.hostRoot, "home"))
	}
	script += fmt.Sprintf("exec /usr/sbin/sshd -D -e -f %q\n", conf)
	logFile, err := os.OpenFile(filepath.Join(s.Dir, "sshd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening sshd log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-ec", script)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting sshd: %w", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()
	// Ready when it answers with its version string.
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-s.exited:
			s.cmd = nil
			return fmt.Errorf("sshd exited at start: %s", s.Log())
		default:
		}
		if err := sayHello(s.Addr()); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("sshd not answering after 20s: %w; log: %s", err, s.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sayHello reads an SSH version string from addr.
func sayHello(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "SSH-") {
		return errors.New("not an SSH version string")
	}
	return nil
}

// freePort returns a loopback port nothing listens on now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

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

	// LogDir, with Syslog, is the directory standing for the node's
	// /var/log, where rsyslogd writes auth.log.
	LogDir string

	keyTypes []string
	hostRoot string
	syslog   bool
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
	// Syslog makes sshd log as a node's sshd does: through syslog(3) to a
	// private rsyslogd (Debian's rsyslog), which writes the auth facility
	// into auth.log of LogDir: the host root's var/log, or a directory of
	// the test without a host root. Without it sshd logs to its own stderr.
	Syslog bool
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
	s := &SSHD{Dir: t.TempDir(), keyTypes: opts.HostKeyTypes, hostRoot: opts.HostRoot, syslog: opts.Syslog}
	if opts.Syslog {
		EnsureRsyslog(t)
		s.LogDir = filepath.Join(s.Dir, "log")
		if opts.HostRoot != "" {
			s.LogDir = filepath.Join(opts.HostRoot, "var", "log")
		}
		check(t, os.MkdirAll(s.LogDir, 0o755))
	}
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

// Log returns what sshd logged so far (with Syslog: what it wrote to
// stderr, then auth.log).
func (s *SSHD) Log() string {
	data, _ := os.ReadFile(filepath.Join(s.Dir, "sshd.log"))
	if s.syslog {
		auth, _ := os.ReadFile(s.AuthLog())
		data = append(data, auth...)
	}
	return string(data)
}

// AuthLog is the path of the auth.log rsyslogd writes, with Syslog.
func (s *SSHD) AuthLog() string { return filepath.Join(s.LogDir, "auth.log") }

// EnsureRsyslog installs Debian's rsyslog with the project's
// hack/node-packages.sh when rsyslogd is missing.
func EnsureRsyslog(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/rsyslogd"); err == nil {
		return
	}
	cmd := exec.Command(filepath.Join(RepoRoot(), "hack", "node-packages.sh"), "rsyslog")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("installing rsyslog: %v\n%s", err, out)
	}
}

// ReopenLogs tells rsyslogd to reopen its files, as logrotate's
// postrotate does after renaming them, and waits until rsyslogd has closed
// every file of LogDir it had open: its next message creates a new file.
// (rsyslogd opens a file again only when it next writes to it, so waiting
// for the new file would wait for a message that may never come.)
func (s *SSHD) ReopenLogs(t testing.TB) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(s.Dir, "rsyslogd.pid"))
	check(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	check(t, err)
	logs := map[uint64]string{}
	entries, err := os.ReadDir(s.LogDir)
	check(t, err)
	for _, e := range entries {
		if fi, err := os.Stat(filepath.Join(s.LogDir, e.Name())); err == nil && fi.Mode().IsRegular() {
			logs[fi.Sys().(*syscall.Stat_t).Ino] = e.Name()
		}
	}
	check(t, syscall.Kill(pid, syscall.SIGHUP))
	Eventually(t, 10*time.Second, "rsyslogd closed its files after the HUP", func() error {
		fds, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "fd", "*"))
		for _, fd := range fds {
			if fi, err := os.Stat(fd); err == nil && fi.Mode().IsRegular() {
				if name, ok := logs[fi.Sys().(*syscall.Stat_t).Ino]; ok {
					return fmt.Errorf("rsyslogd still holds %s", name)
				}
			}
		}
		return nil
	})
}

// Syslog sends one message to sshd's syslog daemon, with the tag given
// (for example "sshd[1234]"), as a process of uid would with logger(1):
// how a local user forges a line.
func (s *SSHD) Syslog(t testing.TB, uid int, tag, message string) {
	t.Helper()
	if s.cmd == nil || !s.syslog {
		t.Fatal("sshd does not run with Syslog")
	}
	id := strconv.Itoa(uid)
	out, err := exec.Command("nsenter", "--target", strconv.Itoa(s.cmd.Process.Pid), "--mount",
		"setpriv", "--reuid="+id, "--regid="+id, "--clear-groups", "logger", "--id=0", "-p", "auth.info", "-t", tag, message).CombinedOutput()
	if err != nil {
		t.Fatalf("logger: %v\n%s", err, out)
	}
}

// PID is sshd's listener process: session processes are its children.
func (s *SSHD) PID() int { return s.cmd.Process.Pid }

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
	if s.syslog {
		script += s.syslogScript()
	}
	if s.hostRoot != "" {
		for _, f := range []string{"passwd", "group", "shadow"} {
			script += fmt.Sprintf("mount --bind %q /etc/%s\n", filepath.Join(s.Dir, f), f)
		}
		script += fmt.Sprintf("mount --bind %q /home\n", filepath.Join(s.hostRoot, "home"))
	}
	logTo := "-e " // sshd's own stderr
	if s.syslog {
		logTo = ""
	}
	script += fmt.Sprintf("exec /usr/sbin/sshd -D %s-f %q\n", logTo, conf)
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

// syslogScript starts rsyslogd inside sshd's mount namespace: /dev is a
// private tmpfs holding the few devices sshd needs and the /dev/log socket
// rsyslogd listens on, and /var/log is LogDir. It writes the auth facility
// as Debian's rsyslog does (traditional format, file mode 0640).
func (s *SSHD) syslogScript() string {
	conf := filepath.Join(s.Dir, "rsyslog.conf")
	cfg := `global(workDirectory="/run")
module(load="imuxsock" SysSock.Name="/dev/log" SysSock.RateLimit.Interval="0")
module(load="builtin:omfile" fileCreateMode="0640" template="RSYSLOG_TraditionalFileFormat")
auth,authpriv.* action(type="omfile" file="/var/log/auth.log")
`
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		panic(err) // the test's own directory
	}
	script := "mkdir /run/hostdev\nmount --bind /dev /run/hostdev\nmount -t tmpfs -o mode=755 tmpfs /dev\n" +
		"for d in null zero full random urandom tty; do touch /dev/$d; mount --bind /run/hostdev/$d /dev/$d; done\n" +
		// Terminals from a devpts of the namespace's own.
		"mkdir /dev/pts\nmount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts\nln -s pts/ptmx /dev/ptmx\n"
	script += fmt.Sprintf("mount --bind %q /var/log\n", s.LogDir)
	script += fmt.Sprintf("rm -f %q\n/usr/sbin/rsyslogd -n -f %q -i %q &\n", filepath.Join(s.Dir, "rsyslogd.pid"), conf, filepath.Join(s.Dir, "rsyslogd.pid"))
	script += "n=0; while [ ! -S /dev/log ]; do n=$((n+1)); [ $n -lt 400 ] || { echo rsyslogd did not start >&2; exit 1; }; sleep 0.05; done\n"
	return script
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

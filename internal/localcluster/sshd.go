package localcluster

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// The machine's OpenSSH and rsyslog (Debian's packages; see hack/node-packages.sh).
const (
	sshdBin     = "/usr/sbin/sshd"
	sshBin      = "/usr/bin/ssh"
	rsyslogdBin = "/usr/sbin/rsyslogd"
	journaldBin = "/lib/systemd/systemd-journald"
	// journaldConf is the file journald reads its settings from; with
	// Journald a file of the node's own is bind-mounted over it, in the
	// namespaces only.
	journaldConf = "/etc/systemd/journald.conf"
	// journalDir is journald's runtime directory: its sockets.
	journalDir = "/run/systemd/journal"
	// dgramQueue is the queue of datagrams a local socket holds before
	// a sender blocks or, sending without waiting as journald forwards
	// to rsyslogd, loses the message. A network namespace starts with the
	// kernel's 10; systemd raises it to 512 at boot, before any socket
	// is made, and so do the namespaces before the node's syslog starts.
	dgramQueue     = 512
	dgramQueueFile = "/proc/sys/net/unix/max_dgram_qlen"
	// AuthLog is where the node's sshd logs, through rsyslog, in the
	// namespaces' /var/log.
	AuthLog = "/var/log/auth.log"
)

// SSHDOptions say where the node's sshd listens and keeps its files.
type SSHDOptions struct {
	// Dir holds sshd's and rsyslog's configuration, the host key, PID files and logs.
	Dir string
	// Address and Port are where sshd listens (the node IP, port 22 when 0).
	Address string
	Port    int
	// RootKeyLogins lets root log in with a key (PermitRootLogin
	// prohibit-password); by default root may not log in at all.
	RootKeyLogins bool
	// Journald puts systemd-journald (Debian's systemd package) between
	// sshd and rsyslogd, as on a Debian node with systemd: /dev/log is
	// journald's socket, journald keeps its journal under the namespaces'
	// /var/log/journal and forwards every message to rsyslogd's socket
	// (ForwardToSyslog), which writes auth.log as before.
	Journald bool
}

// SSHD is Debian's OpenSSH server running as a node's sshd would, inside
// the private namespaces: it reads their /etc (passwd, shadow, with the
// test accounts) and /home, with its own host key, StrictModes, public
// keys only and no PAM, and it logs through an rsyslogd of its own into
// the namespaces' /var/log/auth.log.
type SSHD struct {
	opts       SSHDOptions
	sshd       *proc
	rsyslog    *proc
	journald   *proc
	confMount  bool
	knownHosts string
}

// StartSSHD starts rsyslogd and sshd and waits until sshd answers.
func StartSSHD(ctx context.Context, opts SSHDOptions) (_ *SSHD, err error) {
	if !InPrivateNamespaces() {
		return nil, errors.New("the node's sshd runs only inside private namespaces (RunInPrivateNamespaces)")
	}
	if opts.Port == 0 {
		opts.Port = 22
	}
	programs := []string{sshdBin, sshBin, rsyslogdBin}
	if opts.Journald {
		programs = append(programs, journaldBin, journaldConf)
	}
	for _, p := range programs {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("the node's sshd needs %s (hack/node-packages.sh installs it)", p)
		}
	}
	if err := checkPrivsepUser(); err != nil {
		return nil, err
	}
	// Each socket takes the value when it is made: first, then.
	if err := raiseDatagramQueue(); err != nil {
		return nil, err
	}
	s := &SSHD{opts: opts, knownHosts: filepath.Join(opts.Dir, "known_hosts")}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	if err := os.MkdirAll(filepath.Join(opts.Dir, "rsyslog"), 0o700); err != nil {
		return nil, err
	}
	// sshd's privilege separation directory, in the namespaces' /run.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, err
	}
	hostKey := filepath.Join(opts.Dir, "ssh_host_ed25519_key")
	pub, err := WriteKeyPair(hostKey, "nodeaccess-node-host")
	if err != nil {
		return nil, err
	}
	permitRoot := "no"
	if opts.RootKeyLogins {
		permitRoot = "prohibit-password"
	}
	host := opts.Address
	if opts.Port != 22 {
		host = "[" + opts.Address + "]:" + strconv.Itoa(opts.Port)
	}
	if err := os.WriteFile(s.knownHosts, []byte(host+" "+pub+"\n"), 0o600); err != nil {
		return nil, err
	}
	// rsyslogd listens on /dev/log, or, behind journald, on the socket
	// journald forwards to.
	syslogSocket := "/dev/log"
	if opts.Journald {
		syslogSocket = journalDir + "/syslog"
		if err := os.MkdirAll(journalDir, 0o755); err != nil {
			return nil, err
		}
	}
	files := map[string]string{
		"rsyslog.conf": `# The node's syslog: sshd's authentication messages into /var/log/auth.log.
global(workDirectory="` + filepath.Join(opts.Dir, "rsyslog") + `")
module(load="imuxsock" SysSock.Name="` + syslogSocket + `")
auth,authpriv.* action(type="omfile" file="` + AuthLog + `" fileCreateMode="0640")
`,
		"sshd_config": `# The node's sshd: its own host key, keys only, no PAM, StrictModes.
Port ` + strconv.Itoa(opts.Port) + `
ListenAddress ` + opts.Address + `
HostKey ` + hostKey + `
PidFile ` + filepath.Join(opts.Dir, "sshd.pid") + `
StrictModes yes
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys
PermitRootLogin ` + permitRoot + `
SyslogFacility AUTH
LogLevel VERBOSE
UseDNS no
PrintMotd no
PrintLastLog no
Subsystem sftp internal-sftp
`,
		"journald.conf": `# The node's journald: a persistent journal in /var/log/journal, every
# message forwarded to rsyslogd; the kernel's log neither read nor written.
[Journal]
Storage=persistent
ForwardToSyslog=yes
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
ReadKMsg=no
`,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(opts.Dir, name), []byte(content), 0o600); err != nil {
			return nil, err
		}
	}
	if s.rsyslog, err = startLogged(filepath.Join(opts.Dir, "rsyslogd.log"), nil, rsyslogdBin, "-n", "-f", filepath.Join(opts.Dir, "rsyslog.conf"), "-i", filepath.Join(opts.Dir, "rsyslogd.pid")); err != nil {
		return nil, err
	}
	if err := waitSocket(ctx, s.rsyslog, "rsyslogd", syslogSocket, filepath.Join(opts.Dir, "rsyslogd.log")); err != nil {
		return nil, err
	}
	if opts.Journald {
		if err := s.startJournald(ctx); err != nil {
			return nil, err
		}
	}
	// -D: stay in the foreground; without -e it logs to syslog.
	if s.sshd, err = startLogged(filepath.Join(opts.Dir, "sshd.log"), nil, sshdBin, "-D", "-f", filepath.Join(opts.Dir, "sshd_config")); err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(opts.Address, strconv.Itoa(opts.Port))
	if err := waitFor(ctx, 20*time.Second, "sshd on "+addr, func() error {
		if s.sshd.exited() {
			return fmt.Errorf("sshd %w (see %s and %s)", errExited, filepath.Join(opts.Dir, "sshd.log"), AuthLog)
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		banner := make([]byte, 4)
		if _, err := c.Read(banner); err != nil || string(banner) != "SSH-" {
			return fmt.Errorf("no SSH banner (%v)", err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return s, nil
}

// startJournald starts systemd-journald with the node's journald.conf
// and makes /dev/log its socket.
func (s *SSHD) startJournald(ctx context.Context) error {
	if err := os.MkdirAll("/var/log/journal", 0o755); err != nil {
		return err
	}
	if err := unix.Mount(filepath.Join(s.opts.Dir, "journald.conf"), journaldConf, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("mounting the node's journald.conf: %w", err)
	}
	s.confMount = true
	logFile := filepath.Join(s.opts.Dir, "journald.log")
	var err error
	// Its own messages to its standard error, not the kernel's log.
	if s.journald, err = startLogged(logFile, []string{"SYSTEMD_LOG_TARGET=console"}, journaldBin); err != nil {
		return err
	}
	if err := waitSocket(ctx, s.journald, "journald", journalDir+"/dev-log", logFile); err != nil {
		return err
	}
	// What systemd-journal-flush does at boot: from now on the journal is
	// written to /var/log/journal, not /run/log/journal.
	if err := syscall.Kill(s.journald.cmd.Process.Pid, syscall.SIGUSR1); err != nil {
		return fmt.Errorf("telling journald to flush: %w", err)
	}
	if err := waitFor(ctx, 20*time.Second, "journald's journal in /var/log/journal", func() error {
		if files, _ := filepath.Glob("/var/log/journal/*/system.journal"); len(files) == 0 {
			return errors.New("no system.journal")
		}
		return nil
	}); err != nil {
		return err
	}
	// As systemd's systemd-journald-dev-log.socket makes it.
	if err := os.Symlink(journalDir+"/dev-log", "/dev/log"); err != nil {
		return fmt.Errorf("linking /dev/log to journald: %w", err)
	}
	return nil
}

// raiseDatagramQueue raises the network namespace's datagram queue of
// local sockets to dgramQueue. With the kernel's 10 a burst of sshd's
// lines while rsyslogd is busy overflows the queue journald forwards to,
// and journald drops the rest: a login sshd logged never reaches auth.log.
func raiseDatagramQueue() error {
	data, err := os.ReadFile(dgramQueueFile)
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && n >= dgramQueue {
		return nil
	}
	if err := os.WriteFile(dgramQueueFile, []byte(strconv.Itoa(dgramQueue)+"\n"), 0o644); err != nil {
		return fmt.Errorf("raising the namespaces' datagram queue: %w", err)
	}
	return nil
}

// waitSocket waits until the program p made the socket path.
func waitSocket(ctx context.Context, p *proc, name, path, logFile string) error {
	return waitFor(ctx, 20*time.Second, name+"'s "+path, func() error {
		if p.exited() {
			return fmt.Errorf("%s %w (see %s)", name, errExited, logFile)
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSocket == 0 {
			return errors.New(path + " is not a socket")
		}
		return nil
	})
}

// checkPrivsepUser refuses to start without sshd's privilege separation
// account, which Debian's openssh-server adds to the machine's /etc/passwd.
func checkPrivsepUser() error {
	data, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "sshd:") {
			return nil
		}
	}
	return errors.New("the node's /etc/passwd has no sshd account (is openssh-server installed? hack/node-packages.sh)")
}

// Login runs `ssh` as root from inside the namespaces: user@address with
// the private key in identity, in batch mode (no password, no prompt),
// checking the host key, and returns the output and ssh's error (exit
// status 255 for a refused login).
func (s *SSHD) Login(ctx context.Context, user, identity string, command ...string) ([]byte, error) {
	args := []string{"-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + s.knownHosts, "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
		"-i", identity, "-p", strconv.Itoa(s.opts.Port), user + "@" + s.opts.Address, "--"}
	cmd := exec.CommandContext(ctx, sshBin, append(args, command...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// KnownHosts is a known_hosts file naming sshd's own host key at its
// address, written when it started: the truth that a published host key
// is checked against.
func (s *SSHD) KnownHosts() string { return s.knownHosts }

// Processes are sshd's, rsyslogd's and journald's PIDs, with their names.
func (s *SSHD) Processes() map[int]string {
	out := map[int]string{}
	for name, p := range map[string]*proc{"sshd": s.sshd, "rsyslogd": s.rsyslog, "systemd-journald": s.journald} {
		if p != nil && !p.exited() {
			out[p.cmd.Process.Pid] = name
		}
	}
	return out
}

// ReopenLogs makes rsyslogd close and reopen its files (SIGHUP), as
// logrotate's postrotate does after renaming auth.log: until then it
// writes on into the renamed file.
func (s *SSHD) ReopenLogs() error {
	if s.rsyslog == nil || s.rsyslog.exited() {
		return errors.New("rsyslogd does not run")
	}
	if err := syscall.Kill(s.rsyslog.cmd.Process.Pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("signalling rsyslogd: %w", err)
	}
	return nil
}

// Stop stops sshd (and the sessions it runs), then journald and rsyslogd,
// and removes what journald needed.
func (s *SSHD) Stop() {
	defer func() {
		if s.confMount {
			_ = unix.Unmount(journaldConf, unix.MNT_DETACH)
			s.confMount = false
		}
		if s.opts.Journald {
			if target, err := os.Readlink("/dev/log"); err == nil && target == journalDir+"/dev-log" {
				_ = os.Remove("/dev/log")
			}
		}
	}()
	for _, p := range []*proc{s.sshd, s.journald, s.rsyslog} {
		if p == nil {
			continue
		}
		p.stopGroup(10 * time.Second)
	}
}

// WriteKeyPair writes a new ed25519 private key to path (0600, OpenSSH
// format) and its public key to path.pub, and returns the public key line.
func WriteKeyPair(path, comment string) (string, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return "", fmt.Errorf("encoding an ssh key: %w", err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return "", err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return "", err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " " + comment
	return line, os.WriteFile(path+".pub", []byte(line+"\n"), 0o644)
}

// startLogged starts a program in its own process group with its output
// in logFile, with env added to this process's environment; it dies with
// this process.
func startLogged(logFile string, env []string, bin string, args ...string) (*proc, error) {
	logf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", filepath.Base(bin), err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

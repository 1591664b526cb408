package localcluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Environment variables that carry a run into its private namespaces.
const (
	// privateRoleEnv is "init" in the namespaces' first process and
	// "inside" in the program it runs there.
	privateRoleEnv = "NODEACCESS_PRIVATE_NAMESPACES"
	// privateSpecEnv carries the PrivateOptions (JSON) to the init process.
	privateSpecEnv = "NODEACCESS_PRIVATE_SPEC"
)

// Account is a local account that exists only in the private namespaces:
// it is appended to their copy of /etc/passwd, /etc/group and /etc/shadow,
// with a home under their /home.
type Account struct {
	Name string
	// UID is its user and group ID.
	UID int
}

// PrivateOptions say what the private namespaces hold.
type PrivateOptions struct {
	// Dir holds the namespaces' own files: the copy of /etc, the homes, the
	// node's state directories. It must exist and be empty; the caller
	// removes it after the run.
	Dir string
	// Accounts are added to the copy of /etc.
	Accounts []Account
	// Dirs are more machine directories replaced, like /home, by empty
	// directories of the namespaces' own (more home roots, say /var/home);
	// one missing on the machine is made in an overlay of its parent.
	Dirs []string
	// Keep are paths that stay visible as they are on the machine although
	// a directory above them is replaced (the repository, Go's caches when
	// they live under /root or /home). RunInPrivateNamespaces adds the
	// working directory and Go's own directories.
	Keep []string
}

// InPrivateNamespaces says whether this process is the program that
// RunInPrivateNamespaces runs inside the namespaces.
func InPrivateNamespaces() bool { return os.Getenv(privateRoleEnv) == "inside" }

// RunInPrivateNamespaces runs this program again, with the same arguments,
// in new network, mount and PID namespaces, and returns its exit code.
// Creating them needs root.
//
// Inside, only loopback is up (nothing listens beyond the namespace, no
// port collides with the machine's, no traffic leaves), and the file
// system is the machine's with these replaced, in the namespace alone:
// /etc by a copy of the machine's /etc with opts.Accounts appended; /home,
// /root, /var/log, /var/lib/kubelet, /var/lib/containerd, /var/lib/cni and
// /usr/libexec/kubernetes by directories under opts.Dir (directories that
// do not exist on the machine are made in an overlay of their parent, so
// the machine's tree is never written); /run by a tmpfs; /dev by a tmpfs
// holding the usual devices, a private devpts and /dev/shm (so /dev/log is
// the namespace's own); /proc and /sys by instances of the new namespaces,
// with the machine's cgroup hierarchies. Mounts made inside never propagate
// out. When the program exits, its namespace's init exits, the kernel kills
// whatever is left in the PID namespace, and the namespaces with their
// mounts and links vanish.
//
// The first process in the namespaces is this program again (see
// PrivateNamespaceInit), which makes the mounts before it runs the program.
// Its PID is written to opts.Dir/init.pid while it runs, so that a person
// can enter the namespaces: nsenter -t PID -n -m kubectl ...
func RunInPrivateNamespaces(opts PrivateOptions) (int, error) {
	if opts.Dir == "" {
		return 1, errors.New("private namespaces need a directory of their own")
	}
	var err error
	if opts.Dir, err = filepath.Abs(opts.Dir); err != nil {
		return 1, err
	}
	opts.Keep = append(opts.Keep, goDirs()...)
	if wd, err := os.Getwd(); err == nil {
		opts.Keep = append(opts.Keep, wd)
	}
	spec, err := json.Marshal(opts)
	if err != nil {
		return 1, err
	}
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), privateRoleEnv+"=init", privateSpecEnv+"="+string(spec))
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		Pdeathsig:  syscall.SIGKILL,
	}
	pidFile := filepath.Join(opts.Dir, "init.pid")
	if err = cmd.Start(); err == nil {
		_ = os.WriteFile(pidFile, []byte(fmt.Sprintln(cmd.Process.Pid)), 0o644)
		err = cmd.Wait()
		_ = os.Remove(pidFile)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exit):
		return exit.ExitCode(), nil
	default:
		return 1, fmt.Errorf("starting in private namespaces (this needs root): %w", err)
	}
}

// PrivateNamespaceInit is the first process in the private namespaces:
// when this process is one, it makes the namespaces' mounts, brings
// loopback up, runs the program again as its only child, reaps every
// orphan until that child exits, and returns its exit code with ok true.
// Otherwise it returns ok false at once. Call it first in main or TestMain.
func PrivateNamespaceInit() (code int, ok bool) {
	if os.Getenv(privateRoleEnv) != "init" {
		return 0, false
	}
	var opts PrivateOptions
	if err := json.Unmarshal([]byte(os.Getenv(privateSpecEnv)), &opts); err != nil {
		fmt.Fprintln(os.Stderr, "private namespaces: reading the options:", err)
		return 1, true
	}
	if err := setUpNamespaces(opts); err != nil {
		fmt.Fprintln(os.Stderr, "private namespaces:", err)
		return 1, true
	}
	return runAsInit(), true
}

// setUpNamespaces makes the mounts and brings loopback up.
func setUpNamespaces(opts PrivateOptions) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making every mount private: %w", err)
	}
	if err := mountFileSystems(opts); err != nil {
		return err
	}
	return LoopbackUp()
}

// runAsInit runs the program as the child of this PID 1, forwards SIGTERM
// and SIGINT to it, and reaps every process until the child exits. It
// reaps with wait4(-1) because nothing else in this process starts children.
func runAsInit() int {
	wd, _ := os.Getwd()
	env := make([]string, 0, len(os.Environ()))
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, privateRoleEnv+"=") && !strings.HasPrefix(e, privateSpecEnv+"=") {
			env = append(env, e)
		}
	}
	env = append(env, privateRoleEnv+"=inside")
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	pid, err := syscall.ForkExec("/proc/self/exe", os.Args, &syscall.ProcAttr{
		Dir: wd, Env: env, Files: []uintptr{0, 1, 2},
		Sys: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "private namespaces: starting the program:", err)
		return 1
	}
	for s := range signals {
		if s != syscall.SIGCHLD {
			_ = syscall.Kill(pid, s.(syscall.Signal))
			continue
		}
		for {
			var ws syscall.WaitStatus
			reaped, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if reaped <= 0 || err != nil {
				break
			}
			if reaped == pid {
				if ws.Signaled() {
					return 128 + int(ws.Signal())
				}
				return ws.ExitStatus()
			}
		}
	}
	return 1
}

// goDirs are the Go toolchain's directories (GOROOT, the module and build
// caches, the go env file), which the program inside may need when they
// live under a replaced directory.
func goDirs() []string {
	out, err := exec.Command("go", "env", "GOROOT", "GOMODCACHE", "GOCACHE", "GOENV", "GOPATH").Output()
	if err != nil {
		return nil
	}
	var dirs []string
	for _, d := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if d = strings.TrimSpace(d); filepath.IsAbs(d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// LoopbackUp brings up the loopback interface, which starts down in a new
// network namespace.
func LoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening a socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("reading lo's flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	return nil
}

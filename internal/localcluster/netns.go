package localcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// privateNetworkEnv marks a process that RunInPrivateNetwork started.
const privateNetworkEnv = "NODEACCESS_PRIVATE_NETWORK"

// InPrivateNetwork says whether this process is the copy RunInPrivateNetwork started.
func InPrivateNetwork() bool { return os.Getenv(privateNetworkEnv) == "1" }

// RunInPrivateNetwork runs this program again, with the same arguments, in a
// new network namespace of its own, and returns its exit code. Some
// components (OLM's operators, opm) listen on every interface at fixed ports
// with no flag to change it; inside a private namespace with only loopback up
// they reach nothing beyond the machine and collide with nothing on it.
// Creating a network namespace needs root (CAP_SYS_ADMIN).
func RunInPrivateNetwork() (int, error) {
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), privateNetworkEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exit):
		return exit.ExitCode(), nil
	default:
		return 1, fmt.Errorf("starting in a private network namespace (this needs root): %w", err)
	}
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

package nodewriter

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// maxLinks bounds the symbolic links followed on the way to one home, as
// the kernel bounds them for one path.
const maxLinks = 40

// dirStep is one directory reached on the way to a home: an open
// descriptor, what fstat said of it, and its name.
type dirStep struct {
	fd   int
	st   unix.Stat_t
	name string
}

// openHome reaches the account's home from the host root one component at
// a time, never following a link implicitly: each directory is opened with
// O_NOFOLLOW relative to the descriptor of the one before, checked to be
// the inode inspected, and must pass sshd's StrictModes rule (owned by root
// or the user, not writable by group or others). A symbolic link on the way
// is followed only when it is owned by root and the directory holding it is
// owned by root and not writable by group or others: an administrator's
// /home -> var/home or /home/u -> /data/u works, a user's link never does.
// Absolute link targets start again from the host root; ".." never climbs
// above it. The home it returns is the directory reached, and its resolved
// host path; a home resolving to "/" or into a system directory is refused.
func (w *Writer) openHome(acct Account) (*os.Root, string, error) {
	fail := func(reason string, err error) (*os.Root, string, error) {
		return nil, "", &Error{Reason: reason, User: acct.Name, Path: acct.Home, Err: err}
	}
	rootFD, err := unix.Open(w.hostRoot, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(nav1.ReadFailedReason, fmt.Errorf("opening the host root: %w", err))
	}
	stack := []dirStep{{fd: rootFD}}
	defer func() {
		for _, s := range stack {
			unix.Close(s.fd)
		}
	}()
	if err := unix.Fstat(rootFD, &stack[0].st); err != nil {
		return fail(nav1.ReadFailedReason, fmt.Errorf("reading the host root: %w", err))
	}
	where := func() string {
		names := make([]string, 0, len(stack))
		for _, s := range stack[1:] {
			names = append(names, s.name)
		}
		return "/" + strings.Join(names, "/")
	}

	pending := strings.Split(strings.TrimPrefix(acct.Home, "/"), "/")
	links := 0
	for len(pending) > 0 {
		name := pending[0]
		pending = pending[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				unix.Close(stack[len(stack)-1].fd)
				stack = stack[:len(stack)-1]
			}
			continue
		}
		parent := stack[len(stack)-1]
		here := path.Join(where(), name)
		var st unix.Stat_t
		if err := unix.Fstatat(parent.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return fail(nav1.HomeNotFoundReason, fmt.Errorf("%s does not exist", here))
			}
			return fail(nav1.ReadFailedReason, fmt.Errorf("reading %s: %w", here, err))
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			if links++; links > maxLinks {
				return fail(nav1.UnsafePathReason, errors.New("too many symbolic links on the way to the home"))
			}
			if st.Uid != 0 {
				return fail(nav1.UnsafePathReason, fmt.Errorf("%s is a symbolic link owned by uid %d: only links made by root are followed", here, st.Uid))
			}
			if parent.st.Uid != 0 || parent.st.Mode&0o022 != 0 {
				return fail(nav1.UnsafePathReason, fmt.Errorf("%s is a symbolic link in a directory that root does not own alone (owner %d, mode %o): it is not followed", here, parent.st.Uid, parent.st.Mode&0o7777))
			}
			target, err := readlinkat(parent.fd, name)
			if err != nil {
				return fail(nav1.ReadFailedReason, fmt.Errorf("reading the link %s: %w", here, err))
			}
			if strings.HasPrefix(target, "/") {
				for _, s := range stack[1:] {
					unix.Close(s.fd)
				}
				stack = stack[:1]
			}
			pending = append(strings.Split(target, "/"), pending...)
		case unix.S_IFDIR:
			fd, err := unix.Openat(parent.fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return fail(nav1.UnsafePathReason, fmt.Errorf("%s changed while it was being opened: %w", here, err))
			}
			step := dirStep{fd: fd, name: name}
			if err := unix.Fstat(fd, &step.st); err != nil || step.st.Dev != st.Dev || step.st.Ino != st.Ino {
				unix.Close(fd)
				return fail(nav1.UnsafePathReason, fmt.Errorf("%s changed while it was being opened", here))
			}
			stack = append(stack, step)
			if err := strictModes(acct, here, int(step.st.Uid), step.st.Mode&0o777, true); err != nil {
				return nil, "", err
			}
		default:
			return fail(nav1.NotRegularFileReason, fmt.Errorf("%s is not a directory", here))
		}
	}

	resolved := where()
	if err := checkHomeLocation(resolved); err != nil {
		return fail(nav1.HomeUnsafeReason, fmt.Errorf("the home resolves to %s: %w", resolved, err))
	}
	// root's home is root's alone: another account's keys there would log in as root.
	if under(resolved, "/root") && (resolved != "/root" || acct.UID != 0 || !w.allowRoot) {
		return fail(nav1.HomeUnsafeReason, fmt.Errorf("the home resolves to %s, root's home", resolved))
	}
	// os.Root is opened by path; it must be the directory just walked.
	root, err := os.OpenRoot(path.Join(w.hostRoot, resolved))
	if err != nil {
		return fail(nav1.UnsafePathReason, fmt.Errorf("opening %s: %w", resolved, err))
	}
	fi, err := root.Stat(".")
	last := stack[len(stack)-1].st
	if st, ok := statOf(fi); err != nil || !ok || st.Dev != last.Dev || st.Ino != last.Ino {
		root.Close()
		return fail(nav1.UnsafePathReason, fmt.Errorf("%s changed while it was being opened", resolved))
	}
	return root, resolved, nil
}

// readlinkat reads a link's target, refusing absurdly long ones.
func readlinkat(dirFD int, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dirFD, name, buf)
	if err != nil {
		return "", err
	}
	if n >= len(buf) {
		return "", errors.New("link target too long")
	}
	return string(buf[:n]), nil
}

// statOf returns the device and inode of a FileInfo.
func statOf(fi os.FileInfo) (unix.Stat_t, bool) {
	if fi == nil {
		return unix.Stat_t{}, false
	}
	sys, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return unix.Stat_t{}, false
	}
	return unix.Stat_t{Dev: sys.Dev, Ino: sys.Ino}, true
}

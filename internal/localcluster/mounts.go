package localcluster

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// replacedDirs are the machine directories the private namespaces replace
// by directories of their own (under PrivateOptions.Dir), because a real
// node's kubelet, containerd, CNI plugins, sshd and rsyslog write there at
// paths they hard-code. /etc is replaced by a copy, /run by a tmpfs.
var replacedDirs = []string{
	"/home",
	"/root",
	"/var/log",
	"/var/lib/kubelet",
	"/var/lib/containerd",
	"/var/lib/cni",
	"/usr/libexec/kubernetes",
}

// mountKind is what a mountOp does.
type mountKind string

const (
	// bindMount mounts Source (a directory of the namespaces) on Target.
	bindMount mountKind = "bind"
	// tmpfsMount mounts a new tmpfs on Target.
	tmpfsMount mountKind = "tmpfs"
	// overlayMount makes Target writable without writing the machine's
	// directory: Target is the lower layer, Source holds upper and work.
	overlayMount mountKind = "overlay"
	// makeDir creates Target in a directory an earlier op made writable.
	makeDir mountKind = "mkdir"
)

// mountOp is one step of the namespaces' mount plan.
type mountOp struct {
	Kind   mountKind
	Target string
	Source string
}

// mountTarget is a directory to replace: by Source, or by a tmpfs when
// Source is empty.
type mountTarget struct {
	Path   string
	Source string
}

// mountPlan orders the replacement of targets, parents first. A target that
// does not exist is created first: inside an earlier target when it lies
// under one, otherwise in an overlay of its nearest existing ancestor
// (one overlay per ancestor), so the machine's tree is never written.
// exists says whether a path exists on the machine.
func mountPlan(dir string, targets []mountTarget, exists func(string) bool) []mountOp {
	sorted := append([]mountTarget(nil), targets...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	var ops []mountOp
	replaced := map[string]bool{} // targets already mounted
	overlaid := map[string]bool{} // ancestors already made writable
	created := map[string]bool{}  // directories made by earlier ops
	under := func(p string, set map[string]bool) bool {
		for q := p; ; q = filepath.Dir(q) {
			if set[q] {
				return true
			}
			if q == "/" {
				return false
			}
		}
	}
	for _, t := range sorted {
		if !exists(t.Path) && !created[t.Path] {
			// Walk up to an existing (or replaced, or created) ancestor.
			var missing []string
			anc := t.Path
			for ; !exists(anc) && !replaced[anc] && !created[anc] && anc != "/"; anc = filepath.Dir(anc) {
				missing = append(missing, anc)
			}
			if !under(anc, replaced) && !under(anc, overlaid) {
				ops = append(ops, mountOp{Kind: overlayMount, Target: anc, Source: filepath.Join(dir, "overlay", strings.TrimPrefix(anc, "/"))})
				overlaid[anc] = true
			}
			for i := len(missing) - 1; i >= 0; i-- {
				ops = append(ops, mountOp{Kind: makeDir, Target: missing[i]})
				created[missing[i]] = true
			}
		}
		if t.Source == "" {
			ops = append(ops, mountOp{Kind: tmpfsMount, Target: t.Path})
		} else {
			ops = append(ops, mountOp{Kind: bindMount, Target: t.Path, Source: t.Source})
		}
		replaced[t.Path] = true
	}
	return ops
}

// devices are the device nodes the namespaces' /dev holds, as on the
// machine: what containers and the node's daemons open.
var devices = []string{"null", "zero", "full", "random", "urandom", "tty", "kmsg", "fuse", "net/tun"}

// mountFileSystems makes the namespaces' file system (see
// RunInPrivateNamespaces). It runs in the new mount namespace, after every
// mount was made private.
func mountFileSystems(opts PrivateOptions) error {
	dir := opts.Dir
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting /proc: %w", err)
	}
	// Keep: bind what must stay visible aside before its parent is replaced.
	targets := []mountTarget{{Path: "/etc", Source: filepath.Join(dir, "etc")}, {Path: "/run"}}
	for _, d := range append(append([]string(nil), replacedDirs...), opts.Dirs...) {
		if d = filepath.Clean(d); !filepath.IsAbs(d) || d == "/" || d == "/etc" || d == "/run" || strings.HasPrefix(d, "/proc") || strings.HasPrefix(d, "/sys") || strings.HasPrefix(d, "/dev") {
			return fmt.Errorf("refusing to replace %q in the private namespaces", d)
		}
		targets = append(targets, mountTarget{Path: d, Source: filepath.Join(dir, strings.TrimPrefix(d, "/"))})
	}
	kept, err := stageKept(dir, opts.Keep, targets)
	if err != nil {
		return err
	}
	if err := copyEtc(filepath.Join(dir, "etc")); err != nil {
		return err
	}
	for _, t := range targets[2:] {
		if err := os.MkdirAll(t.Source, 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "root"), 0o700); err != nil {
		return err
	}
	if err := addAccounts(filepath.Join(dir, "etc"), filepath.Join(dir, "home"), opts.Accounts); err != nil {
		return err
	}
	exists := func(p string) bool { _, err := os.Lstat(p); return err == nil }
	for _, op := range mountPlan(dir, targets, exists) {
		if err := op.apply(); err != nil {
			return err
		}
	}
	if err := os.MkdirAll("/run/lock", 0o1777); err != nil {
		return err
	}
	if err := mountDev(); err != nil {
		return err
	}
	if err := mountSys(dir); err != nil {
		return err
	}
	return restoreKept(kept)
}

func (op mountOp) apply() error {
	var err error
	switch op.Kind {
	case makeDir:
		err = os.Mkdir(op.Target, 0o755)
	case tmpfsMount:
		err = unix.Mount("tmpfs", op.Target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755")
	case bindMount:
		err = unix.Mount(op.Source, op.Target, "", unix.MS_BIND|unix.MS_REC, "")
	case overlayMount:
		if op.Target == "/" {
			return fmt.Errorf("refusing to lay an overlay over / (the machine lacks a parent of a replaced directory)")
		}
		upper, work := filepath.Join(op.Source, "upper"), filepath.Join(op.Source, "work")
		if err = os.MkdirAll(upper, 0o755); err == nil {
			err = os.MkdirAll(work, 0o755)
		}
		if err == nil {
			err = unix.Mount("overlay", op.Target, "overlay", 0, "lowerdir="+op.Target+",upperdir="+upper+",workdir="+work)
		}
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", op.Kind, op.Target, err)
	}
	return nil
}

// keptPath is a path bound aside while its parent is replaced.
type keptPath struct {
	path, staged string
	isDir        bool
}

// stageKept binds every kept path that lies under a target to a place in
// dir, to be moved back by restoreKept once the targets are mounted.
func stageKept(dir string, keep []string, targets []mountTarget) ([]keptPath, error) {
	var kept []keptPath
	seen := map[string]bool{}
	for _, k := range keep {
		k = filepath.Clean(k)
		if seen[k] || !filepath.IsAbs(k) {
			continue
		}
		seen[k] = true
		inside := false
		for _, t := range targets {
			inside = inside || k == t.Path || strings.HasPrefix(k, t.Path+"/")
		}
		fi, err := os.Stat(k)
		if !inside || err != nil {
			continue
		}
		staged := filepath.Join(dir, "kept", fmt.Sprint(len(kept)))
		if fi.IsDir() {
			err = os.MkdirAll(staged, 0o700)
		} else if err = os.MkdirAll(filepath.Dir(staged), 0o700); err == nil {
			err = os.WriteFile(staged, nil, 0o600)
		}
		if err != nil {
			return nil, err
		}
		if err := unix.Mount(k, staged, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return nil, fmt.Errorf("keeping %s: %w", k, err)
		}
		kept = append(kept, keptPath{path: k, staged: staged, isDir: fi.IsDir()})
	}
	// Deepest last, so that a kept path inside another stays on top.
	sort.Slice(kept, func(i, j int) bool { return kept[i].path < kept[j].path })
	return kept, nil
}

func restoreKept(kept []keptPath) error {
	for _, k := range kept {
		var err error
		if k.isDir {
			err = os.MkdirAll(k.path, 0o755)
		} else if err = os.MkdirAll(filepath.Dir(k.path), 0o755); err == nil {
			var f *os.File
			if f, err = os.OpenFile(k.path, os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
				err = f.Close()
			}
		}
		if err == nil {
			err = unix.Mount(k.staged, k.path, "", unix.MS_MOVE, "")
		}
		if err != nil {
			return fmt.Errorf("keeping %s: %w", k.path, err)
		}
	}
	if wd, err := os.Getwd(); err == nil {
		// The working directory may have been under a replaced directory
		// and kept: enter the visible one.
		_ = os.Chdir(wd)
	}
	return nil
}

// copyEtc copies the machine's /etc into dst: files with their modes and
// owners, symbolic links as links (the iptables alternatives, the CA
// certificates), directories; nothing else (no sockets or devices).
func copyEtc(dst string) error {
	return filepath.WalkDir("/etc", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("copying /etc: %w", err)
		}
		target := filepath.Join(dst, strings.TrimPrefix(p, "/etc"))
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		switch {
		case d.IsDir():
			if err := os.MkdirAll(target, 0o700); err != nil {
				return err
			}
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			if err := copyFile(p, target); err != nil {
				return err
			}
		default:
			return nil
		}
		if st != nil {
			if err := os.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
				return err
			}
		}
		return os.Chmod(target, fi.Mode().Perm()|fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// addAccounts appends the accounts to the copy of /etc in etc and makes
// their homes (0755, owned by them) in home. The shadow entry's password is
// "*" (no password, not locked: sshd refuses key logins of a locked account
// when it does not use PAM).
func addAccounts(etc, home string, accounts []Account) error {
	if len(accounts) == 0 {
		return nil
	}
	var passwd, group, shadow strings.Builder
	for _, a := range accounts {
		if err := checkAccount(etc, a); err != nil {
			return err
		}
		fmt.Fprintf(&passwd, "%s:x:%d:%d::/home/%s:/bin/sh\n", a.Name, a.UID, a.UID, a.Name)
		fmt.Fprintf(&group, "%s:x:%d:\n", a.Name, a.UID)
		fmt.Fprintf(&shadow, "%s:*:19000:0:99999:7:::\n", a.Name)
		h := filepath.Join(home, a.Name)
		if err := os.MkdirAll(h, 0o755); err != nil {
			return err
		}
		if err := os.Chown(h, a.UID, a.UID); err != nil {
			return err
		}
	}
	for file, lines := range map[string]string{"passwd": passwd.String(), "group": group.String(), "shadow": shadow.String()} {
		if err := appendLines(filepath.Join(etc, file), lines); err != nil {
			return fmt.Errorf("adding the test accounts to %s: %w", file, err)
		}
	}
	return nil
}

// checkAccount refuses a name that is not a plain account name, or a name
// or ID the machine's accounts already use.
func checkAccount(etc string, a Account) error {
	if a.UID <= 0 || a.Name == "" || strings.ContainsAny(a.Name, ":/\n ") {
		return fmt.Errorf("account %q (%d) is not a plain account", a.Name, a.UID)
	}
	data, err := os.ReadFile(filepath.Join(etc, "passwd"))
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) > 2 && (f[0] == a.Name || f[2] == fmt.Sprint(a.UID)) {
			return fmt.Errorf("account %s (%d) clashes with the machine's %q", a.Name, a.UID, f[0])
		}
	}
	return nil
}

func appendLines(file, lines string) error {
	data, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if len(data) > 0 && !strings.HasSuffix(string(data), "\n") {
		lines = "\n" + lines
	}
	f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(lines); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// mountDev replaces /dev by a tmpfs holding the machine's usual device
// nodes (made anew, same numbers), a devpts of its own with /dev/ptmx, a
// /dev/shm of its own and the /proc/self/fd links. A socket such as the
// machine's /dev/log is not carried over: the namespace's syslog makes its own.
func mountDev() error {
	type node struct {
		name string
		mode uint32
		dev  uint64
	}
	var nodes []node
	for _, name := range devices {
		var st unix.Stat_t
		if err := unix.Stat("/dev/"+name, &st); err != nil {
			continue
		}
		nodes = append(nodes, node{name, st.Mode, st.Rdev})
	}
	if err := unix.Mount("tmpfs", "/dev", "tmpfs", unix.MS_NOSUID, "mode=755"); err != nil {
		return fmt.Errorf("mounting /dev: %w", err)
	}
	for _, n := range nodes {
		p := "/dev/" + n.name
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := unix.Mknod(p, n.mode, int(n.dev)); err != nil {
			return fmt.Errorf("making %s: %w", p, err)
		}
		if err := unix.Chmod(p, n.mode&0o7777); err != nil {
			return err
		}
	}
	for _, d := range []string{"pts", "shm"} {
		if err := os.Mkdir("/dev/"+d, 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620"); err != nil {
		return fmt.Errorf("mounting /dev/pts: %w", err)
	}
	if err := unix.Mount("shm", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return fmt.Errorf("mounting /dev/shm: %w", err)
	}
	for link, to := range map[string]string{"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(to, "/dev/"+link); err != nil {
			return err
		}
	}
	return nil
}

// mountSys mounts a sysfs of the new network namespace on /sys (so
// /sys/class/net lists its links), with the machine's cgroup hierarchies
// moved onto it.
func mountSys(dir string) error {
	staged := filepath.Join(dir, "kept", "cgroup")
	if err := os.MkdirAll(staged, 0o700); err != nil {
		return err
	}
	if err := unix.Mount("/sys/fs/cgroup", staged, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("keeping /sys/fs/cgroup: %w", err)
	}
	if err := unix.Mount("sysfs", "/sys", "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting /sys: %w", err)
	}
	if err := unix.Mount(staged, "/sys/fs/cgroup", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("moving the cgroup hierarchies onto /sys: %w", err)
	}
	return nil
}

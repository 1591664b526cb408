package localcluster

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupPrefix starts the name of every real node's cgroup root.
const cgroupPrefix = "nodeaccess-"

// CgroupName is the cgroup, in every hierarchy, under which the real node
// named node puts its pods unless RealNodeOptions.CgroupName says
// otherwise: one per node name, made and removed by the node.
func CgroupName(node string) string { return cgroupPrefix + node }

// IsRealNodeCgroup says whether a cgroup (a path in a hierarchy) is the
// cgroup root of some real node.
func IsRealNodeCgroup(path string) bool {
	return strings.HasPrefix(filepath.Base(path), cgroupPrefix)
}

// CheckCgroups says why a real node cannot make its cgroups on this
// machine (no cgroup hierarchy mounted, or one that may not be written),
// or returns nil.
func CheckCgroups() error {
	mounts, err := cgroupMounts()
	if err != nil {
		return fmt.Errorf("reading the mount table: %w", err)
	}
	if len(mounts) == 0 {
		return errors.New("no cgroup hierarchy is mounted")
	}
	for mnt := range mounts {
		if err := unix.Access(mnt, unix.W_OK); err != nil {
			return fmt.Errorf("cgroup hierarchy %s is not writable: %w", mnt, err)
		}
	}
	return nil
}

// RemoveCgroups removes the cgroups named name (a real node's cgroup root,
// see RealNodeOptions.CgroupName) and those under them from every
// hierarchy, deepest first: what a real node whose run was killed left.
// A cgroup that still holds a process cannot be removed, and is named in
// the error.
func RemoveCgroups(name string) error {
	if name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." {
		return fmt.Errorf("%q is not a cgroup name", name)
	}
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	var roots []string
	for mnt := range mounts {
		roots = append(roots, filepath.Join(mnt, name))
	}
	slices.Sort(roots)
	return removeCgroupRoots(roots)
}

// cgroupMounts are the machine's cgroup hierarchies: their mount points,
// and whether each is a cgroup v2 hierarchy.
func cgroupMounts() (map[string]bool, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	mounts := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		fields, fstype := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(fstype) == 0 {
			continue
		}
		switch fstype[0] {
		case "cgroup":
			mounts[unescapeMount(fields[4])] = false
		case "cgroup2":
			mounts[unescapeMount(fields[4])] = true
		}
	}
	return mounts, nil
}

// makeCgroupRoot makes the kubelet's cgroup root in every v1 hierarchy
// (the kubelet checks it exists in each), or in the v2 hierarchy with its
// controllers enabled when the machine has only v2. It returns every path
// the node's cgroups may take, for removal.
func makeCgroupRoot(name string) ([]string, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	v1 := false
	for _, isV2 := range mounts {
		v1 = v1 || !isV2
	}
	var roots []string
	for mnt, isV2 := range mounts {
		root := filepath.Join(mnt, name)
		roots = append(roots, root)
		if isV2 && v1 {
			continue // hybrid: runc uses the v2 hierarchy by itself
		}
		if err := os.Mkdir(root, 0o755); err != nil && !os.IsExist(err) {
			return roots, fmt.Errorf("making cgroup %s: %w", root, err)
		}
		switch {
		case isV2:
			controllers, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
			if err != nil {
				return roots, err
			}
			var enable []string
			for _, c := range strings.Fields(string(controllers)) {
				enable = append(enable, "+"+c)
			}
			if err := os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0o644); err != nil {
				return roots, fmt.Errorf("enabling controllers in %s: %w", root, err)
			}
		case filepath.Base(mnt) == "cpuset" || strings.Contains(filepath.Base(mnt), "cpuset"):
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				data, err := os.ReadFile(filepath.Join(mnt, f))
				if err != nil {
					return roots, err
				}
				if err := os.WriteFile(filepath.Join(root, f), data, 0o644); err != nil {
					return roots, fmt.Errorf("setting %s of %s: %w", f, root, err)
				}
			}
		}
	}
	slices.Sort(roots)
	return roots, nil
}

// removeCgroupRoots removes the node's cgroups, deepest first (a cgroup
// with processes cannot be removed: kill them first).
func removeCgroupRoots(roots []string) error {
	var failed []string
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && err != syscall.ENOENT {
				failed = append(failed, dirs[i])
			}
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("could not remove cgroups %s", strings.Join(failed, ", "))
	}
	return nil
}

// nodeProcesses are the processes in the node's cgroups.
func nodeProcesses(roots []string) []int {
	seen := map[int]bool{}
	for _, root := range roots {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			data, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	var pids []int
	for pid := range seen {
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	return append(pids, shimProcesses()...)
}

// shimProcesses are the containerd shims running in this PID namespace.
// Stop runs only in the private namespaces, where every shim is the node's.
func shimProcesses() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && strings.HasPrefix(filepath.Base(exe), "containerd-shim") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killNodeProcesses kills what is left in the node's cgroups and every
// shim, waits (5 s at most) until they are gone, and returns how many it killed.
func killNodeProcesses(roots []string) int {
	if !InPrivateNamespaces() {
		return 0
	}
	pids := nodeProcesses(roots)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && len(nodeProcesses(roots)) > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	return len(pids)
}

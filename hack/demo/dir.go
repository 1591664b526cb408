package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// demoMarker marks a directory as the demo's: a regular file, made by the
// user the demo runs as, that run writes into the directory once it is
// the demo's. run empties a marked directory; it never removes one.
const demoMarker = ".nodeaccess-demo"

// checkDemoDir says whether the demo's directory exists and may be used,
// emptied and stopped in: refused are a directory that is, or holds, the
// root directory, the repository, the binaries or the user's home; a
// symbolic link; a directory of another user; one under which something
// is mounted; and one that holds anything yet is not marked as the
// demo's (the repository's _demo excepted, from demos before the marker).
// An empty unmarked directory may be used: nothing of it is removed.
func checkDemoDir(c config) (exists bool, err error) {
	fi, err := os.Lstat(c.dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("looking at the demo's directory: %w", err)
	}
	refuse := func(why string) (bool, error) {
		return true, fmt.Errorf("refusing %s as the demo's directory (-dir): %s", c.dir, why)
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return refuse("it is a symbolic link")
	case !fi.IsDir():
		return refuse("it is not a directory")
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return refuse(fmt.Sprintf("it belongs to user %d", st.Uid))
	}
	real, err := filepath.EvalSymlinks(c.dir)
	if err != nil {
		return true, fmt.Errorf("resolving the demo's directory: %w", err)
	}
	home, _ := os.UserHomeDir()
	for _, p := range []string{"/", c.root, c.bin, c.images, c.k8sBin, home} {
		if p == "" {
			continue
		}
		if rp, err := filepath.EvalSymlinks(p); err == nil {
			p = rp
		}
		if within(p, real) {
			return refuse("it is or holds " + p)
		}
	}
	mounts, err := mountPoints()
	if err != nil {
		return true, err
	}
	for _, m := range mounts {
		if within(m, real) {
			return refuse("something is mounted on " + m)
		}
	}
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return true, fmt.Errorf("reading the demo's directory: %w", err)
	}
	if len(entries) == 0 || c.dir == filepath.Join(c.root, "_demo") {
		return true, nil
	}
	marker, err := os.Lstat(c.path(demoMarker))
	if err != nil {
		return refuse("it is not empty and not a demo's (no " + demoMarker + ")")
	}
	if st, ok := marker.Sys().(*syscall.Stat_t); !marker.Mode().IsRegular() || !ok || int(st.Uid) != os.Geteuid() {
		return refuse(demoMarker + " in it is not a file of this user")
	}
	return true, nil
}

// within says whether p is dir or lies under it (both clean and absolute).
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// mountPoints are this mount namespace's mount points.
func mountPoints() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	defer f.Close()
	points, err := parseMountPoints(f)
	if err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	return points, nil
}

// parseMountPoints reads the mount points of a mountinfo file.
func parseMountPoints(r io.Reader) ([]string, error) {
	var points []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		points = append(points, unescapeMount(fields[4]))
	}
	return points, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// clearDemoDir removes the named entries of the demo's directory, or all
// of them (the marker last) when none are named, after checkDemoDir. It
// works through the directory it checked (os.Root): a directory put in
// its place meanwhile, or a link inside, is never followed.
func clearDemoDir(c config, names ...string) error {
	exists, err := checkDemoDir(c)
	if err != nil || !exists {
		return err
	}
	checked, err := os.Lstat(c.dir)
	if err != nil {
		return fmt.Errorf("looking at the demo's directory: %w", err)
	}
	root, err := os.OpenRoot(c.dir)
	if err != nil {
		return fmt.Errorf("opening the demo's directory: %w", err)
	}
	defer root.Close()
	opened, err := root.Stat(".")
	if err != nil {
		return fmt.Errorf("opening the demo's directory: %w", err)
	}
	if !os.SameFile(checked, opened) {
		return fmt.Errorf("refusing %s as the demo's directory (-dir): it changed while being checked", c.dir)
	}
	if len(names) == 0 {
		entries, err := fs.ReadDir(root.FS(), ".")
		if err != nil {
			return fmt.Errorf("reading the demo's directory: %w", err)
		}
		for _, e := range entries {
			if e.Name() != demoMarker {
				names = append(names, e.Name())
			}
		}
		names = append(names, demoMarker)
	}
	for _, n := range names {
		if err := root.RemoveAll(n); err != nil {
			return fmt.Errorf("removing the last demo's %s: %w", n, err)
		}
	}
	return nil
}

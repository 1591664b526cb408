package nodewriter

// These tests write real files in temp directories, as root (as CI runs
// them), so that ownership is really set and checked.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

const (
	uid      = 1001
	otherUID = 1002
	userKeys = "# mine\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHQcKBUJvZCUI4cabRgJQrFMYA/uPYHs+vLi/MryWsmq me\n"
)

// hostRoot makes a host root whose passwd holds alice (1001) with the given
// home, bob (1002), and the entries in extra.
func hostRoot(t *testing.T, home string, extra ...string) string {
	t.Helper()
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	passwd := "# comment\n\nmalformed line\nroot:x:0:0:root:/root:/bin/bash\n" +
		fmt.Sprintf("alice:x:%d:%d::%s:/bin/bash\n", uid, uid, home) +
		fmt.Sprintf("bob:x:%d:%d::/home/bob:/bin/bash\n", otherUID, otherUID) +
		"alice:x:4242:4242::/tmp/second-entry:/bin/sh\n" + strings.Join(extra, "")
	must(t, os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte(passwd), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "etc", "shadow"), []byte("root:secret\n"), 0o600))
	for _, u := range []struct {
		name string
		id   int
	}{{"alice", uid}, {"bob", otherUID}} {
		dir := filepath.Join(root, "home", u.name)
		must(t, os.MkdirAll(dir, 0o755))
		must(t, os.Chown(dir, u.id, u.id))
	}
	return root
}

func sshDir(root string) string { return filepath.Join(root, "home", "alice", ".ssh") }
func keysFile(root string) string {
	return filepath.Join(sshDir(root), "authorized_keys")
}

func writeUserFile(t *testing.T, root, content string) {
	t.Helper()
	must(t, os.MkdirAll(sshDir(root), 0o700))
	must(t, os.Chown(sshDir(root), uid, uid))
	must(t, os.WriteFile(keysFile(root), []byte(content), 0o600))
	must(t, os.Chown(keysFile(root), uid, uid))
}

func appendLine(line string) func([]byte) ([]byte, error) {
	return func(cur []byte) ([]byte, error) { return append(append([]byte{}, cur...), line...), nil }
}

func owner(t *testing.T, p string) (int, int, os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(p)
	must(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid), fi.Mode().Perm()
}

func TestCreatesSSHAndFileOwnedByTheUser(t *testing.T) {
	root := hostRoot(t, "/home/alice")
	w, err := New(root, Options{})
	must(t, err)
	res, err := w.Update("alice", appendLine("managed\n"))
	must(t, err)
	if !res.Changed || res.Path != "/home/alice/.ssh/authorized_keys" {
		t.Fatalf("result %+v", res)
	}
	if u, g, m := owner(t, sshDir(root)); u != uid || g != uid || m != 0o700 {
		t.Errorf(".ssh owned %d:%d mode %v, want %d:%d 0700", u, g, m, uid, uid)
	}
	if u, g, m := owner(t, keysFile(root)); u != uid || g != uid || m != 0o600 {
		t.Errorf("file owned %d:%d mode %v, want %d:%d 0600", u, g, m, uid, uid)
	}
	data, _ := os.ReadFile(keysFile(root))
	if string(data) != "managed\n" {
		t.Fatalf("content %q", data)
	}

	// Unchanged content: no write at all (same inode, same mtime).
	before, _ := os.Stat(keysFile(root))
	time.Sleep(10 * time.Millisecond)
	res, err = w.Update("alice", func(cur []byte) ([]byte, error) { return cur, nil })
	must(t, err)
	after, _ := os.Stat(keysFile(root))
	if res.Changed || !os.SameFile(before, after) || !before.ModTime().Equal(after.ModTime()) {
		t.Fatal("an unchanged file was rewritten")
	}
	// No temp files left behind.
	entries, _ := os.ReadDir(sshDir(root))
	if len(entries) != 1 {
		t.Fatalf(".ssh holds %d entries, want only authorized_keys", len(entries))
	}
}

func TestNothingCreatedWhenNothingToWrite(t *testing.T) {
	root := hostRoot(t, "/home/alice")
	w, _ := New(root, Options{})
	res, err := w.Update("alice", func(cur []byte) ([]byte, error) { return nil, nil })
	must(t, err)
	if res.Changed {
		t.Fatal("reported a change")
	}
	if _, err := os.Stat(sshDir(root)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal(".ssh was created with nothing to write")
	}
}

func TestEditSeesTheExactBytesAndTheirOwnerIsKept(t *testing.T) {
	root := hostRoot(t, "/home/alice")
	writeUserFile(t, root, userKeys+"no final newline")
	w, _ := New(root, Options{})
	var seen []byte
	_, err := w.Update("alice", func(cur []byte) ([]byte, error) {
		seen = append([]byte{}, cur...)
		return append(cur, "\nmanaged\n"...), nil
	})
	must(t, err)
	if string(seen) != userKeys+"no final newline" {
		t.Fatalf("edit saw %q", seen)
	}
	if u, _, m := owner(t, keysFile(root)); u != uid || m != 0o600 {
		t.Fatalf("owner %d mode %v", u, m)
	}
}

func TestEditErrorWritesNothing(t *testing.T) {
	root := hostRoot(t, "/home/alice")
	writeUserFile(t, root, userKeys)
	w, _ := New(root, Options{})
	_, err := w.Update("alice", func([]byte) ([]byte, error) { return nil, errors.New("bad keys") })
	if err == nil || err.Error() != "bad keys" {
		t.Fatalf("want the edit's error, got %v", err)
	}
	if data, _ := os.ReadFile(keysFile(root)); string(data) != userKeys {
		t.Fatal("file changed")
	}
}

// refusal is one hostile or broken layout: setup prepares it, and the update
// must fail with reason while every file listed in keep keeps its bytes.
type refusal struct {
	name   string
	home   string
	user   string
	setup  func(t *testing.T, root string)
	reason string
}

// wantState is what a refusal proves: nothing, except when no file can be
// in use for the account.
func (r refusal) wantState() State {
	switch r.reason {
	case nav1.UserNotFoundReason, nav1.InvalidUserNameReason, nav1.HomeUnsafeReason, nav1.HomeNotFoundReason, nav1.HomeNotMountedReason:
		return NoFile
	}
	return Unknown
}

func TestRefusals(t *testing.T) {
	cases := []refusal{
		{name: "user missing", user: "carol", reason: nav1.UserNotFoundReason},
		{name: "name with a path", user: "../x", reason: nav1.InvalidUserNameReason},
		{name: "name root-relative", user: "/etc", reason: nav1.InvalidUserNameReason},
		{name: "home is /", home: "/", reason: nav1.HomeUnsafeReason},
		{name: "home in /etc", home: "/etc", reason: nav1.HomeUnsafeReason},
		{name: "home not clean", home: "/home/alice/../../etc", reason: nav1.HomeUnsafeReason},
		{name: "home missing", home: "/home/nobody-here", reason: nav1.HomeNotFoundReason},
		{name: "home a root-made symlink to /etc", home: "/home/escape", reason: nav1.HomeUnsafeReason, setup: func(t *testing.T, root string) {
			must(t, os.Symlink("/etc", filepath.Join(root, "home", "escape")))
		}},
		{name: "home writable by others", setup: func(t *testing.T, root string) {
			must(t, os.Chmod(filepath.Join(root, "home", "alice"), 0o777))
		}, reason: nav1.UnsafePermissionsReason},
		{name: "home owned by another user", setup: func(t *testing.T, root string) {
			must(t, os.Chown(filepath.Join(root, "home", "alice"), otherUID, otherUID))
		}, reason: nav1.UnsafeOwnerReason},
		{name: ".ssh a symlink outside the home", setup: func(t *testing.T, root string) {
			must(t, os.Symlink(filepath.Join(root, "etc"), sshDir(root)))
		}, reason: nav1.UnsafePathReason},
		{name: ".ssh a symlink inside the home", setup: func(t *testing.T, root string) {
			must(t, os.Mkdir(filepath.Join(root, "home", "alice", "real"), 0o700))
			must(t, os.Symlink("real", sshDir(root)))
		}, reason: nav1.UnsafePathReason},
		{name: ".ssh owned by another user", setup: func(t *testing.T, root string) {
			writeUserFile(t, root, userKeys)
			must(t, os.Chown(sshDir(root), otherUID, otherUID))
		}, reason: nav1.UnsafeOwnerReason},
		{name: ".ssh writable by group", setup: func(t *testing.T, root string) {
			writeUserFile(t, root, userKeys)
			must(t, os.Chmod(sshDir(root), 0o770))
		}, reason: nav1.UnsafePermissionsReason},
		{name: ".ssh a file", setup: func(t *testing.T, root string) {
			must(t, os.WriteFile(sshDir(root), []byte("x"), 0o600))
		}, reason: nav1.NotRegularFileReason},
		{name: "file a symlink to a secret", setup: func(t *testing.T, root string) {
			writeUserFile(t, root, userKeys)
			must(t, os.Remove(keysFile(root)))
			must(t, os.Symlink(filepath.Join(root, "etc", "shadow"), keysFile(root)))
		}, reason: nav1.UnsafePathReason},
		{name: "file a hard link to a secret", setup: func(t *testing.T, root string) {
			writeUserFile(t, root, userKeys)
			must(t, os.Remove(keysFile(root)))
			must(t, os.Link(filepath.Join(root, "etc", "shadow"), keysFile(root)))
		}, reason: nav1.UnsafePathReason},
		{name: "file a FIFO", setup: func(t *testing.T, root string) {
			writeUserFile(t, root, userKeys)
			must(t, os.Remove(keysFile(root)))
			must(t, syscall.Mkfifo(keysFile(root), 0o600))
		}, reason: nav1.NotRegularFileReason},
		{name: "file a directory", setup: func(t *testing.T, root string) {
			writeUserFile(t, root, userKeys)
			must(t, os.Remove(keysFile(root)))
			must(t, os.Mkdir(keysFile(root), 0o700))
		}, reason: nav1.NotRegularFileReason},
		{name: "file owned by another user", setup: func(t *testing.T, root string) {
			writeUserFile(t, root, userKeys)
			must(t, os.Chown(keysFile(root), otherUID, otherUID))
		}, reason: nav1.UnsafeOwnerReason},
		{name: "file writable by others", setup: func(t *testing.T, root string) {
			writeUserFile(t, root, userKeys)
			must(t, os.Chmod(keysFile(root), 0o666))
		}, reason: nav1.UnsafePermissionsReason},
		{name: "file too large", setup: func(t *testing.T, root string) {
			writeUserFile(t, root, strings.Repeat("#", MaxFileBytes+1))
		}, reason: nav1.FileTooLargeReason},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			home := tc.home
			if home == "" {
				home = "/home/alice"
			}
			root := hostRoot(t, home)
			if tc.setup != nil {
				tc.setup(t, root)
			}
			before := snapshot(t, root)
			w, _ := New(root, Options{})
			user := tc.user
			if user == "" {
				user = "alice"
			}
			done := make(chan error, 1)
			var res Result
			go func() {
				var err error
				res, err = w.Update(user, appendLine("managed\n"))
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("update hung")
			}
			var werr *Error
			if !errors.As(err, &werr) || werr.Reason != tc.reason {
				t.Fatalf("want reason %s, got %v", tc.reason, err)
			}
			if res.State != tc.wantState() {
				t.Errorf("state %v, want %v: a refusal must not claim to know the file", res.State, tc.wantState())
			}
			if after := snapshot(t, root); after != before {
				t.Fatalf("files changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// snapshot describes every file under root: path, mode, owner and content.
func snapshot(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	must(t, filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%s %v %d:%d", strings.TrimPrefix(p, root), fi.Mode(), st.Uid, st.Gid)
		if fi.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			fmt.Fprintf(&b, " %x", data)
		}
		b.WriteString("; ")
		return nil
	}))
	return b.String()
}

func TestWriteFailureLeavesTheFileAsItWas(t *testing.T) {
	// A real write failure from the kernel, as a full disk gives: the
	// process's file size limit makes the write fail with EFBIG, even as root.
	root := hostRoot(t, "/home/alice")
	writeUserFile(t, root, userKeys)
	var lim syscall.Rlimit
	must(t, syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim))
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim) })
	// Writes past 64 bytes fail with EFBIG (SIGXFSZ is ignored by the Go runtime).
	must(t, syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: 64, Max: lim.Max}))
	w, _ := New(root, Options{})
	_, err := w.Update("alice", appendLine(strings.Repeat("x", 200)+"\n"))
	_ = syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim)
	var werr *Error
	if !errors.As(err, &werr) || werr.Reason != nav1.WriteFailedReason {
		t.Fatalf("want WriteFailed, got %v", err)
	}
	if data, _ := os.ReadFile(keysFile(root)); string(data) != userKeys {
		t.Fatalf("file changed after a failed write: %q", data)
	}
	entries, _ := os.ReadDir(sshDir(root))
	if len(entries) != 1 {
		t.Fatalf("temp file left behind: %d entries", len(entries))
	}
}

func TestSwappingSSHForASymlinkNeverWritesOutside(t *testing.T) {
	root := hostRoot(t, "/home/alice")
	writeUserFile(t, root, userKeys)
	etc := filepath.Join(root, "etc")
	etcBefore := snapshot(t, etc)
	link := sshDir(root) + ".link"
	must(t, os.Symlink(etc, link))
	w, _ := New(root, Options{})

	// .ssh and the symlink to etc trade places atomically, over and over:
	// .ssh is always either the real directory or the link.
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		for !stop.Load() {
			_ = exchange(sshDir(root), link)
		}
	})
	var ok, refused int
	for i := 0; i < 2000 && (ok == 0 || refused == 0 || i < 200); i++ {
		_, err := w.Update("alice", appendLine(fmt.Sprintf("line %d\n", i)))
		if err == nil {
			ok++
		} else {
			refused++
		}
	}
	stop.Store(true)
	wg.Wait()
	if after := snapshot(t, etc); after != etcBefore {
		t.Fatalf("a file under etc was written:\n%s\n%s", etcBefore, after)
	}
	t.Logf("%d updates written into the real .ssh, %d refused during swaps", ok, refused)
	// The race must have happened for the test to prove anything: some
	// updates met the symlink (and were refused), some the directory.
	if refused == 0 || ok == 0 {
		t.Fatalf("the swap never raced an update (%d written, %d refused); the test proved nothing", ok, refused)
	}
	if _, err := os.Stat(filepath.Join(etc, "authorized_keys")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("authorized_keys created under etc")
	}
}

func TestLargeFileRoundTrips(t *testing.T) {
	root := hostRoot(t, "/home/alice")
	var b bytes.Buffer
	for b.Len() < 2<<20 {
		fmt.Fprintf(&b, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHQcKBUJvZCUI4cabRgJQrFMYA/uPYHs+vLi/MryWsmq user%d\n", b.Len())
	}
	writeUserFile(t, root, b.String())
	w, _ := New(root, Options{})
	_, err := w.Update("alice", appendLine("managed\n"))
	must(t, err)
	data, _ := os.ReadFile(keysFile(root))
	if !bytes.Equal(data, append(b.Bytes(), "managed\n"...)) {
		t.Fatal("large file not kept byte for byte")
	}
}

func TestNoDescriptorLeaks(t *testing.T) {
	root := hostRoot(t, "/home/alice")
	w, _ := New(root, Options{})
	count := func() int {
		entries, err := os.ReadDir("/proc/self/fd")
		must(t, err)
		return len(entries)
	}
	before := count()
	for i := 0; i < 200; i++ {
		_, err := w.Update("alice", appendLine("x\n"))
		must(t, err)
		_, _ = w.Update("carol", appendLine("x\n"))
	}
	if after := count(); after > before+2 {
		t.Fatalf("descriptors went from %d to %d", before, after)
	}
}

func TestAccountsReadsTheHostPasswdOnly(t *testing.T) {
	root := hostRoot(t, "/home/alice", "Bad-Name:x:5:5::/home/x:/bin/sh\n", "negative:x:-1:0::/home/x:/bin/sh\n")
	w, _ := New(root, Options{})
	accts, err := w.Accounts()
	must(t, err)
	var names []string
	for _, a := range accts {
		names = append(names, fmt.Sprintf("%s:%d:%s", a.Name, a.UID, a.Home))
	}
	if got := strings.Join(names, " "); got != "root:0:/root alice:1001:/home/alice bob:1002:/home/bob" {
		t.Fatalf("accounts %s", got)
	}
}

// exchange swaps two paths atomically (renameat2 RENAME_EXCHANGE).
func exchange(a, b string) error {
	return unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

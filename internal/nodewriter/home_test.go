package nodewriter

// The home path rule, on real files: every component of the way to a home
// passes sshd's StrictModes rule, symbolic links are followed only when
// root made them in a directory only root can write, and nothing is ever
// written outside a home.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// homeCase is one layout of the way to alice's home. The update must land
// in wantDir (a host path of the home it resolves to) or fail with reason
// and state, and every other file of the host root must keep its bytes.
type homeCase struct {
	name    string
	home    string // alice's home in etc/passwd
	opts    Options
	asRoot  bool // alice has uid 0: another name for root
	setup   func(t *testing.T, root string)
	wantDir string
	reason  string
	state   State
}

func TestHomePathRule(t *testing.T) {
	userLink := func(target, link string) func(t *testing.T, root string) {
		return func(t *testing.T, root string) {
			p := filepath.Join(root, link)
			must(t, os.RemoveAll(p))
			must(t, os.Symlink(target, p))
			must(t, os.Lchown(p, uid, uid))
		}
	}
	rootLink := func(target, link string) func(t *testing.T, root string) {
		return func(t *testing.T, root string) {
			p := filepath.Join(root, link)
			must(t, os.RemoveAll(p))
			must(t, os.MkdirAll(filepath.Dir(p), 0o755))
			must(t, os.Symlink(target, p))
		}
	}
	dir := func(p string, owner int, mode os.FileMode) func(t *testing.T, root string) {
		return func(t *testing.T, root string) {
			full := filepath.Join(root, p)
			must(t, os.MkdirAll(full, 0o755))
			must(t, os.Chown(full, owner, owner))
			must(t, os.Chmod(full, mode))
		}
	}
	both := func(fs ...func(t *testing.T, root string)) func(t *testing.T, root string) {
		return func(t *testing.T, root string) {
			for _, f := range fs {
				f(t, root)
			}
		}
	}
	cases := []homeCase{
		{name: "plain home", home: "/home/alice", wantDir: "/home/alice"},

		// Links to system directories, relative and absolute, made by root or by the user.
		{name: "root-made relative link to etc", setup: rootLink("../etc", "home/alice"), reason: nav1.HomeUnsafeReason, state: NoFile},
		{name: "root-made absolute link to etc", setup: rootLink("/etc", "home/alice"), reason: nav1.HomeUnsafeReason, state: NoFile},
		{name: "link climbing above the host root stays inside it", setup: rootLink("../../../../../../../etc", "home/alice"), reason: nav1.HomeUnsafeReason, state: NoFile},
		{name: "user-made relative link to etc", setup: userLink("../etc", "home/alice"), reason: nav1.UnsafePathReason, state: Unknown},
		{name: "user-made absolute link to etc", setup: userLink("/etc", "home/alice"), reason: nav1.UnsafePathReason, state: Unknown},
		{name: "user-made link to another home", setup: userLink("bob", "home/alice"), reason: nav1.UnsafePathReason, state: Unknown},

		// Links an administrator makes, at the first and the last component.
		{name: "root-made /home -> var/home (first component)", setup: func(t *testing.T, root string) {
			must(t, os.MkdirAll(filepath.Join(root, "var"), 0o755))
			must(t, os.Rename(filepath.Join(root, "home"), filepath.Join(root, "var", "home")))
			must(t, os.Symlink("var/home", filepath.Join(root, "home")))
		}, wantDir: "/var/home/alice"},
		{name: "root-made /home/alice -> /data/alice (last component)", setup: both(dir("data/alice", uid, 0o700), rootLink("/data/alice", "home/alice")), wantDir: "/data/alice"},
		{name: "root-made link in a directory the user owns", home: "/home/alice/sub",
			setup:  both(dir("home/alice", uid, 0o755), dir("data/sub", uid, 0o700), rootLink("/data/sub", "home/alice/sub")),
			reason: nav1.UnsafePathReason, state: Unknown},
		{name: "root-made link to root's home", setup: both(dir("root", 0, 0o700), rootLink("/root", "home/alice")), reason: nav1.HomeUnsafeReason, state: NoFile},
		{name: "link loop", setup: both(rootLink("b", "home/alice"), rootLink("alice", "home/b")), reason: nav1.UnsafePathReason, state: Unknown},
		{name: "dangling root-made link", setup: rootLink("/data/none", "home/alice"), reason: nav1.HomeNotFoundReason, state: NoFile},

		// StrictModes on every component, not only the last two.
		{name: "home root writable by group", setup: dir("home", 0, 0o775), reason: nav1.UnsafePermissionsReason, state: Unknown},
		{name: "home root owned by another user", setup: dir("home", otherUID, 0o755), reason: nav1.UnsafeOwnerReason, state: Unknown},
		{name: "middle component writable by others", home: "/srv/homes/alice", opts: Options{HomeRoots: []string{"/srv/homes"}},
			setup: both(dir("srv/homes/alice", uid, 0o755), dir("srv", 0, 0o757)), reason: nav1.UnsafePermissionsReason, state: Unknown},
		{name: "middle component owned by another user", home: "/home/bob/alice",
			setup: dir("home/bob/alice", uid, 0o755), reason: nav1.UnsafeOwnerReason, state: Unknown},
		{name: "home turned 0775", setup: dir("home/alice", uid, 0o775), reason: nav1.UnsafePermissionsReason, state: Unknown},
		{name: "a component that is a file", home: "/home/file/alice", setup: func(t *testing.T, root string) {
			must(t, os.WriteFile(filepath.Join(root, "home", "file"), nil, 0o644))
		}, reason: nav1.NotRegularFileReason, state: Unknown},

		// Home roots.
		{name: "home outside the home roots", home: "/srv/alice", setup: dir("srv/alice", uid, 0o755), reason: nav1.HomeNotMountedReason, state: NoFile},
		{name: "home under a configured root", home: "/srv/alice", opts: Options{HomeRoots: []string{"/home", "/srv"}}, setup: dir("srv/alice", uid, 0o755), wantDir: "/srv/alice"},
		{name: "root's home without root allowed", home: "/root", asRoot: true, setup: dir("root", 0, 0o700), reason: nav1.HomeNotMountedReason, state: NoFile},
		{name: "root's home with root allowed", home: "/root", asRoot: true, opts: Options{AllowRoot: true}, setup: dir("root", 0, 0o700), wantDir: "/root"},
		{name: "root's home for another account", home: "/root", opts: Options{AllowRoot: true}, setup: dir("root", 0, 0o700), reason: nav1.HomeNotMountedReason, state: NoFile},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			home := tc.home
			if home == "" {
				home = "/home/alice"
			}
			id := uid
			if tc.asRoot {
				id = 0
			}
			root := hostRootFor(t, home, id)
			if tc.setup != nil {
				tc.setup(t, root)
			}
			before := snapshot(t, root)
			w, err := New(root, tc.opts)
			must(t, err)
			res, err := w.Update("alice", appendLine("managed\n"))
			if tc.wantDir == "" {
				if got := ReasonOf(err); got != tc.reason {
					t.Fatalf("want reason %s, got %v", tc.reason, err)
				}
				if res.State != tc.state {
					t.Errorf("state %v, want %v", res.State, tc.state)
				}
				if after := snapshot(t, root); after != before {
					t.Fatalf("files changed:\nbefore %s\nafter  %s", before, after)
				}
				return
			}
			must(t, err)
			want := filepath.Join(root, tc.wantDir, ".ssh", "authorized_keys")
			if data, err := os.ReadFile(want); err != nil || string(data) != "managed\n" {
				t.Fatalf("%s holds %q (%v)", want, data, err)
			}
			if len(res.Dirs) != 2 || res.Dirs[0] != tc.wantDir {
				t.Errorf("resolved dirs %v, want the home %s and its .ssh", res.Dirs, tc.wantDir)
			}
			// Nothing but the new .ssh and file changed.
			must(t, os.RemoveAll(filepath.Join(root, tc.wantDir, ".ssh")))
			if after := snapshot(t, root); after != before {
				t.Fatalf("files outside the home changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// hostRootFor is hostRoot with alice's uid chosen (0: another name for root).
func hostRootFor(t *testing.T, home string, id int) string {
	t.Helper()
	root := hostRoot(t, home)
	if id != uid {
		passwd := filepath.Join(root, "etc", "passwd")
		data, err := os.ReadFile(passwd)
		must(t, err)
		must(t, os.WriteFile(passwd, []byte(strings.Replace(string(data), fmt.Sprintf("alice:x:%d:%d:", uid, uid), fmt.Sprintf("alice:x:%d:%d:", id, id), 1)), 0o644))
	}
	return root
}

// A user who owns a directory on the way to their home swaps it for a link
// to etc and back, as fast as they can: no update may ever write under etc,
// and the race must have happened (updates refused and updates written).
func TestSwappingAHomeComponentNeverWritesOutside(t *testing.T) {
	root := hostRoot(t, "/home/alice/deep/home")
	deep := filepath.Join(root, "home", "alice", "deep")
	must(t, os.MkdirAll(filepath.Join(deep, "home"), 0o755))
	for _, p := range []string{deep, filepath.Join(deep, "home")} {
		must(t, os.Chown(p, uid, uid))
	}
	etc := filepath.Join(root, "etc")
	etcBefore := snapshot(t, etc)
	link := deep + ".link"
	must(t, os.Symlink(etc, link))
	must(t, os.Lchown(link, uid, uid))
	w, _ := New(root, Options{})

	// deep and the user's link to etc trade places atomically, over and over.
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		for !stop.Load() {
			_ = exchange(deep, link)
		}
	})
	var ok, refused int
	for i := 0; i < 2000 && (ok == 0 || refused == 0 || i < 200); i++ {
		_, err := w.Update("alice", appendLine(fmt.Sprintf("line %d\n", i)))
		switch reason := ReasonOf(err); {
		case err == nil:
			ok++
		case reason == nav1.UnsafePathReason:
			refused++
		default:
			t.Fatalf("update %d: unexpected %v", i, err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if after := snapshot(t, etc); after != etcBefore {
		t.Fatalf("a file under etc was written:\n%s\n%s", etcBefore, after)
	}
	t.Logf("%d updates written into the real home, %d refused during swaps", ok, refused)
	if ok == 0 || refused == 0 {
		t.Fatalf("the swap never raced an update (%d written, %d refused); the test proved nothing", ok, refused)
	}
}

func TestRootOwnedFileKeepsItsOwnerAndMode(t *testing.T) {
	root := hostRoot(t, "/home/alice")
	writeUserFile(t, root, userKeys)
	must(t, os.Chown(keysFile(root), 0, 0))
	must(t, os.Chmod(keysFile(root), 0o644))
	w, _ := New(root, Options{})
	_, err := w.Update("alice", appendLine("managed\n"))
	must(t, err)
	if u, g, m := owner(t, keysFile(root)); u != 0 || g != 0 || m != 0o644 {
		t.Fatalf("an administrator's root-owned file became %d:%d %v; it must stay root's, 0644", u, g, m)
	}
	if data, _ := os.ReadFile(keysFile(root)); string(data) != userKeys+"managed\n" {
		t.Fatalf("content %q", data)
	}
}

// Never write what cannot be read back; an edit that shrinks a file at the
// limit still works.
func TestNeverWritesMoreThanItReads(t *testing.T) {
	root := hostRoot(t, "/home/alice")
	big := strings.Repeat("# padding\n", MaxFileBytes/10-1)
	writeUserFile(t, root, big+"managed\n")
	w, _ := New(root, Options{})
	res, err := w.Update("alice", appendLine(strings.Repeat("x", 64)+"\n"))
	if ReasonOf(err) != nav1.FileTooLargeReason || res.State != Read {
		t.Fatalf("growing past %d bytes: want FileTooLarge with the file read, got %v (state %v)", MaxFileBytes, err, res.State)
	}
	if data, _ := os.ReadFile(keysFile(root)); string(data) != big+"managed\n" {
		t.Fatal("the file changed after a refused write")
	}
	res, err = w.Update("alice", func(cur []byte) ([]byte, error) { return []byte(strings.TrimSuffix(string(cur), "managed\n")), nil })
	must(t, err)
	if !res.Changed {
		t.Fatal("a shrinking edit was not written")
	}
	if data, _ := os.ReadFile(keysFile(root)); string(data) != big {
		t.Fatal("the shrinking edit did not land")
	}
}

func TestBadHomeRootsAreRefused(t *testing.T) {
	root := hostRoot(t, "/home/alice")
	for _, r := range []string{"/", "/etc", "home", "/home/../etc", "/root", "/var/lib/kubelet"} {
		if _, err := New(root, Options{HomeRoots: []string{r}}); err == nil {
			t.Errorf("home root %q accepted", r)
		}
	}
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// replace writes the file as the agent does: a new file, renamed over.
func replace(t *testing.T, dir, content string) {
	t.Helper()
	tmp := filepath.Join(dir, ".authorized_keys.tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "authorized_keys")); err != nil {
		t.Fatal(err)
	}
}

func newTestTracker(t *testing.T, nodes ...string) (*tracker, map[string]string) {
	t.Helper()
	tr, err := newTracker()
	if err != nil {
		t.Fatal(err)
	}
	go tr.run()
	t.Cleanup(tr.close)
	dirs := map[string]string{}
	for _, n := range nodes {
		dirs[n] = filepath.Join(t.TempDir(), ".ssh")
		if err := os.Mkdir(dirs[n], 0o700); err != nil {
			t.Fatal(err)
		}
		if err := tr.add(n, dirs[n]); err != nil {
			t.Fatal(err)
		}
	}
	return tr, dirs
}

func TestTrackerTimesRenamedFiles(t *testing.T) {
	tr, dirs := newTestTracker(t, "a", "b")
	add := tr.expect("KEY1", true, []string{"a", "b"})
	replace(t, dirs["a"], "ssh-ed25519 KEY1 x\n")
	replace(t, dirs["b"], "ssh-ed25519 OTHER x\n") // not yet
	replace(t, dirs["b"], "ssh-ed25519 KEY1 x\n")
	got, err := add.done(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d samples, want 2", len(got))
	}
	// A blob is a whole field: one that only contains it is another key.
	longer := tr.expect("KEY9", true, []string{"a"})
	replace(t, dirs["a"], "ssh-ed25519 KEY1 x\nssh-ed25519 KEY99 x\n")
	if _, err := longer.done(300 * time.Millisecond); err == nil {
		t.Fatal("KEY9 counted as present in a file holding only KEY99")
	}
	gone := tr.expect("KEY1", false, []string{"a"})
	replace(t, dirs["a"], "")
	if got, err := gone.done(10 * time.Second); err != nil || len(got) != 1 {
		t.Fatalf("removal: %v samples, %v", got, err)
	}
}

func TestTrackerFailsAfterTimeoutSayingWhy(t *testing.T) {
	tr, dirs := newTestTracker(t, "b")
	// Node a's file changed before it was watched: no event will come for it.
	dirs["a"] = filepath.Join(t.TempDir(), ".ssh")
	if err := os.Mkdir(dirs["a"], 0o700); err != nil {
		t.Fatal(err)
	}
	replace(t, dirs["a"], "ssh-ed25519 KEY2 x\n")
	if err := tr.add("a", dirs["a"]); err != nil {
		t.Fatal(err)
	}
	w := tr.expect("KEY2", true, []string{"a", "b"})
	_, err := w.done(200 * time.Millisecond)
	if err == nil {
		t.Fatal("a wait no event resolves succeeded")
	}
	if !strings.Contains(err.Error(), "1 show it") || !strings.Contains(err.Error(), "1 never written") {
		t.Fatalf("error does not say which files: %v", err)
	}
}

// A latency ends when the file was put in place, not when the tracker got
// round to its event: here the tracker is held for 300 ms after the rename.
func TestTrackerTimesTheRenameNotItsOwnDelay(t *testing.T) {
	tr, dirs := newTestTracker(t, "a")
	w := tr.expect("KEY1", true, []string{"a"})
	tr.mu.Lock()
	replace(t, dirs["a"], "ssh-ed25519 KEY1 x\n")
	renamed := time.Since(w.from)
	time.Sleep(300 * time.Millisecond)
	tr.mu.Unlock()
	got, err := w.done(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The inode's change time comes from the kernel's coarse clock, which
	// the tracker counts two ticks later.
	if len(got) != 1 || got[0] > renamed+2*tr.tick+time.Millisecond {
		t.Fatalf("latency %v; the rename came %v after the start, and the tracker's 300 ms delay must not count", got, renamed)
	}
}

// A blob counts only as a whole field, whether a few waits search the
// bytes or many index the fields.
func TestFieldSearchMatchesWholeFieldsOnly(t *testing.T) {
	content := []byte("# own\nno-pty ssh-ed25519 AAAAkey1 alice nodeaccess=a\r\nssh-ed25519 AAAAkey2xyz bob\nssh-ed25519 AAAAkey3")
	for _, waits := range []int{1, 5} {
		has := fieldSearch(content, waits)
		for blob, want := range map[string]bool{
			"AAAAkey1": true, "AAAAkey3": true, "AAAAkey2xyz": true, "AAAAkey2": false, "key1": false,
			"AAAAkey": false, "ssh-ed25519": true, "nodeaccess=a": true, "": false,
		} {
			if got := has([]byte(blob)); got != want {
				t.Errorf("%d waits: %q found %v, want %v", waits, blob, got, want)
			}
		}
	}
}

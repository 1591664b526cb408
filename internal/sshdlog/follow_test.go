package sshdlog

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func appendTo(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, f *Follower) []string {
	t.Helper()
	var all []string
	for range 100 {
		lines, more, err := f.Read()
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, lines...)
		if !more {
			return all
		}
	}
	t.Fatal("Read says more is waiting, forever")
	return nil
}

func expect(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		t.Fatalf("%s: got %q, want %q", what, got, want)
	}
}

// What a syslog file holds before the Follower starts is not read again;
// what is appended is, a line at a time, once its newline is there.
func TestFollowerReadsWhatIsAppended(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.log")
	appendTo(t, path, "old 1\nold 2\nhalf of an old line")
	f := NewFollower(path)
	defer f.Close()
	expect(t, "at start", readAll(t, f))
	appendTo(t, path, " ends here\nnew 1\nnew ")
	expect(t, "the old line's end is skipped, a partial line waits", readAll(t, f), "new 1")
	appendTo(t, path, "2\n")
	expect(t, "completed", readAll(t, f), "new 2")
	expect(t, "nothing new", readAll(t, f))
}

// A file missing at start is read from its start once it appears.
func TestFollowerReadsAFileCreatedLater(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secure")
	f := NewFollower(path)
	defer f.Close()
	expect(t, "missing", readAll(t, f))
	if f.Open() {
		t.Fatal("open without a file")
	}
	appendTo(t, path, "first\nsecond\n")
	expect(t, "created", readAll(t, f), "first", "second")
}

// logrotate's default: the file renamed away, a new one created, and the
// syslog daemon told to reopen later. Lines written into the old file
// between the rename and the reopen are read, then the new file from its
// start; nothing is lost or read twice, also when the Follower was not
// called at all while it happened.
func TestFollowerFollowsRenameRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "auth.log")
	appendTo(t, path, "before start\n")
	f := NewFollower(path)
	defer f.Close()
	clock := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	f.now = func() time.Time { return clock }
	readAll(t, f)

	old, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	_, _ = old.WriteString("a 1\n")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	_, _ = old.WriteString("a 2, after the rename\n")
	appendTo(t, path, "b 1, in the new file\n")
	_, _ = old.WriteString("a 3, before the daemon reopens\n")
	expect(t, "after rotation", readAll(t, f), "a 1", "a 2, after the rename", "a 3, before the daemon reopens", "b 1, in the new file")

	// The old file is still read during the grace period, then let go.
	_, _ = old.WriteString("a 4, late\n")
	appendTo(t, path, "b 2\n")
	expect(t, "late line", readAll(t, f), "a 4, late", "b 2")
	clock = clock.Add(RotationGrace)
	_, _ = old.WriteString("a 5, partial")
	expect(t, "a last line without its newline is kept when the old file is let go", readAll(t, f), "a 5, partial")
	if len(f.retired) != 0 {
		t.Fatalf("%d rotated files still open after the grace period", len(f.retired))
	}
	_, _ = old.WriteString("a 6, after the grace period\n")
	appendTo(t, path, "b 3\n")
	expect(t, "only the new file", readAll(t, f), "b 3")

	// Rotated again while nothing read it: the whole of the second file and the third.
	appendTo(t, path, "b 4\n")
	if err := os.Rename(path, path+".2"); err != nil {
		t.Fatal(err)
	}
	appendTo(t, path, "c 1\n")
	expect(t, "second rotation", readAll(t, f), "b 4", "c 1")
}

// copytruncate: the file is copied and truncated in place. New lines after
// the truncation are read from the start, whether the file is then
// shorter than what was read or has already grown past it.
func TestFollowerFollowsTruncation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.log")
	appendTo(t, path, "")
	f := NewFollower(path)
	defer f.Close()
	readAll(t, f)
	appendTo(t, path, strings.Repeat("x", 100)+"\n")
	expect(t, "first", readAll(t, f), strings.Repeat("x", 100))

	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendTo(t, path, "short\n")
	expect(t, "shorter after truncation", readAll(t, f), "short")

	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("y", 300)
	appendTo(t, path, long+"\n")
	expect(t, "longer than the offset after truncation", readAll(t, f), long)
}

// Lines longer than MaxLineBytes are skipped whole, also across reads;
// one call reads at most MaxReadBytes.
func TestFollowerBoundsLinesAndReads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.log")
	appendTo(t, path, "")
	f := NewFollower(path)
	defer f.Close()
	readAll(t, f)
	appendTo(t, path, strings.Repeat("z", MaxLineBytes))
	expect(t, "a long partial line", readAll(t, f))
	appendTo(t, path, "zz\nafter\n")
	expect(t, "the long line skipped", readAll(t, f), "after")

	line := strings.Repeat("l", 1000)
	n := MaxReadBytes/len(line) + 10
	appendTo(t, path, strings.Repeat(line+"\n", n))
	lines, more, err := f.Read()
	if err != nil || !more || len(lines) >= n {
		t.Fatalf("first read: %d lines, more %v, %v", len(lines), more, err)
	}
	rest := readAll(t, f)
	if len(lines)+len(rest) != n {
		t.Fatalf("read %d+%d lines, want %d", len(lines), len(rest), n)
	}
}

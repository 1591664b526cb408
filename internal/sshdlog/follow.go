package sshdlog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
)

// Bounds of a Follower.
const (
	// MaxReadBytes is the most a Follower reads in one call; Read says when
	// more is waiting.
	MaxReadBytes = 1 << 20
	// RotationGrace is how long a Follower keeps reading a file that was
	// renamed away: the syslog daemon writes into it until it is told to
	// reopen its files (logrotate's postrotate), and lines it writes there
	// meanwhile are logins too.
	RotationGrace = time.Minute
	// tailBytes is how much of what was read last is kept to notice a file
	// rewritten in place (copytruncate followed by new lines past the offset).
	tailBytes = 64
)

// Follower reads the lines appended to one log file, as `tail -F` would:
// from the file's end when it starts (a file that does not exist yet is
// read from its start once it appears), across rotation (the file renamed
// away and a new one created: what is still written into the old file is
// read, then the new file from its start) and truncation (copytruncate:
// the file read again from its start). Lines are bounded by MaxLineBytes
// (longer ones are skipped whole) and one call reads at most MaxReadBytes.
//
// A Follower is not safe for concurrent use.
type Follower struct {
	path string
	now  func() time.Time
	// cur is the file at path as last opened; retired are files renamed
	// away, read until RotationGrace has passed.
	cur     *segment
	retired []*segment
	started bool
}

// segment is one open file and how far it was read.
type segment struct {
	f        *os.File
	dev, ino uint64
	off      int64
	// partial is an incomplete last line, waiting for its newline.
	partial []byte
	// skipping is set inside a line that is skipped: too long, or begun
	// before the Follower started.
	skipping bool
	// tail is the last bytes before off, to notice a rewrite in place.
	tail []byte
	// retiredAt is when the file was seen renamed away.
	retiredAt time.Time
}

// NewFollower returns a Follower of path. It opens nothing until Read.
func NewFollower(path string) *Follower {
	return &Follower{path: path, now: time.Now}
}

// Path is the file followed.
func (f *Follower) Path() string { return f.path }

// Open reports whether the file is open: it existed at the last Read.
func (f *Follower) Open() bool { return f.cur != nil }

// Close closes every file the Follower holds.
func (f *Follower) Close() {
	for _, s := range append(f.retired, f.cur) {
		if s != nil {
			_ = s.f.Close()
		}
	}
	f.cur, f.retired = nil, nil
}

// Read returns the complete lines written since the last call, oldest
// first, without their newlines. more is true when it stopped at
// MaxReadBytes with more to read. A file that does not exist is not an
// error (nothing was written); one that cannot be opened or read is.
func (f *Follower) Read() (lines []string, more bool, err error) {
	budget := int64(MaxReadBytes)
	// Files renamed away first: what they hold is older.
	kept := f.retired[:0]
	var retiredErr error
	defer func() {
		if err == nil {
			err = retiredErr
		}
	}()
	for _, s := range f.retired {
		got, m, rerr := s.read(&budget)
		lines = append(lines, got...)
		more = more || m
		if rerr != nil && retiredErr == nil {
			retiredErr = fmt.Errorf("reading the rotated %s: %w", f.path, rerr)
		}
		// Past the grace, a file renamed away is let go, read whole or
		// failing: it is never retried forever with its descriptor open.
		if (rerr != nil || !m) && f.now().Sub(s.retiredAt) >= RotationGrace {
			if rerr == nil {
				lines = s.flush(lines)
			}
			_ = s.f.Close()
			continue
		}
		kept = append(kept, s)
	}
	f.retired = kept
	if more {
		return lines, true, nil
	}

	if f.cur == nil {
		atEnd := !f.started
		f.started = true
		s, err := openSegment(f.path, atEnd)
		if err != nil || s == nil {
			return lines, false, err
		}
		f.cur = s
	}
	got, m, err := f.cur.read(&budget)
	lines = append(lines, got...)
	if err != nil || m {
		return lines, m, err
	}
	// Drained: has the file at path been replaced?
	var st syscall.Stat_t
	switch err := syscall.Stat(f.path, &st); {
	case errors.Is(err, syscall.ENOENT):
		// Renamed away and not yet recreated: keep reading it.
		return lines, false, nil
	case err != nil:
		return lines, false, fmt.Errorf("checking %s: %w", f.path, err)
	case uint64(st.Dev) == f.cur.dev && st.Ino == f.cur.ino:
		return lines, false, nil
	}
	s, err := openSegment(f.path, false)
	if err != nil || s == nil {
		return lines, false, err
	}
	f.cur.retiredAt = f.now()
	f.retired = append(f.retired, f.cur)
	f.cur = s
	got, m, err = f.cur.read(&budget)
	return append(lines, got...), m, err
}

// openSegment opens path; atEnd starts at its end (inside a line when the
// file does not end with a newline: that line is skipped). A missing file
// gives nil without error.
func openSegment(path string, atEnd bool) (*segment, error) {
	// A link is not followed: the log is the file the syslog daemon writes.
	file, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(file.Fd()), &st); err != nil {
		_ = file.Close()
		return nil, fmt.Errorf("checking %s: %w", path, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		_ = file.Close()
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	s := &segment{f: file, dev: uint64(st.Dev), ino: st.Ino}
	if atEnd && st.Size > 0 {
		s.off = st.Size
		n := min(int64(tailBytes), st.Size)
		s.tail = make([]byte, n)
		if _, err := file.ReadAt(s.tail, st.Size-n); err != nil {
			_ = file.Close()
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		s.skipping = s.tail[len(s.tail)-1] != '\n'
	}
	return s, nil
}

// read reads what was appended, up to *budget bytes, starting again from
// the file's start when it was truncated or rewritten in place.
func (s *segment) read(budget *int64) ([]string, bool, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(s.f.Fd()), &st); err != nil {
		return nil, false, fmt.Errorf("checking %s: %w", s.f.Name(), err)
	}
	if st.Size < s.off || !s.tailMatches() {
		// Truncated (copytruncate), or rewritten: everything is new.
		s.off, s.partial, s.skipping, s.tail = 0, nil, false, nil
	}
	var lines []string
	buf := make([]byte, 64<<10)
	for *budget > 0 {
		n, err := s.f.ReadAt(buf[:min(int64(len(buf)), *budget)], s.off)
		if n > 0 {
			lines = s.consume(buf[:n], lines)
			s.off += int64(n)
			*budget -= int64(n)
		}
		if errors.Is(err, io.EOF) || n == 0 {
			return lines, false, nil
		}
		if err != nil {
			return lines, false, fmt.Errorf("reading %s: %w", s.f.Name(), err)
		}
	}
	// Out of budget: more is waiting when the file is longer than read.
	if err := syscall.Fstat(int(s.f.Fd()), &st); err != nil {
		return lines, false, fmt.Errorf("checking %s: %w", s.f.Name(), err)
	}
	return lines, st.Size > s.off, nil
}

// consume splits data into lines, keeping an incomplete last one.
func (s *segment) consume(data []byte, lines []string) []string {
	s.tail = append(s.tail, data[max(0, len(data)-tailBytes):]...)
	s.tail = s.tail[max(0, len(s.tail)-tailBytes):]
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if !s.skipping {
				s.partial = append(s.partial, data...)
				if len(s.partial) > MaxLineBytes {
					s.partial, s.skipping = nil, true
				}
			}
			return lines
		}
		if !s.skipping && len(s.partial)+i <= MaxLineBytes {
			lines = append(lines, string(append(s.partial, data[:i]...)))
		}
		s.partial, s.skipping = s.partial[:0], false
		data = data[i+1:]
	}
	return lines
}

// flush returns the last line of a file no longer written, which may lack
// its newline.
func (s *segment) flush(lines []string) []string {
	if len(s.partial) > 0 && !s.skipping {
		lines = append(lines, string(s.partial))
	}
	s.partial = nil
	return lines
}

// tailMatches checks that the bytes before the offset are still those read.
func (s *segment) tailMatches() bool {
	if len(s.tail) == 0 {
		return true
	}
	got := make([]byte, len(s.tail))
	n, _ := s.f.ReadAt(got, s.off-int64(len(s.tail)))
	return n == len(got) && bytes.Equal(got, s.tail)
}

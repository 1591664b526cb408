// Package nodewriter reads and writes accounts' authorized_keys files under a
// host root (the host's file system as the agent sees it). It is the only
// code that touches node files, and it treats every path as hostile:
//
//   - accounts come from the host's etc/passwd, never the process's own user
//     database; names are checked before lookup;
//   - a home must lie under one of the configured home roots (the host
//     directories the agent mounts, /home by default), must not be "/" or a
//     system directory, and /root is a home only for a uid-0 account when
//     root is allowed;
//   - the home is reached one component at a time through descriptors
//     opened without following links (home.go): every directory on the way
//     must be owned by root or the user and not writable by group or others,
//     the rule sshd's StrictModes applies; a symbolic link is followed only
//     when it and the directory holding it are owned by root and that
//     directory is not writable by others, so a user-made link never leads
//     anywhere;
//   - .ssh and authorized_keys are reached through os.Root handles, must not
//     be symlinks, and the handle opened is checked to be the very inode
//     that was inspected (no swap in between); FIFOs, directories or hard
//     links in place of the file are refused, as is anything StrictModes
//     would refuse;
//   - writes are atomic: a new file in .ssh, written, owned and moded through
//     its descriptor, synced, renamed over the old one, and the directory
//     synced. An unchanged file is not written at all. On any error the
//     existing file is left exactly as it was. A file is never written larger
//     than MaxFileBytes, the most it reads back, so a file the writer wrote
//     can always be edited again.
//
// Every Update says what it proved about the file (State): that it read it,
// that no file can be in use for the account, or nothing at all. Callers
// must treat Unknown as "may hold anything".
package nodewriter

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// Limits on what the writer reads and writes.
const (
	// MaxPasswdBytes bounds the host's etc/passwd.
	MaxPasswdBytes = 16 << 20
	// MaxFileBytes bounds an authorized_keys file: a larger one is refused,
	// never truncated, and nothing larger is ever written.
	MaxFileBytes = 8 << 20
)

// DefaultHomeRoots are the home roots of a writer given none.
var DefaultHomeRoots = []string{"/home"}

// State says what an Update (or a read) proved about an account's file.
type State int

const (
	// Unknown: the file could not be read; it may hold anything.
	Unknown State = iota
	// NoFile: no authorized_keys of the account can be in use or can have
	// been written by the writer: no such account, no home, or a home outside
	// the home roots or in a system directory.
	NoFile
	// Read: the file was read (or found missing) and its bytes given to the
	// edit; after a failed write it still holds exactly those bytes.
	Read
)

// Error is a refusal or failure, with the reason and the host path concerned.
type Error struct {
	// Reason is a CamelCase code from api/v1alpha1 (UserNotFound, UnsafePath, ...).
	Reason string
	User   string
	Path   string
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: user %s: %s: %v", e.Reason, e.User, e.Path, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the reason of a writer error, or "" for another error.
func ReasonOf(err error) string {
	var werr *Error
	if errors.As(err, &werr) {
		return werr.Reason
	}
	return ""
}

// Account is a local account as the host's etc/passwd describes it.
type Account struct {
	Name string
	UID  int
	GID  int
	Home string
}

// Result says what an Update did.
type Result struct {
	// State is what the Update proved about the file before writing.
	State State
	// Changed is true when the file was written.
	Changed bool
	// Path is the file's host path as etc/passwd names it.
	Path string
	// Dirs are the host paths of the resolved home and its .ssh, for a
	// watcher; empty when the home was not reached.
	Dirs []string
}

// Options shape a writer.
type Options struct {
	// HomeRoots are the host directories homes may lie under (what the
	// agent mounts); empty means DefaultHomeRoots.
	HomeRoots []string
	// AllowRoot permits /root as the home of a uid-0 account.
	AllowRoot bool
}

// Writer edits authorized_keys files under a host root.
type Writer struct {
	hostRoot  string
	roots     []string
	allowRoot bool
}

// New returns a writer for the host file system mounted at hostRoot.
func New(hostRoot string, opts Options) (*Writer, error) {
	info, err := os.Stat(hostRoot)
	if err != nil {
		return nil, fmt.Errorf("opening host root: %w", err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("host root %s is not a directory", hostRoot)
	}
	roots := opts.HomeRoots
	if len(roots) == 0 {
		roots = DefaultHomeRoots
	}
	for _, r := range roots {
		if err := checkHomeRoot(r); err != nil {
			return nil, err
		}
	}
	return &Writer{hostRoot: hostRoot, roots: append([]string(nil), roots...), allowRoot: opts.AllowRoot}, nil
}

// CheckHomeRoot tells whether dir may be a home root: a clean absolute
// path, not "/", not a system directory and not /root (which AllowRoot
// covers).
func CheckHomeRoot(dir string) error { return checkHomeRoot(dir) }

func checkHomeRoot(dir string) error {
	if err := checkHomeLocation(dir); err != nil {
		return fmt.Errorf("home root %q: %w", dir, err)
	}
	if under(dir, "/root") {
		return fmt.Errorf("home root %q: /root is root's home, allowed with root itself", dir)
	}
	return nil
}

func validName(s string) bool {
	if s == "" || len(s) > 32 || !(s[0] >= 'a' && s[0] <= 'z' || s[0] == '_') {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// systemDirs are directories no account's keys may be written under.
var systemDirs = []string{"/etc", "/proc", "/sys", "/dev", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64",
	"/libx32", "/boot", "/run", "/var/run", "/var/lib", "/var/log", "/tmp", "/var/tmp"}

// under reports whether p is dir or inside it.
func under(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// checkHomeLocation refuses "/", unclean or relative paths, and system directories.
func checkHomeLocation(home string) error {
	if !path.IsAbs(home) || path.Clean(home) != home {
		return errors.New("not a clean absolute path")
	}
	if home == "/" {
		return errors.New("it is the root directory")
	}
	for _, dir := range systemDirs {
		if under(home, dir) {
			return fmt.Errorf("it is under the system directory %s", dir)
		}
	}
	return nil
}

// Accounts lists the valid entries of the host's etc/passwd, first entry per name.
func (w *Writer) Accounts() ([]Account, error) {
	f, err := os.Open(path.Join(w.hostRoot, "etc", "passwd"))
	if err != nil {
		return nil, &Error{Reason: nav1.PasswdUnreadableReason, Path: "/etc/passwd", Err: err}
	}
	defer f.Close()
	var accounts []Account
	seen := map[string]bool{}
	sc := bufio.NewScanner(io.LimitReader(f, MaxPasswdBytes))
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) != 7 || !validName(fields[0]) || seen[fields[0]] {
			continue
		}
		uid, err1 := strconv.Atoi(fields[2])
		gid, err2 := strconv.Atoi(fields[3])
		if err1 != nil || err2 != nil || uid < 0 || gid < 0 {
			continue
		}
		seen[fields[0]] = true
		accounts = append(accounts, Account{Name: fields[0], UID: uid, GID: gid, Home: fields[5]})
	}
	if err := sc.Err(); err != nil {
		return nil, &Error{Reason: nav1.PasswdUnreadableReason, Path: "/etc/passwd", Err: err}
	}
	return accounts, nil
}

// PasswdReplaced tells whether the host's etc/passwd, as this process sees
// it, is a file the host has since replaced: its link count is zero. That
// is the case of a single-file mount (the agent's pod mounts /etc/passwd
// alone) after the host renamed a new file over it, as useradd does: the
// mount keeps the old inode, and only a new mount shows the new file.
func (w *Writer) PasswdReplaced() (bool, error) {
	fi, err := os.Stat(path.Join(w.hostRoot, "etc", "passwd"))
	if err != nil {
		return false, &Error{Reason: nav1.PasswdUnreadableReason, Path: "/etc/passwd", Err: err}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Nlink == 0, nil
}

// LookupAccount returns the account from the host's etc/passwd.
func (w *Writer) LookupAccount(name string) (Account, error) {
	if !validName(name) {
		return Account{}, &Error{Reason: nav1.InvalidUserNameReason, User: name, Path: "/etc/passwd", Err: errors.New("not a valid account name")}
	}
	accounts, err := w.Accounts()
	if err != nil {
		return Account{}, err
	}
	for _, a := range accounts {
		if a.Name == name {
			return a, nil
		}
	}
	return Account{}, &Error{Reason: nav1.UserNotFoundReason, User: name, Path: "/etc/passwd", Err: errors.New("no such account on the host")}
}

// CheckHome tells, from etc/passwd alone, whether the writer may ever write
// under the account's home: nil when it may; an error with reason
// HomeUnsafe or HomeNotMounted when it never does (so no key it wrote can be
// there).
func (w *Writer) CheckHome(acct Account) error {
	fail := func(reason string, err error) error {
		return &Error{Reason: reason, User: acct.Name, Path: acct.Home, Err: err}
	}
	if under(acct.Home, "/root") {
		if acct.Home != "/root" || acct.UID != 0 || !w.allowRoot {
			return fail(nav1.HomeNotMountedReason, errors.New("/root is written only for root, and only when the operator allows root"))
		}
		return nil
	}
	if err := checkHomeLocation(acct.Home); err != nil {
		return fail(nav1.HomeUnsafeReason, err)
	}
	for _, r := range w.roots {
		if under(acct.Home, r) {
			return nil
		}
	}
	return fail(nav1.HomeNotMountedReason, fmt.Errorf("the home is not under a home root the agent mounts (%s)", strings.Join(w.roots, ", ")))
}

// handles are the open roots for one account, closed together.
type handles struct {
	acct   Account
	home   *os.Root
	ssh    *os.Root    // nil when .ssh does not exist
	sshFI  fs.FileInfo // what was checked of .ssh
	fileFI fs.FileInfo // what was checked of authorized_keys; nil when missing
	paths  [2]string   // host paths of .ssh and the file, as etc/passwd names them
	dirs   []string    // resolved host paths of the home and .ssh
}

func (h *handles) close() {
	for _, r := range []*os.Root{h.ssh, h.home} {
		if r != nil {
			r.Close()
		}
	}
}

func (h *handles) fail(reason, p string, err error) error {
	return &Error{Reason: reason, User: h.acct.Name, Path: p, Err: err}
}

// openAccount checks the account's home, .ssh and file, and opens them. The
// State is NoFile or Unknown when it fails.
func (w *Writer) openAccount(acct Account) (*handles, State, error) {
	if err := w.CheckHome(acct); err != nil {
		return nil, NoFile, err
	}
	h := &handles{acct: acct, paths: [2]string{path.Join(acct.Home, ".ssh"), path.Join(acct.Home, ".ssh", "authorized_keys")}}
	home, resolved, err := w.openHome(acct)
	if err != nil {
		if reason := ReasonOf(err); reason == nav1.HomeNotFoundReason || reason == nav1.HomeUnsafeReason {
			return nil, NoFile, err
		}
		return nil, Unknown, err
	}
	h.home = home
	h.dirs = []string{resolved, path.Join(resolved, ".ssh")}

	h.sshFI, err = h.home.Lstat(".ssh")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		h.sshFI = nil
		return h, Read, nil
	case err != nil:
		h.close()
		return nil, Unknown, h.fail(nav1.ReadFailedReason, h.paths[0], err)
	case h.sshFI.Mode()&fs.ModeSymlink != 0:
		h.close()
		return nil, Unknown, h.fail(nav1.UnsafePathReason, h.paths[0], errors.New(".ssh is a symbolic link"))
	case !h.sshFI.IsDir():
		h.close()
		return nil, Unknown, h.fail(nav1.NotRegularFileReason, h.paths[0], errors.New(".ssh is not a directory"))
	}
	if err := h.checkOwnerAndMode(h.sshFI, h.paths[0], true); err != nil {
		h.close()
		return nil, Unknown, err
	}
	if err := h.openSSH(); err != nil {
		h.close()
		return nil, Unknown, err
	}

	h.fileFI, err = h.ssh.Lstat("authorized_keys")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		h.fileFI = nil
		return h, Read, nil
	case err != nil:
		h.close()
		return nil, Unknown, h.fail(nav1.ReadFailedReason, h.paths[1], err)
	}
	if err := h.checkFile(h.fileFI); err != nil {
		h.close()
		return nil, Unknown, err
	}
	return h, Read, nil
}

// openSSH opens .ssh as a root and checks it is the directory inspected.
func (h *handles) openSSH() error {
	r, err := h.home.OpenRoot(".ssh")
	if err != nil {
		return h.fail(nav1.UnsafePathReason, h.paths[0], err)
	}
	fi, err := r.Stat(".")
	if err != nil || !os.SameFile(fi, h.sshFI) {
		r.Close()
		return h.fail(nav1.UnsafePathReason, h.paths[0], errors.New(".ssh changed while it was being opened"))
	}
	h.ssh = r
	return nil
}

func (h *handles) checkFile(fi fs.FileInfo) error {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return h.fail(nav1.UnsafePathReason, h.paths[1], errors.New("authorized_keys is a symbolic link"))
	case !fi.Mode().IsRegular():
		return h.fail(nav1.NotRegularFileReason, h.paths[1], fmt.Errorf("authorized_keys is not a regular file (%s)", fi.Mode().Type()))
	case fi.Size() > MaxFileBytes:
		return h.fail(nav1.FileTooLargeReason, h.paths[1], fmt.Errorf("authorized_keys is %d bytes, more than %d", fi.Size(), MaxFileBytes))
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
		return h.fail(nav1.UnsafePathReason, h.paths[1], errors.New("authorized_keys has other hard links"))
	}
	return h.checkOwnerAndMode(fi, h.paths[1], false)
}

// checkOwnerAndMode refuses what sshd's StrictModes refuses.
func (h *handles) checkOwnerAndMode(fi fs.FileInfo, p string, dir bool) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return h.fail(nav1.ReadFailedReason, p, errors.New("no ownership information"))
	}
	return strictModes(h.acct, p, int(st.Uid), uint32(fi.Mode().Perm()), dir)
}

// strictModes is sshd's StrictModes rule for one path component: owned by
// root or the user, not writable by group or others.
func strictModes(acct Account, p string, uid int, perm uint32, dir bool) error {
	if uid != acct.UID && uid != 0 {
		return &Error{Reason: nav1.UnsafeOwnerReason, User: acct.Name, Path: p,
			Err: fmt.Errorf("owned by uid %d, not %s (%d) or root", uid, acct.Name, acct.UID)}
	}
	if perm&0o022 != 0 {
		what := "file"
		if dir {
			what = "directory"
		}
		return &Error{Reason: nav1.UnsafePermissionsReason, User: acct.Name, Path: p,
			Err: fmt.Errorf("%s is writable by group or others (%v); sshd would refuse it", what, fs.FileMode(perm))}
	}
	return nil
}

// read returns the file's bytes through a descriptor checked to be the inode inspected.
func (h *handles) read() ([]byte, error) {
	if h.fileFI == nil {
		return nil, nil
	}
	f, err := h.ssh.OpenFile("authorized_keys", os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, h.fail(nav1.UnsafePathReason, h.paths[1], err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !os.SameFile(fi, h.fileFI) || !fi.Mode().IsRegular() {
		return nil, h.fail(nav1.UnsafePathReason, h.paths[1], errors.New("authorized_keys changed while it was being opened"))
	}
	data, err := readAtMost(f, fi.Size(), MaxFileBytes+1)
	if err != nil {
		return nil, h.fail(nav1.ReadFailedReason, h.paths[1], err)
	}
	if len(data) > MaxFileBytes {
		return nil, h.fail(nav1.FileTooLargeReason, h.paths[1], fmt.Errorf("authorized_keys is larger than %d bytes", MaxFileBytes))
	}
	return data, nil
}

// Read returns the account's authorized_keys bytes (nil when missing), after
// the same checks as Update, and what it proved.
func (w *Writer) Read(name string) ([]byte, State, error) {
	acct, err := w.LookupAccount(name)
	if err != nil {
		return nil, lookupState(err), err
	}
	return w.ReadAccount(acct)
}

// ReadAccount is Read for an account already looked up (see Accounts).
func (w *Writer) ReadAccount(acct Account) ([]byte, State, error) {
	h, state, err := w.openAccount(acct)
	if err != nil {
		return nil, state, err
	}
	defer h.close()
	data, err := h.read()
	if err != nil {
		return nil, Unknown, err
	}
	return data, Read, nil
}

// lookupState is what a failed lookup proves: nothing when etc/passwd could
// not be read; no file when the account does not exist.
func lookupState(err error) State {
	if ReasonOf(err) == nav1.PasswdUnreadableReason {
		return Unknown
	}
	return NoFile
}

// Update reads the account's authorized_keys, passes its bytes to edit, and
// writes what edit returns when it differs. When edit fails, or anything
// else does, the file is left as it was. Content larger than MaxFileBytes is
// never written (FileTooLarge): the caller may retry with an edit that only
// removes lines.
func (w *Writer) Update(name string, edit func(current []byte) ([]byte, error)) (Result, error) {
	acct, err := w.LookupAccount(name)
	if err != nil {
		return Result{State: lookupState(err)}, err
	}
	return w.UpdateAccount(acct, edit)
}

// UpdateAccount is Update for an account already looked up.
func (w *Writer) UpdateAccount(acct Account, edit func(current []byte) ([]byte, error)) (Result, error) {
	res := Result{Path: path.Join(acct.Home, ".ssh", "authorized_keys")}
	h, state, err := w.openAccount(acct)
	if err != nil {
		res.State = state
		return res, err
	}
	defer h.close()
	res.Dirs = h.dirs
	current, err := h.read()
	if err != nil {
		return res, err
	}
	res.State = Read
	next, err := edit(current)
	if err != nil {
		return res, err
	}
	if bytes.Equal(current, next) {
		return res, nil
	}
	if len(next) > MaxFileBytes {
		return res, h.fail(nav1.FileTooLargeReason, h.paths[1], fmt.Errorf("the new content would be %d bytes, more than %d", len(next), MaxFileBytes))
	}
	if h.ssh == nil {
		if err := h.createSSH(); err != nil {
			return res, err
		}
	}
	if err := h.replace(next); err != nil {
		if ReasonOf(err) == nav1.ChangedDuringEditReason {
			res.State = Unknown
		}
		return res, err
	}
	res.Changed = true
	return res, nil
}

// createSSH makes .ssh (0700, owned by the user) and opens it.
func (h *handles) createSSH() error {
	if err := h.home.Mkdir(".ssh", 0o700); err != nil {
		return h.fail(nav1.WriteFailedReason, h.paths[0], err)
	}
	fi, err := h.home.Lstat(".ssh")
	if err != nil || !fi.IsDir() {
		return h.fail(nav1.UnsafePathReason, h.paths[0], errors.New(".ssh changed while it was being created"))
	}
	h.sshFI = fi
	if err := h.openSSH(); err != nil {
		return err
	}
	d, err := h.ssh.Open(".")
	if err != nil {
		return h.fail(nav1.WriteFailedReason, h.paths[0], err)
	}
	defer d.Close()
	if err := d.Chown(h.acct.UID, h.acct.GID); err != nil {
		return h.fail(nav1.WriteFailedReason, h.paths[0], err)
	}
	if err := d.Chmod(0o700); err != nil {
		return h.fail(nav1.WriteFailedReason, h.paths[0], err)
	}
	return nil
}

// ownerAndMode is what the new file gets: the existing file's owner and
// mode (the user's, or root's when an administrator owns the file), or
// the user and 0600 for a new file.
func (h *handles) ownerAndMode() (int, int, os.FileMode) {
	if h.fileFI != nil {
		if st, ok := h.fileFI.Sys().(*syscall.Stat_t); ok {
			return int(st.Uid), int(st.Gid), h.fileFI.Mode().Perm()
		}
	}
	return h.acct.UID, h.acct.GID, 0o600
}

// replace writes content to a new file in .ssh and renames it over authorized_keys.
func (h *handles) replace(content []byte) (err error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return h.fail(nav1.WriteFailedReason, h.paths[1], err)
	}
	tmp := ".authorized_keys.nodeaccess-" + hex.EncodeToString(rnd[:])
	f, err := h.ssh.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return h.fail(nav1.WriteFailedReason, h.paths[1], err)
	}
	defer func() {
		if err != nil {
			_ = h.ssh.Remove(tmp)
		}
	}()
	uid, gid, mode := h.ownerAndMode()
	_, werr := f.Write(content)
	if werr == nil {
		werr = f.Chown(uid, gid)
	}
	if werr == nil {
		werr = f.Chmod(mode)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return h.fail(nav1.WriteFailedReason, h.paths[1], werr)
	}
	// The file must still be the one that was read: never overwrite a
	// change made meanwhile (the next pass starts from it).
	now, lerr := h.ssh.Lstat("authorized_keys")
	switch {
	case h.fileFI == nil && lerr == nil, h.fileFI != nil && (lerr != nil || !os.SameFile(now, h.fileFI) ||
		now.Size() != h.fileFI.Size() || !now.ModTime().Equal(h.fileFI.ModTime())):
		return h.fail(nav1.ChangedDuringEditReason, h.paths[1], errors.New("authorized_keys changed while it was being edited"))
	}
	if err := h.ssh.Rename(tmp, "authorized_keys"); err != nil {
		return h.fail(nav1.WriteFailedReason, h.paths[1], err)
	}
	if d, err := h.ssh.Open("."); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// readAtMost reads r to its end or to limit bytes, whichever comes first,
// into a buffer sized for the size the file had when opened (the file may
// still grow or shrink meanwhile: the bytes read are what counts).
func readAtMost(r io.Reader, size, limit int64) ([]byte, error) {
	buf := make([]byte, 0, min(max(size, 0)+1, limit))
	lr := io.LimitReader(r, limit)
	for {
		if int64(len(buf)) >= limit {
			return buf, nil
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// Package nodewriter reads and writes accounts' authorized_keys files under a
// host root (the host's file system as the agent sees it). It is the only
// code that touches node files, and it treats every path as hostile:
//
//   - accounts come from the host's etc/passwd, never the process's own user
//     database; names are checked before lookup, and homes that are "/" or a
//     system directory are refused;
//   - every file is reached through os.Root handles (the host root, the home,
//     .ssh), so no "..", absolute path or symlink leads out of them; .ssh and
//     authorized_keys themselves must not be symlinks, and the handle opened
//     is checked to be the very inode that was inspected (no swap in between);
//   - what sshd's StrictModes would refuse is refused and reported instead of
//     written: a home, .ssh or file writable by group or others, or owned by
//     someone other than the user or root; so are FIFOs, directories or hard
//     links in place of the file;
//   - writes are atomic: a new file in .ssh, written, owned and moded through
//     its descriptor, synced, renamed over the old one, and the directory
//     synced. An unchanged file is not written at all. On any error the
//     existing file is left exactly as it was.
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
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// Reason is a CamelCase code for a refusal or failure; it goes into status.
type Reason string

// Reasons the writer reports.
const (
	ReasonInvalidUserName   Reason = "InvalidUserName"
	ReasonUserNotFound      Reason = "UserNotFound"
	ReasonPasswdUnreadable  Reason = "PasswdUnreadable"
	ReasonHomeNotFound      Reason = "HomeNotFound"
	ReasonHomeUnsafe        Reason = "HomeUnsafe"
	ReasonUnsafePath        Reason = "UnsafePath"
	ReasonNotRegularFile    Reason = "NotRegularFile"
	ReasonUnsafeOwner       Reason = "UnsafeOwner"
	ReasonUnsafePermissions Reason = "UnsafePermissions"
	ReasonFileTooLarge      Reason = "FileTooLarge"
	ReasonChangedDuringEdit Reason = "ChangedDuringEdit"
	ReasonReadFailed        Reason = "ReadFailed"
	ReasonWriteFailed       Reason = "WriteFailed"
)

// Limits on what the writer reads.
const (
	// MaxPasswdBytes bounds the host's etc/passwd.
	MaxPasswdBytes = 16 << 20
	// MaxFileBytes bounds an authorized_keys file; a larger one is refused, never truncated.
	MaxFileBytes = 8 << 20
)

// Error is a refusal or failure, with the reason and the host path concerned.
type Error struct {
	Reason Reason
	User   string
	Path   string
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: user %s: %s: %v", e.Reason, e.User, e.Path, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Account is a local account as the host's etc/passwd describes it.
type Account struct {
	Name string
	UID  int
	GID  int
	Home string
}

// Result says what an Update did.
type Result struct {
	// Changed is true when the file was written.
	Changed bool
	// Path is the file's path on the host.
	Path string
}

// Writer edits authorized_keys files under a host root.
type Writer struct {
	hostRoot string
}

// New returns a writer for the host file system mounted at hostRoot.
func New(hostRoot string) (*Writer, error) {
	info, err := os.Stat(hostRoot)
	if err != nil {
		return nil, fmt.Errorf("opening host root: %w", err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("host root %s is not a directory", hostRoot)
	}
	return &Writer{hostRoot: hostRoot}, nil
}

var namePattern = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// unsafeHomes are directories no account's keys may be written under.
var unsafeHomes = []string{"/etc", "/proc", "/sys", "/dev", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/boot", "/run"}

// Accounts lists the valid entries of the host's etc/passwd, first entry per name.
func (w *Writer) Accounts() ([]Account, error) {
	f, err := os.Open(path.Join(w.hostRoot, "etc", "passwd"))
	if err != nil {
		return nil, &Error{Reason: ReasonPasswdUnreadable, Path: "/etc/passwd", Err: err}
	}
	defer f.Close()
	var accounts []Account
	seen := map[string]bool{}
	sc := bufio.NewScanner(io.LimitReader(f, MaxPasswdBytes))
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) != 7 || !namePattern.MatchString(fields[0]) || seen[fields[0]] {
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
		return nil, &Error{Reason: ReasonPasswdUnreadable, Path: "/etc/passwd", Err: err}
	}
	return accounts, nil
}

// LookupAccount returns the account from the host's etc/passwd, with its home checked.
func (w *Writer) LookupAccount(name string) (Account, error) {
	if !namePattern.MatchString(name) {
		return Account{}, &Error{Reason: ReasonInvalidUserName, User: name, Path: "/etc/passwd", Err: errors.New("not a valid account name")}
	}
	accounts, err := w.Accounts()
	if err != nil {
		return Account{}, err
	}
	for _, a := range accounts {
		if a.Name != name {
			continue
		}
		if err := checkHome(a.Home); err != nil {
			return Account{}, &Error{Reason: ReasonHomeUnsafe, User: name, Path: a.Home, Err: err}
		}
		return a, nil
	}
	return Account{}, &Error{Reason: ReasonUserNotFound, User: name, Path: "/etc/passwd", Err: errors.New("no such account on the host")}
}

func checkHome(home string) error {
	if !path.IsAbs(home) || path.Clean(home) != home {
		return errors.New("home is not a clean absolute path")
	}
	if home == "/" {
		return errors.New("home is the root directory")
	}
	for _, dir := range unsafeHomes {
		if home == dir || strings.HasPrefix(home, dir+"/") {
			return fmt.Errorf("home is under the system directory %s", dir)
		}
	}
	return nil
}

// handles are the open roots for one account, closed together.
type handles struct {
	acct   Account
	host   *os.Root
	home   *os.Root
	ssh    *os.Root    // nil when .ssh does not exist
	sshFI  fs.FileInfo // what was checked of .ssh
	fileFI fs.FileInfo // what was checked of authorized_keys; nil when missing
	paths  [2]string   // host paths of .ssh and the file
}

func (h *handles) close() {
	for _, r := range []*os.Root{h.ssh, h.home, h.host} {
		if r != nil {
			r.Close()
		}
	}
}

func (h *handles) fail(reason Reason, p string, err error) error {
	return &Error{Reason: reason, User: h.acct.Name, Path: p, Err: err}
}

// open checks the account's home, .ssh and file, and opens them.
func (w *Writer) open(name string) (*handles, error) {
	acct, err := w.LookupAccount(name)
	if err != nil {
		return nil, err
	}
	return w.openAccount(acct)
}

func (w *Writer) openAccount(acct Account) (*handles, error) {
	if err := checkHome(acct.Home); err != nil {
		return nil, &Error{Reason: ReasonHomeUnsafe, User: acct.Name, Path: acct.Home, Err: err}
	}
	var err error
	h := &handles{acct: acct, paths: [2]string{path.Join(acct.Home, ".ssh"), path.Join(acct.Home, ".ssh", "authorized_keys")}}
	if h.host, err = os.OpenRoot(w.hostRoot); err != nil {
		return nil, h.fail(ReasonReadFailed, "/", err)
	}
	if h.home, err = h.host.OpenRoot(strings.TrimPrefix(acct.Home, "/")); err != nil {
		h.close()
		if errors.Is(err, fs.ErrNotExist) {
			return nil, h.fail(ReasonHomeNotFound, acct.Home, err)
		}
		return nil, h.fail(ReasonUnsafePath, acct.Home, err)
	}
	homeFI, err := h.home.Stat(".")
	if err != nil {
		h.close()
		return nil, h.fail(ReasonReadFailed, acct.Home, err)
	}
	if err := h.checkOwnerAndMode(homeFI, acct.Home, true); err != nil {
		h.close()
		return nil, err
	}

	h.sshFI, err = h.home.Lstat(".ssh")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		h.sshFI = nil
		return h, nil
	case err != nil:
		h.close()
		return nil, h.fail(ReasonReadFailed, h.paths[0], err)
	case h.sshFI.Mode()&fs.ModeSymlink != 0:
		h.close()
		return nil, h.fail(ReasonUnsafePath, h.paths[0], errors.New(".ssh is a symbolic link"))
	case !h.sshFI.IsDir():
		h.close()
		return nil, h.fail(ReasonNotRegularFile, h.paths[0], errors.New(".ssh is not a directory"))
	}
	if err := h.checkOwnerAndMode(h.sshFI, h.paths[0], true); err != nil {
		h.close()
		return nil, err
	}
	if err := h.openSSH(); err != nil {
		h.close()
		return nil, err
	}

	h.fileFI, err = h.ssh.Lstat("authorized_keys")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		h.fileFI = nil
		return h, nil
	case err != nil:
		h.close()
		return nil, h.fail(ReasonReadFailed, h.paths[1], err)
	}
	if err := h.checkFile(h.fileFI); err != nil {
		h.close()
		return nil, err
	}
	return h, nil
}

// openSSH opens .ssh as a root and checks it is the directory inspected.
func (h *handles) openSSH() error {
	r, err := h.home.OpenRoot(".ssh")
	if err != nil {
		return h.fail(ReasonUnsafePath, h.paths[0], err)
	}
	fi, err := r.Stat(".")
	if err != nil || !os.SameFile(fi, h.sshFI) {
		r.Close()
		return h.fail(ReasonUnsafePath, h.paths[0], errors.New(".ssh changed while it was being opened"))
	}
	h.ssh = r
	return nil
}

func (h *handles) checkFile(fi fs.FileInfo) error {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return h.fail(ReasonUnsafePath, h.paths[1], errors.New("authorized_keys is a symbolic link"))
	case !fi.Mode().IsRegular():
		return h.fail(ReasonNotRegularFile, h.paths[1], fmt.Errorf("authorized_keys is not a regular file (%s)", fi.Mode().Type()))
	case fi.Size() > MaxFileBytes:
		return h.fail(ReasonFileTooLarge, h.paths[1], fmt.Errorf("authorized_keys is %d bytes, more than %d", fi.Size(), MaxFileBytes))
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
		return h.fail(ReasonUnsafePath, h.paths[1], errors.New("authorized_keys has other hard links"))
	}
	return h.checkOwnerAndMode(fi, h.paths[1], false)
}

// checkOwnerAndMode refuses what sshd's StrictModes refuses.
func (h *handles) checkOwnerAndMode(fi fs.FileInfo, p string, dir bool) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return h.fail(ReasonReadFailed, p, errors.New("no ownership information"))
	}
	if int(st.Uid) != h.acct.UID && st.Uid != 0 {
		return h.fail(ReasonUnsafeOwner, p, fmt.Errorf("owned by uid %d, not %s (%d) or root", st.Uid, h.acct.Name, h.acct.UID))
	}
	if fi.Mode().Perm()&0o022 != 0 {
		what := "file"
		if dir {
			what = "directory"
		}
		return h.fail(ReasonUnsafePermissions, p, fmt.Errorf("%s is writable by group or others (%v); sshd would refuse it", what, fi.Mode().Perm()))
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
		return nil, h.fail(ReasonUnsafePath, h.paths[1], err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !os.SameFile(fi, h.fileFI) || !fi.Mode().IsRegular() {
		return nil, h.fail(ReasonUnsafePath, h.paths[1], errors.New("authorized_keys changed while it was being opened"))
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, h.fail(ReasonReadFailed, h.paths[1], err)
	}
	if len(data) > MaxFileBytes {
		return nil, h.fail(ReasonFileTooLarge, h.paths[1], fmt.Errorf("authorized_keys is larger than %d bytes", MaxFileBytes))
	}
	return data, nil
}

// Read returns the account's authorized_keys bytes (nil when missing), after
// the same checks as Update.
func (w *Writer) Read(name string) ([]byte, error) {
	acct, err := w.LookupAccount(name)
	if err != nil {
		return nil, err
	}
	return w.ReadAccount(acct)
}

// ReadAccount is Read for an account already looked up (see Accounts).
func (w *Writer) ReadAccount(acct Account) ([]byte, error) {
	h, err := w.openAccount(acct)
	if err != nil {
		return nil, err
	}
	defer h.close()
	return h.read()
}

// Update reads the account's authorized_keys, passes its bytes to edit, and
// writes what edit returns when it differs. When edit fails, or anything
// else does, the file is left as it was.
func (w *Writer) Update(name string, edit func(current []byte) ([]byte, error)) (Result, error) {
	h, err := w.open(name)
	if err != nil {
		return Result{}, err
	}
	defer h.close()
	res := Result{Path: h.paths[1]}
	current, err := h.read()
	if err != nil {
		return res, err
	}
	next, err := edit(current)
	if err != nil {
		return res, err
	}
	if bytes.Equal(current, next) {
		return res, nil
	}
	if h.ssh == nil {
		if err := h.createSSH(); err != nil {
			return res, err
		}
	}
	if err := h.replace(next); err != nil {
		return res, err
	}
	res.Changed = true
	return res, nil
}

// createSSH makes .ssh (0700, owned by the user) and opens it.
func (h *handles) createSSH() error {
	if err := h.home.Mkdir(".ssh", 0o700); err != nil {
		return h.fail(ReasonWriteFailed, h.paths[0], err)
	}
	fi, err := h.home.Lstat(".ssh")
	if err != nil || !fi.IsDir() {
		return h.fail(ReasonUnsafePath, h.paths[0], errors.New(".ssh changed while it was being created"))
	}
	h.sshFI = fi
	if err := h.openSSH(); err != nil {
		return err
	}
	d, err := h.ssh.Open(".")
	if err != nil {
		return h.fail(ReasonWriteFailed, h.paths[0], err)
	}
	defer d.Close()
	if err := d.Chown(h.acct.UID, h.acct.GID); err != nil {
		return h.fail(ReasonWriteFailed, h.paths[0], err)
	}
	if err := d.Chmod(0o700); err != nil {
		return h.fail(ReasonWriteFailed, h.paths[0], err)
	}
	return nil
}

// replace writes content to a new file in .ssh and renames it over authorized_keys.
func (h *handles) replace(content []byte) (err error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return h.fail(ReasonWriteFailed, h.paths[1], err)
	}
	tmp := ".authorized_keys.nodeaccess-" + hex.EncodeToString(rnd[:])
	f, err := h.ssh.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return h.fail(ReasonWriteFailed, h.paths[1], err)
	}
	defer func() {
		if err != nil {
			_ = h.ssh.Remove(tmp)
		}
	}()
	_, werr := f.Write(content)
	if werr == nil {
		werr = f.Chown(h.acct.UID, h.acct.GID)
	}
	if werr == nil {
		werr = f.Chmod(0o600)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return h.fail(ReasonWriteFailed, h.paths[1], werr)
	}
	// The file must still be the one that was read: never overwrite a
	// change made meanwhile (the next pass starts from it).
	now, lerr := h.ssh.Lstat("authorized_keys")
	switch {
	case h.fileFI == nil && lerr == nil, h.fileFI != nil && (lerr != nil || !os.SameFile(now, h.fileFI) ||
		now.Size() != h.fileFI.Size() || !now.ModTime().Equal(h.fileFI.ModTime())):
		return h.fail(ReasonChangedDuringEdit, h.paths[1], errors.New("authorized_keys changed while it was being edited"))
	}
	if err := h.ssh.Rename(tmp, "authorized_keys"); err != nil {
		return h.fail(ReasonWriteFailed, h.paths[1], err)
	}
	if d, err := h.ssh.Open("."); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

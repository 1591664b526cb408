package agent

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
	"github.com/nodeaccess/nodeaccess-operator/internal/sshdlog"
)

// Bounds and pace of login tracking.
const (
	// loginPoll is the safety poll of the sshd logs, beside file events.
	loginPoll = 5 * time.Second
	// maxSessions bounds the sessions remembered (the oldest go first).
	maxSessions = 4096
	// readsPerWake bounds the reads of one wake-up; more waits for the next.
	readsPerWake = 16
)

// loginTracker follows the node's sshd logs (internal/sshdlog), attributes
// each key login to the grants that give that key to that account, and,
// with EndSessions, ends the sessions whose key the account no longer has.
//
// A line is trusted only when, as it is read, the PID it names is the root
// sshd session monitor of that account (sshdlog.Procfs), started after
// the agent began reading (an older session's own line was never seen, so
// a forged one naming it cannot be told apart), and no other login line
// named the same session (a second one proves a forgery: the session is
// disputed, and never ended on either's word). Only trusted sessions are
// remembered for ending, and each is checked again, PID and start time,
// right before it is signalled.
type loginTracker struct {
	hostPaths   []string
	followers   []*sshdlog.Follower
	proc        sshdlog.Procfs
	endSessions bool
	now         func() time.Time

	mu sync.Mutex
	// since is when reading began, in ticks since boot.
	since uint64
	// planned is set by the first update: logins can be attributed;
	// started once the files were first read.
	planned, started bool
	// keys maps an account and a key fingerprint to the grants that give
	// that key to that account now.
	keys map[string]map[string][]grantKey
	// logins are the recent managed logins, newest first.
	logins []*loginEntry
	// sessions are the sessions verified when their line was read, by PID.
	sessions  map[int]*session
	unmanaged int64
	// files are the host paths open; reason and message say why none is.
	files           []string
	reason, message string
}

// grantKey is one grant's key as a login is attributed to it.
type grantKey struct {
	name, uid, comment string
}

type loginEntry struct {
	login nav1.NodeLogin
	// pid names the session the line named, when it was verified.
	pid int
}

// session is one verified sshd session.
type session struct {
	s           sshdlog.Session
	fingerprint string
	// managed is true when a grant gave the key when the line was read.
	managed bool
	// claims are the managed keys that lines naming this session claimed
	// (more than one only when a line was forged): the session is ended
	// when any of them is revoked, whichever line was sshd's.
	claims   map[string]bool
	disputed bool
	ended    bool
	seen     time.Time
}

// newLoginTracker returns a tracker of the given host paths of sshd logs
// under hostRoot, or nil when there are none.
func newLoginTracker(hostRoot string, paths []string, procRoot string, endSessions bool) (*loginTracker, error) {
	if len(paths) == 0 {
		if endSessions {
			return nil, errors.New("ending sessions on revoke needs the sshd logs (--sshd-logs)")
		}
		return nil, nil
	}
	if len(paths) > nav1.MaxLoginFiles {
		return nil, fmt.Errorf("at most %d sshd logs can be followed, not %d", nav1.MaxLoginFiles, len(paths))
	}
	t := &loginTracker{proc: sshdlog.Procfs{Root: procRoot}, endSessions: endSessions, now: time.Now,
		sessions: map[int]*session{}, keys: map[string]map[string][]grantKey{}}
	for _, p := range paths {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/" {
			return nil, fmt.Errorf("sshd log %q is not a clean absolute host path", p)
		}
		t.hostPaths = append(t.hostPaths, p)
		t.followers = append(t.followers, sshdlog.NewFollower(filepath.Join(hostRoot, p)))
	}
	var err error
	if t.since, err = sshdlog.BootTicks(); err != nil {
		return nil, err
	}
	return t, nil
}

// run reads the logs at every change of their directories and at a slow
// poll until ctx ends, calling kick when a login was read.
func (t *loginTracker) run(ctx context.Context, kick func()) {
	if t == nil {
		return
	}
	log := logr.FromContextOrDiscard(ctx).WithName("logins")
	defer func() {
		for _, f := range t.followers {
			f.Close()
		}
	}()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		log.Info("Watching the sshd logs failed; reading them every few seconds", "error", err.Error())
	} else {
		defer w.Close()
		dirs := map[string]bool{}
		for _, f := range t.followers {
			dirs[filepath.Dir(f.Path())] = true
		}
		for d := range dirs {
			if err := w.Add(d); err != nil {
				log.Info("Watching an sshd log directory failed; reading it every few seconds", "dir", d, "error", err.Error())
			}
		}
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	poll := time.NewTicker(loginPoll)
	defer poll.Stop()
	again := make(chan struct{}, 1)
	for {
		if more, changed := t.readOnce(ctx); changed || more {
			if changed {
				kick()
			}
			if more {
				select {
				case again <- struct{}{}:
				default:
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-events:
		case err := <-errs:
			log.Info("Watching the sshd logs failed; the poll still reads them", "error", fmt.Sprint(err))
		case <-poll.C:
		case <-again:
		}
	}
}

// readOnce reads what every log gained; it reports whether more is
// waiting, and whether the tracker's state changed.
func (t *loginTracker) readOnce(ctx context.Context) (more, changed bool) {
	log := logr.FromContextOrDiscard(ctx).WithName("logins")
	t.mu.Lock()
	planned, started := t.planned, t.started
	if planned && !started {
		// Reading begins now: a session started earlier may have logged
		// before the files were opened, so only later ones can be trusted.
		if since, err := sshdlog.BootTicks(); err == nil {
			t.since = since
		}
		t.started = true
	}
	t.mu.Unlock()
	if !planned {
		return false, false // nothing can be attributed before the first pass
	}
	var open []string
	var reason, message string
	for i, f := range t.followers {
		for n := 0; ; n++ {
			lines, m, err := f.Read()
			for _, line := range lines {
				if l, ok := sshdlog.ParseSessionLine(line, t.now()); ok {
					t.record(ctx, l)
					changed = true
				}
			}
			if err != nil {
				reason, message = nav1.SSHDLogUnreadableReason, truncate(err.Error(), 1024)
				break
			}
			if !m {
				break
			}
			if n == readsPerWake {
				more = true
				break
			}
		}
		if f.Open() {
			open = append(open, t.hostPaths[i])
		}
	}
	if len(open) == 0 && reason == "" {
		reason, message = nav1.SSHDLogNotFoundReason, fmt.Sprintf("none of %v exists on the node: logins are not known", t.hostPaths)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !slices.Equal(open, t.files) || reason != t.reason || message != t.message {
		if reason != "" && reason != t.reason {
			log.Info("Reading the sshd logs failed", "reason", reason, "error", message)
		}
		t.files, t.reason, t.message = open, reason, message
		changed = true
	}
	return more, changed
}

// record attributes one login and decides whether it is trusted.
func (t *loginTracker) record(ctx context.Context, l sshdlog.Login) {
	log := logr.FromContextOrDiscard(ctx).WithName("logins")
	// The process is checked first, as close to sshd's write as can be.
	verified, verr := t.proc.Session(l.PID, l.User)
	if verr == nil {
		verr = t.authenticated(ctx, l)
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	grants := t.keys[l.User][l.Fingerprint]
	trusted, reason := verr == nil, ""
	switch {
	case verr != nil:
		reason = nav1.SenderUnverifiedReason
	case verified.Start < t.since:
		trusted, reason = false, nav1.SessionPredatesReadingReason
	}
	if verr == nil {
		if s, ok := t.sessions[l.PID]; ok && s.s.Start == verified.Start {
			// A second login line for one session: at least one is forged.
			s.disputed = true
			if len(grants) > 0 {
				s.claims[l.Fingerprint] = true
			}
			trusted, reason = false, nav1.DisputedSessionReason
			for _, e := range t.logins {
				if e.pid == l.PID {
					e.login.Trusted, e.login.Reason = false, nav1.DisputedSessionReason
				}
			}
			log.Info("Seeing a second login line for one sshd session; trusting neither", "pid", l.PID, "user", l.User)
		} else if reason == "" {
			s := &session{s: verified, fingerprint: l.Fingerprint, managed: len(grants) > 0, claims: map[string]bool{}, seen: t.now()}
			if s.managed {
				s.claims[l.Fingerprint] = true
			}
			t.remember(s)
		}
	}
	if l.Method != "publickey" {
		return // a session's claim, not a key login
	}
	if len(grants) == 0 {
		t.unmanaged++
		return
	}
	pid := 0
	if trusted || reason == nav1.DisputedSessionReason {
		pid = l.PID // the verified session, which may be ended
	}
	for _, g := range grants {
		e := &loginEntry{pid: pid, login: nav1.NodeLogin{
			Time: metav1.NewTime(l.Time), User: l.User, NodeAccess: g.name, NodeAccessUID: g.uid,
			Comment: g.comment, Fingerprint: l.Fingerprint, From: l.From, Port: int32(l.Port),
			Trusted: trusted, Reason: reason,
		}}
		t.logins = append([]*loginEntry{e}, t.logins...)
		log.Info("Seeing a key login", "user", l.User, "nodeAccess", g.name, "fingerprint", l.Fingerprint, "from", l.From, "trusted", trusted, "reason", reason)
	}
	if len(t.logins) > nav1.MaxReportedLogins {
		t.logins = t.logins[:nav1.MaxReportedLogins]
	}
}

// authWait bounds the wait for a session's post-authentication process:
// sshd logs the login, then ends its pre-authentication child and starts
// the session's, within milliseconds.
const authWait = time.Second

// authenticated waits, up to authWait, for the monitor a login line names
// to have its authenticated session process (sshdlog.Procfs.Authenticated);
// a line naming a connection that never authenticated stays unverified.
func (t *loginTracker) authenticated(ctx context.Context, l sshdlog.Login) error {
	deadline := time.Now().Add(authWait)
	for {
		err := t.proc.Authenticated(l.PID, l.User)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// remember keeps a verified session, forgetting the oldest beyond the bound.
func (t *loginTracker) remember(s *session) {
	if len(t.sessions) >= maxSessions {
		var oldest *session
		for _, o := range t.sessions {
			if oldest == nil || o.seen.Before(oldest.seen) {
				oldest = o
			}
		}
		delete(t.sessions, oldest.s.PID)
	}
	t.sessions[s.s.PID] = s
}

// update takes the keys the plan gives each account: logins read from now
// on are attributed to them.
func (t *loginTracker) update(plan desiredstate.Plan) {
	if t == nil {
		return
	}
	keys := map[string]map[string][]grantKey{}
	for acct, sections := range plan.Accounts {
		for _, s := range sections {
			for _, k := range s.Keys {
				fp, ok := fingerprint(k.Base64)
				if !ok {
					continue
				}
				if keys[acct] == nil {
					keys[acct] = map[string][]grantKey{}
				}
				keys[acct][fp] = append(keys[acct][fp], grantKey{name: s.Owner, uid: s.UID, comment: k.Comment})
			}
		}
	}
	t.mu.Lock()
	t.keys, t.planned = keys, true
	t.mu.Unlock()
}

// endRevoked ends, when EndSessions is set, every trusted session whose
// key no grant gives its account any more, after checking again that its
// PID is still that session. Sessions that ended are forgotten.
func (t *loginTracker) endRevoked(ctx context.Context) {
	if t == nil {
		return
	}
	log := logr.FromContextOrDiscard(ctx).WithName("logins")
	t.mu.Lock()
	defer t.mu.Unlock()
	for pid, s := range t.sessions {
		if err := t.proc.Check(s.s); err != nil {
			delete(t.sessions, pid) // gone, or another process now
			continue
		}
		// Any managed key claimed on the session and no longer granted ends
		// it, disputed or not: a second line forged by the session's own
		// user must not keep a revoked key's session open.
		revoked := false
		for fp := range s.claims {
			if _, granted := t.keys[s.s.User][fp]; !granted {
				revoked = true
			}
		}
		if !t.endSessions || s.ended || !revoked {
			continue
		}
		err := t.proc.Terminate(s.s)
		stamp := metav1.NewTime(t.now().Truncate(time.Second))
		for _, e := range t.logins {
			if e.pid != pid || !s.claims[e.login.Fingerprint] {
				continue
			}
			if err == nil {
				e.login.EndedAt, e.login.EndError = &stamp, ""
			} else {
				e.login.EndError = truncate(err.Error(), 1024)
			}
		}
		if err != nil {
			log.Info("Ending a session whose key was revoked failed; retrying at the next pass", "pid", pid, "user", s.s.User, "fingerprint", s.fingerprint, "error", err.Error())
			continue
		}
		s.ended = true
		log.Info("Ended a session whose key was revoked", "pid", pid, "user", s.s.User, "fingerprint", s.fingerprint)
	}
}

// status returns the report's view: the recent logins, and the tracking state.
func (t *loginTracker) status() ([]nav1.NodeLogin, *nav1.LoginTracking) {
	if t == nil {
		return nil, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	logins := make([]nav1.NodeLogin, 0, len(t.logins))
	for _, e := range t.logins {
		logins = append(logins, *e.login.DeepCopy())
	}
	return logins, &nav1.LoginTracking{
		Files: slices.Clone(t.files), UnmanagedLogins: t.unmanaged, EndSessionsOnRevoke: t.endSessions,
		Reason: t.reason, Message: t.message,
	}
}

// seed takes the logins and the unmanaged count of the report an earlier
// agent process left, so that a restart loses neither. Their sessions
// are not known: they are never ended by this process.
func (t *loginTracker) seed(prev *nav1.NodeAccessReportStatus) {
	if t == nil || prev == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range prev.Logins {
		if len(t.logins) == nav1.MaxReportedLogins {
			break
		}
		t.logins = append(t.logins, &loginEntry{login: *prev.Logins[i].DeepCopy()})
	}
	if prev.LoginTracking != nil {
		t.unmanaged += prev.LoginTracking.UnmanagedLogins
	}
}

// fingerprint is the SHA256 fingerprint of a base64 key blob, as sshd logs it.
func fingerprint(blob string) (string, bool) {
	raw, err := base64.StdEncoding.DecodeString(blob)
	if err != nil {
		return "", false
	}
	sum := sha256.Sum256(raw)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:]), true
}

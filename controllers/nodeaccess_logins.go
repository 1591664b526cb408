package controllers

import (
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// loginEventInterval is the least time between two LoginAccepted Events of
// one NodeAccess, account and key.
const loginEventInterval = time.Minute

// nodeLogin is one login a node reported with a key of the grant.
type nodeLogin struct {
	node  string
	login nav1.NodeLogin
}

// lastLogins is status.lastLogins: the newest login of each account and
// key, from what the nodes report now and what the status listed before
// (a node lists only its most recent logins), newest first, bounded. It is
// pure.
func lastLogins(prev []nav1.LastLogin, reported []nodeLogin) []nav1.LastLogin {
	type key struct{ user, fingerprint string }
	newest := map[key]nav1.LastLogin{}
	add := func(l nav1.LastLogin) {
		k := key{l.User, l.Fingerprint}
		if cur, ok := newest[k]; !ok || l.Time.After(cur.Time.Time) ||
			l.Time.Equal(&cur.Time) && l.Node+l.From < cur.Node+cur.From {
			newest[k] = l
		}
	}
	for _, l := range prev {
		add(l)
	}
	for _, r := range reported {
		l := r.login
		add(nav1.LastLogin{User: l.User, Comment: l.Comment, Fingerprint: l.Fingerprint, Node: r.node,
			Time: l.Time, From: l.From, Trusted: l.Trusted, Reason: l.Reason})
	}
	out := make([]nav1.LastLogin, 0, len(newest))
	for _, l := range newest {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.Time.Equal(&b.Time) {
			return a.Time.After(b.Time.Time)
		}
		return a.User+a.Fingerprint < b.User+b.Fingerprint
	})
	if len(out) > nav1.MaxLastLogins {
		out = out[:nav1.MaxLastLogins]
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// loginIdentity names one reported login.
func loginIdentity(l nav1.NodeLogin) string {
	return l.Time.UTC().Format(time.RFC3339) + "|" + l.User + "|" + l.Fingerprint + "|" + l.From + "|" + strconv.Itoa(int(l.Port))
}

// loginObserver turns the logins nodes report into a counter and Events,
// each login once: it remembers, per NodeAccess and node, the logins the
// node listed at the last look. A node seen for the first time lists
// logins an earlier manager process may have counted already: of those,
// only the ones after this process started count.
type loginObserver struct {
	started time.Time

	mu sync.Mutex
	// seen and ended map a NodeAccess UID and a node to the logins listed,
	// and those listed as ended, at the last look.
	seen  map[string]map[string]sets.Set[string]
	ended map[string]map[string]sets.Set[string]
	// lastEvent is when a LoginAccepted Event was last emitted per
	// NodeAccess UID, account and fingerprint.
	lastEvent map[string]time.Time
}

func newLoginObserver(started time.Time) *loginObserver {
	return &loginObserver{started: started, seen: map[string]map[string]sets.Set[string]{},
		ended: map[string]map[string]sets.Set[string]{}, lastEvent: map[string]time.Time{}}
}

// observe counts and announces the logins of na not seen before.
func (o *loginObserver) observe(rec recorder.EventRecorder, na *nav1.NodeAccess, reported []nodeLogin, now time.Time) {
	uid := string(na.UID)
	o.mu.Lock()
	defer o.mu.Unlock()
	byNode := map[string][]nav1.NodeLogin{}
	for _, r := range reported {
		byNode[r.node] = append(byNode[r.node], r.login)
	}
	if o.seen[uid] == nil {
		o.seen[uid], o.ended[uid] = map[string]sets.Set[string]{}, map[string]sets.Set[string]{}
	}
	for node, logins := range byNode {
		seen, known := o.seen[uid][node]
		ended := o.ended[uid][node]
		nextSeen, nextEnded := sets.New[string](), sets.New[string]()
		for _, l := range logins {
			id := loginIdentity(l)
			nextSeen.Insert(id)
			if l.EndedAt != nil {
				nextEnded.Insert(id)
			}
			isNew := known && !seen.Has(id) || !known && !l.Time.Time.Before(o.started.Truncate(time.Second))
			if isNew {
				loginsTotal.WithLabelValues(na.Name, l.User, strconv.FormatBool(l.Trusted)).Inc()
				o.announce(rec, na, node, l, now)
			}
			if l.EndedAt != nil && (known && !ended.Has(id) || !known && !l.EndedAt.Time.Before(o.started.Truncate(time.Second))) {
				rec.Eventf(na, nil, corev1.EventTypeNormal, nav1.SessionEndedEventReason, "EndSession",
					"Ended the session of %s on %s that logged in with key %s (%s) from %s: the grant no longer gives it",
					l.User, node, quoteComment(l.Comment), l.Fingerprint, l.From)
			}
		}
		o.seen[uid][node], o.ended[uid][node] = nextSeen, nextEnded
	}
	for node := range o.seen[uid] {
		if _, ok := byNode[node]; !ok {
			// The node lists no login of it now; an empty set, not a
			// forgotten node, so a later login still counts.
			o.seen[uid][node], o.ended[uid][node] = sets.New[string](), sets.New[string]()
		}
	}
}

// announce emits a LoginAccepted Event, at most one per account and key a minute.
func (o *loginObserver) announce(rec recorder.EventRecorder, na *nav1.NodeAccess, node string, l nav1.NodeLogin, now time.Time) {
	k := string(na.UID) + "|" + l.User + "|" + l.Fingerprint
	if last, ok := o.lastEvent[k]; ok && now.Sub(last) < loginEventInterval {
		return
	}
	o.lastEvent[k] = now
	trust := "trusted: sshd's own line"
	if !l.Trusted {
		trust = "not trusted (" + l.Reason + "): the line may be forged"
	}
	rec.Eventf(na, nil, corev1.EventTypeNormal, nav1.LoginAcceptedEventReason, "Login",
		"%s logged in to %s with key %s (%s) from %s; %s", l.User, node, quoteComment(l.Comment), l.Fingerprint, l.From, trust)
}

// forget drops what was remembered of a deleted NodeAccess.
func (o *loginObserver) forget(uid string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.seen, uid)
	delete(o.ended, uid)
	for k := range o.lastEvent {
		if len(k) > len(uid) && k[:len(uid)+1] == uid+"|" {
			delete(o.lastEvent, k)
		}
	}
}

func quoteComment(c string) string {
	if c == "" {
		return "without comment"
	}
	return fmt.Sprintf("%q", c)
}

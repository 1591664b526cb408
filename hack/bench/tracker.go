package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// tracker times changes in the simulated nodes' authorized_keys files, seen
// from outside the agents: one inotify instance watches every node's .ssh
// directory. The agent replaces the file by an atomic rename, which inotify
// reports as a create of authorized_keys; on each such event the tracker
// reads the file and checks it against the waits pending on that node. A
// latency ends when the file that showed the change was put in place: the
// change time of the inode read, which the agent's rename sets (no later
// write touches it: the next write is a new file). So the tracker's own
// delay in processing events is not counted. The kernel stamps inodes from
// its coarse clock, which trails the precise one by one to two ticks (tick
// is 4 ms here; measured 3-8 ms behind on this machine's virtual CPUs): the
// time taken is the change time plus two ticks, at least the wait's start
// and at most the event's processing, so a latency is within 8 ms of the
// true one and never longer than the tracker saw; a change time
// more than three ticks before the wait's start (never expected) gives way
// to the event's processing time.
type tracker struct {
	w *fsnotify.Watcher

	mu sync.Mutex
	// files maps a node to its authorized_keys path, and dirs a watched
	// .ssh directory back to its node.
	files map[string]string
	dirs  map[string]string
	// byNode holds, per node, the waits still pending on it: an event is
	// checked against its own node's waits only.
	byNode map[string]map[*wait]struct{}
	// overflows counts inotify queue overflows; after one every node with
	// a pending wait is read again (its time is then an upper bound).
	overflows int
	// tick is the resolution of the clock that stamps inodes.
	tick time.Duration
	// delays are, per sample timed by its change time, how long after the
	// file was put in place the tracker read it: its own delay, which the
	// latencies leave out.
	delays []time.Duration
	// arrivals, when set, also time each wait's change on the in-process
	// agents' API streams.
	arrivals *arrivals
}

// ownDelays returns the tracker's delays since the last call.
func (t *tracker) ownDelays() []time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.delays
	t.delays = nil
	return d
}

// wait expects a key to appear in (or vanish from) each of a set of nodes'
// files, and records when each did.
type wait struct {
	t       *tracker
	blob    []byte
	present bool
	from    time.Time

	mu      sync.Mutex
	pending map[string]bool
	got     []time.Duration
	files   map[string]time.Time // per node, when its file showed the change
	last    time.Time
	all     chan struct{}

	// arrival times the change on the agents' streams; once the files are
	// done, arrivedAt holds, per in-process node, when it read the change,
	// and unarrived counts those that never did (expected 0: a file can
	// only show a change its agent read).
	arrival   *arrival
	arrivedAt map[string]time.Time
	unarrived int
}

func newTracker() (*tracker, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("starting the file tracker: %w", err)
	}
	var res unix.Timespec
	if err := unix.ClockGetres(unix.CLOCK_REALTIME_COARSE, &res); err != nil {
		return nil, fmt.Errorf("reading the coarse clock's resolution: %w", err)
	}
	return &tracker{w: w, files: map[string]string{}, dirs: map[string]string{}, byNode: map[string]map[*wait]struct{}{},
		tick: time.Duration(res.Nano())}, nil
}

// add watches one node's .ssh directory, which must exist.
func (t *tracker) add(node, sshDir string) error {
	sshDir = filepath.Clean(sshDir)
	t.mu.Lock()
	t.files[node] = filepath.Join(sshDir, "authorized_keys")
	t.dirs[sshDir] = node
	t.mu.Unlock()
	if err := t.w.Add(sshDir); err != nil {
		return fmt.Errorf("watching %s: %w", sshDir, err)
	}
	return nil
}

// run processes events until the tracker is closed.
func (t *tracker) run() {
	for {
		select {
		case ev, ok := <-t.w.Events:
			if !ok {
				return
			}
			if filepath.Base(ev.Name) != "authorized_keys" || !ev.Has(fsnotify.Create) && !ev.Has(fsnotify.Write) {
				continue // the agent's temporary file, or its removal
			}
			t.mu.Lock()
			node, ok := t.dirs[filepath.Dir(ev.Name)]
			t.mu.Unlock()
			if ok {
				t.check(node)
			}
		case err, ok := <-t.w.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				t.recheckPending()
			}
		}
	}
}

// recheckPending reads every node that has a pending wait, after an
// overflow lost events.
func (t *tracker) recheckPending() {
	t.mu.Lock()
	t.overflows++
	var nodes []string
	for n, ws := range t.byNode {
		if len(ws) > 0 {
			nodes = append(nodes, n)
		}
	}
	t.mu.Unlock()
	for _, n := range nodes {
		t.check(n)
	}
}

func (t *tracker) overflowCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.overflows
}

func (t *tracker) close() { _ = t.w.Close() }

// read returns a node's file and when its inode last changed (the rename
// that put it in place); a missing file holds no key, at no time.
func (t *tracker) read(node string) ([]byte, time.Time, error) {
	t.mu.Lock()
	path := t.files[node]
	t.mu.Unlock()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return nil, time.Time{}, err
	}
	data, err := io.ReadAll(f)
	return data, time.Unix(st.Ctim.Unix()), err
}

// check reads a node's file and resolves the waits it satisfies.
func (t *tracker) check(node string) {
	t.mu.Lock()
	waits := make([]*wait, 0, len(t.byNode[node]))
	for w := range t.byNode[node] {
		waits = append(waits, w)
	}
	t.mu.Unlock()
	if len(waits) == 0 {
		return
	}
	content, changed, err := t.read(node)
	if err != nil {
		return // resolved by the next event, or reported at the wait's timeout
	}
	at := time.Now() // when the tracker saw the file: a sample's latest end
	has := fieldSearch(content, len(waits))
	for _, w := range waits {
		if has(w.blob) != w.present {
			continue
		}
		t.mu.Lock()
		_, still := t.byNode[node][w]
		delete(t.byNode[node], w)
		t.mu.Unlock()
		if still {
			when := at
			if changed.After(w.from.Add(-3*t.tick)) && changed.Add(2*t.tick).Before(at) {
				when = changed.Add(2 * t.tick)
				if when.Before(w.from) {
					when = w.from
				}
				t.mu.Lock()
				t.delays = append(t.delays, at.Sub(when))
				t.mu.Unlock()
			}
			w.resolve(node, when)
		}
	}
}

// fieldSearch returns a test of whether a key blob is one of content's
// whitespace-separated fields (a key line's blob always is one, with or
// without options), for a read that checks waits blobs. Under churn a
// node has many waits pending, and searching a 200-key file for each was
// a tenth of the bench's CPU, so many waits index the fields once; a few
// search the bytes, which allocates nothing (indexing every field of each
// file read was 4% of the bench process's CPU under churn).
func fieldSearch(content []byte, waits int) func(blob []byte) bool {
	if waits <= 4 {
		return func(blob []byte) bool { return hasField(content, blob) }
	}
	set := make(map[string]struct{}, bytes.Count(content, []byte{'\n'})*4)
	for _, f := range bytes.Fields(content) {
		set[string(f)] = struct{}{}
	}
	return func(blob []byte) bool {
		_, ok := set[string(blob)]
		return ok
	}
}

// hasField reports whether field occurs in content between whitespace
// (or the content's ends).
func hasField(content, field []byte) bool {
	if len(field) == 0 {
		return false
	}
	for from := 0; ; {
		i := bytes.Index(content[from:], field)
		if i < 0 {
			return false
		}
		start, end := from+i, from+i+len(field)
		if (start == 0 || isSpace(content[start-1])) && (end == len(content) || isSpace(content[end])) {
			return true
		}
		from = start + 1
	}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// expect registers a wait; its clock starts now, before the API call.
func (t *tracker) expect(blob string, present bool, nodes []string) *wait {
	return t.expectReading(blob, present, nodes, blob)
}

// expectReading is expect, the change's arrival on the agents' streams
// known by token rather than by the key (a revocation's event need not
// carry the key it revokes).
func (t *tracker) expectReading(blob string, present bool, nodes []string, token string) *wait {
	w := &wait{t: t, blob: []byte(blob), present: present, from: time.Now(), pending: map[string]bool{},
		files: map[string]time.Time{}, all: make(chan struct{})}
	if t.arrivals != nil {
		w.arrival = t.arrivals.expect(token, w.from, nodes)
	}
	if len(nodes) == 0 {
		close(w.all)
		return w
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range nodes {
		w.pending[n] = true
		set := t.byNode[n]
		if set == nil {
			set = map[*wait]struct{}{}
			t.byNode[n] = set
		}
		set[w] = struct{}{}
	}
	return w
}

func (w *wait) resolve(node string, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.pending[node] {
		return
	}
	delete(w.pending, node)
	w.got = append(w.got, at.Sub(w.from))
	w.files[node] = at
	if at.After(w.last) {
		w.last = at
	}
	if len(w.pending) == 0 {
		close(w.all)
	}
}

// done returns the latencies once every node's file showed the change. After
// timeout it reads the files still pending once and fails, saying whether
// they show the change now (an event was missed) or not (never written).
func (w *wait) done(timeout time.Duration) ([]time.Duration, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-w.all:
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.arrival != nil && w.arrivedAt == nil {
			w.arrivedAt, w.unarrived = w.arrival.collect()
		}
		return slices.Clone(w.got), nil
	case <-timer.C:
	}
	w.forget()
	w.mu.Lock()
	nodes := make([]string, 0, len(w.pending))
	for n := range w.pending {
		nodes = append(nodes, n)
	}
	w.mu.Unlock()
	missed, unreadable := 0, 0
	for _, n := range nodes {
		content, _, err := w.t.read(n)
		switch {
		case err != nil:
			unreadable++
		case hasField(content, w.blob) == w.present:
			missed++
		}
	}
	return nil, fmt.Errorf("%d nodes' files did not show the change within %s (read once then: %d show it, an event missed; %d unreadable; %d never written)",
		len(nodes), timeout, missed, unreadable, len(nodes)-missed-unreadable)
}

// forget stops checking the files for the wait: a change that will not
// come (a grant the manager refused).
func (w *wait) forget() {
	if w.arrival != nil {
		w.arrival.collect()
	}
	w.t.mu.Lock()
	defer w.t.mu.Unlock()
	for n := range w.t.byNode {
		delete(w.t.byNode[n], w)
	}
}

// passes returns, per in-process node that read the change and whose file
// showed it, the time from its read to its file (its agent's decode and
// pass, queued on the bench's cores), and the reads' own latencies from
// the wait's start. Valid once done returned.
func (w *wait) passes() (arrived, passes []time.Duration, unarrived int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for n, at := range w.arrivedAt {
		arrived = append(arrived, at.Sub(w.from))
		if f, ok := w.files[n]; ok {
			passes = append(passes, max(f.Sub(at), 0))
		}
	}
	return arrived, passes, w.unarrived
}

// lastAt is when the last node's file showed the change.
func (w *wait) lastAt() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

func percentiles(d []time.Duration) (p50, p95, p99, maxMs float64) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	at := func(q float64) float64 {
		i := int(q*float64(len(d))+0.5) - 1
		i = min(max(i, 0), len(d)-1)
		return float64(d[i].Microseconds()) / 1000
	}
	return at(0.50), at(0.95), at(0.99), float64(d[len(d)-1].Microseconds()) / 1000
}

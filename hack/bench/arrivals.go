package main

import (
	"bytes"
	"sync"
	"time"
)

// arrivals time when each in-process agent first reads a change from the
// API server: the moment a response body of its client (a watch, or a list
// after a relist) returns bytes carrying the change's new or revoked key.
// That is the change's arrival at the node, before the agent decodes it and
// runs its pass; the file's time is the same change after the pass. Their
// difference is what the agents' passes add, on the bench's shared cores,
// to the API server's delivery, which the floor measures on its own.
//
// A key's base64 text (what a wait expects in the file) is written
// unescaped in the object's JSON, and a new key is in no byte sent before
// its change. A revocation's event holds no key: it is known by its
// NodeAccess UID, which earlier events of the grant hold too, so a match
// must hold a byte read after the wait began (only the token's length
// less one of the last read is kept to search across the boundary), and
// the first read of it is that of the first event after the deletion,
// which is the revocation (the bench's windows see no relist). Only bodies
// read while something is awaited are scanned.
type arrivals struct {
	mu    sync.Mutex
	nodes map[string]*nodeStreams
}

// tokenMax is the longest key text awaited on the streams; a body keeps
// tokenMax-1 bytes of its last read, so a key split across two reads is
// found too.
const tokenMax = 1024

// nodeStreams are the changes one node's agent has yet to read.
type nodeStreams struct {
	name  string
	mu    sync.Mutex
	armed []*arrival
}

// arrival is one change awaited on its nodes' streams.
type arrival struct {
	token []byte
	from  time.Time

	mu      sync.Mutex
	at      map[string]time.Time
	pending map[string]*nodeStreams
}

func newArrivals() *arrivals { return &arrivals{nodes: map[string]*nodeStreams{}} }

// node registers an in-process agent's node; its client's bodies report to
// the streams returned.
func (a *arrivals) node(name string) *nodeStreams {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.nodes[name]
	if s == nil {
		s = &nodeStreams{name: name}
		a.nodes[name] = s
	}
	return s
}

// expect awaits token on the streams of those of nodes that are in-process
// agents', from from on. A token longer than tokenMax is not awaited.
func (a *arrivals) expect(token string, from time.Time, nodes []string) *arrival {
	r := &arrival{token: []byte(token), from: from, at: map[string]time.Time{}, pending: map[string]*nodeStreams{}}
	if len(token) == 0 || len(token) > tokenMax {
		return r
	}
	a.mu.Lock()
	for _, n := range nodes {
		if s := a.nodes[n]; s != nil {
			r.pending[n] = s
		}
	}
	a.mu.Unlock()
	for _, s := range r.pending {
		s.mu.Lock()
		s.armed = append(s.armed, r)
		s.mu.Unlock()
	}
	return r
}

// saw is one read of a body: tail holds the body's last bytes before chunk.
func (s *nodeStreams) saw(tail *[]byte, chunk []byte, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.armed) == 0 {
		*tail = (*tail)[:0]
		return
	}
	var seam []byte
	keep := s.armed[:0]
	for _, r := range s.armed {
		found := bytes.Contains(chunk, r.token)
		if n := len(r.token) - 1; !found && len(*tail) > 0 && n > 0 {
			// The seam is the token's length less one on either side of
			// the boundary, so a match holds a byte of this read: a token
			// read whole before (a revocation's UID is in every earlier
			// event of its grant) is never found again in the tail.
			seam = append(append(seam[:0], (*tail)[max(len(*tail)-n, 0):]...), chunk[:min(len(chunk), n)]...)
			found = bytes.Contains(seam, r.token)
		}
		if found {
			r.arrived(s.name, at)
			continue
		}
		keep = append(keep, r)
	}
	clear(s.armed[len(keep):])
	s.armed = keep
	if len(chunk) >= tokenMax-1 {
		*tail = append((*tail)[:0], chunk[len(chunk)-(tokenMax-1):]...)
		return
	}
	old := *tail
	if drop := len(old) + len(chunk) - (tokenMax - 1); drop > 0 {
		old = old[drop:]
	}
	*tail = append(append(make([]byte, 0, tokenMax), old...), chunk...)
}

func (r *arrival) arrived(node string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.pending[node]; ok {
		delete(r.pending, node)
		r.at[node] = at
	}
}

// collect stops awaiting the change and returns, per node that read it,
// when it did, and how many nodes awaited never did.
func (r *arrival) collect() (map[string]time.Time, int) {
	r.mu.Lock()
	pending := r.pending
	r.pending = map[string]*nodeStreams{}
	at := r.at
	r.mu.Unlock()
	for _, s := range pending {
		s.mu.Lock()
		for i, x := range s.armed {
			if x == r {
				s.armed = append(s.armed[:i], s.armed[i+1:]...)
				break
			}
		}
		s.mu.Unlock()
	}
	return at, len(pending)
}

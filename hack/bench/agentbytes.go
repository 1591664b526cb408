package main

import (
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// byteCounter counts the response body bytes the in-process agents read
// from the API server, through client-go's own extension point
// (rest.Config.Wrap): watch streams, lists and the answers to their report
// writes, as the agent reads them (after any transport decompression).
type byteCounter struct {
	total, watch, reads atomic.Int64
}

// byteCount is a snapshot of the counters: reads are the answers to
// lists and gets (not watches, not report writes).
type byteCount struct{ total, watch, reads int64 }

func (c *byteCounter) snapshot() byteCount {
	return byteCount{total: c.total.Load(), watch: c.watch.Load(), reads: c.reads.Load()}
}

func (a byteCount) plus(b byteCount) byteCount {
	return byteCount{total: a.total + b.total, watch: a.watch + b.watch, reads: a.reads + b.reads}
}

func (a byteCount) sub(b byteCount) byteCount {
	return byteCount{total: a.total - b.total, watch: a.watch - b.watch, reads: a.reads - b.reads}
}

// wrapFor is a rest.Config transport wrapper for one node's agent; the
// bodies it reads also report to the node's streams (arrivals.go).
func (c *byteCounter) wrapFor(s *nodeStreams) func(http.RoundTripper) http.RoundTripper {
	return func(rt http.RoundTripper) http.RoundTripper { return countingTransport{next: rt, c: c, s: s} }
}

type countingTransport struct {
	next http.RoundTripper
	c    *byteCounter
	s    *nodeStreams
}

func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp.Body == nil {
		return resp, err
	}
	watch := req.URL.Query().Get("watch") == "true"
	body := &countingBody{ReadCloser: resp.Body, c: t.c, watch: watch, read: !watch && req.Method == http.MethodGet}
	if req.Method == http.MethodGet {
		body.s = t.s
	}
	resp.Body = body
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	c           *byteCounter
	watch, read bool
	s           *nodeStreams // nil when not scanned
	tail        []byte
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.c.total.Add(int64(n))
	switch {
	case b.watch:
		b.c.watch.Add(int64(n))
	case b.read:
		b.c.reads.Add(int64(n))
	}
	if b.s != nil && n > 0 {
		b.s.saw(&b.tail, p[:n], time.Now())
	}
	return n, err
}

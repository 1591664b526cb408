package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// readIn reads body in reads of the given sizes, then to its end.
func readIn(t *testing.T, body io.Reader, sizes ...int) {
	t.Helper()
	for _, n := range sizes {
		if _, err := io.ReadFull(body, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := io.Copy(io.Discard, body); err != nil {
		t.Fatal(err)
	}
}

// streamFor serves content as one response and returns its body, read
// through the node's counting transport.
func streamFor(t *testing.T, c *byteCounter, s *nodeStreams, content string) io.ReadCloser {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, content) }))
	t.Cleanup(srv.Close)
	rt := c.wrapFor(s)(http.DefaultTransport)
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/apis/x?watch=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp.Body
}

func TestArrivalsFindAKeySplitAcrossReads(t *testing.T) {
	a, c := newArrivals(), &byteCounter{}
	key := strings.Repeat("AAAAC3NzaC1lZDI1NTE5", 3) + "+/x="
	event := `{"type":"MODIFIED","object":{"spec":{"users":[{"keys":[{"data":"` + key + `"}]}]}}}` + "\n"
	for _, cut := range []int{0, 40, len(`{"type":"MODIFIED","object":{"spec":{"users":[{"keys":[{"data":"`) + 7, len(event) - 5} {
		s := a.node("node-0")
		from := time.Now()
		r := a.expect(key, from, []string{"node-0", "node-1"}) // node-1 runs no in-process agent
		body := streamFor(t, c, s, event)
		if cut > 0 {
			readIn(t, body, cut)
		} else {
			readIn(t, body)
		}
		at, never := r.collect()
		if never != 0 || len(at) != 1 || at["node-0"].Before(from) {
			t.Fatalf("cut at %d: read at %v, %d never: want node-0 read once, after the change", cut, at, never)
		}
	}
	if got := c.snapshot().watch; got != int64(4*len(event)) {
		t.Errorf("counted %d watch bytes, want %d", got, 4*len(event))
	}
}

func TestArrivalsIgnoreOtherStreamsAndStopWhenCollected(t *testing.T) {
	a, c := newArrivals(), &byteCounter{}
	s0, s1 := a.node("node-0"), a.node("node-1")
	key := strings.Repeat("b", 68)
	r := a.expect(key, time.Now(), []string{"node-0"})
	readIn(t, streamFor(t, c, s1, `{"data":"`+key+`"}`)) // another node's agent read it: not node-0's arrival
	if at, never := r.collect(); len(at) != 0 || never != 1 {
		t.Fatalf("read at %v, %d never: want node-0 pending", at, never)
	}
	if len(s0.armed) != 0 {
		t.Fatalf("node-0 still awaits %d changes after collect", len(s0.armed))
	}
	// A read while nothing is awaited drops the tail kept before: a key is
	// found only in what was read since its wait began.
	other := a.expect(strings.Repeat("c", 68), time.Now(), []string{"node-0"})
	body := &countingBody{ReadCloser: io.NopCloser(strings.NewReader(`{"data":"` + key[:30])), c: c, s: s0}
	readIn(t, body)
	other.collect()
	body.ReadCloser = io.NopCloser(strings.NewReader("\n"))
	readIn(t, body)
	if len(body.tail) != 0 {
		t.Fatalf("a tail of %d bytes kept with nothing awaited", len(body.tail))
	}
	r = a.expect(key, time.Now(), []string{"node-0"})
	body.ReadCloser = io.NopCloser(strings.NewReader(key[30:] + `"}`))
	readIn(t, body)
	if at, _ := r.collect(); len(at) != 0 {
		t.Fatalf("a key begun before the wait counted as read at %v", at)
	}
}

func TestArrivalsKeepTheTailOfLongReads(t *testing.T) {
	s := &nodeStreams{name: "n"}
	key := strings.Repeat("AbC0+/9z", tokenMax/8)
	r := &arrival{token: []byte(key), at: map[string]time.Time{}, pending: map[string]*nodeStreams{"n": s}}
	s.armed = []*arrival{r}
	var tail []byte
	big := bytes.Repeat([]byte("x"), 3*tokenMax)
	copy(big[len(big)-100:], key)
	s.saw(&tail, big, time.Now())
	if len(tail) != tokenMax-1 {
		t.Fatalf("tail of %d bytes, want %d", len(tail), tokenMax-1)
	}
	for i := 0; i < len(key)-100; i += 7 {
		s.saw(&tail, []byte(key[100+i:min(100+i+7, len(key))]), time.Now())
	}
	if at, never := r.collect(); never != 0 || len(at) != 1 {
		t.Fatalf("a key of %d bytes split over one long read and many short ones not found", tokenMax)
	}
}

func TestArrivalsDoNotFindATokenReadWholeBeforeTheWait(t *testing.T) {
	a := newArrivals()
	s := a.node("n")
	uid := "0b3c4d5e-1111-2222-3333-444455556666"
	// The grant's last event, read while another change was awaited,
	// names the UID and ends the body's tail.
	other := a.expect("another-change", time.Now(), []string{"n"})
	var tail []byte
	s.saw(&tail, []byte(`{"type":"MODIFIED","object":{"spec":{"nodeAccessUID":"`+uid+`"}}}`+"\n"), time.Now())
	other.collect()
	r := a.expect(uid, time.Now(), []string{"n"})
	s.saw(&tail, []byte(`{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"42"}}}`+"\n"), time.Now())
	if at, _ := r.collect(); len(at) != 0 {
		t.Fatalf("a UID read before its wait began counted as its arrival at %v", at)
	}
}

func TestArrivalsFindAFullLengthKeyCutNextToTheBoundary(t *testing.T) {
	key := strings.Repeat("AbC0+/9z", tokenMax/8)
	for _, cut := range []int{1, tokenMax - 1} {
		s := &nodeStreams{name: "n"}
		r := &arrival{token: []byte(key), at: map[string]time.Time{}, pending: map[string]*nodeStreams{"n": s}}
		s.armed = []*arrival{r}
		var tail []byte
		s.saw(&tail, []byte("xxxx"+key[:cut]), time.Now())
		s.saw(&tail, []byte(key[cut:]+"yyyy"), time.Now())
		if at, never := r.collect(); never != 0 || len(at) != 1 {
			t.Fatalf("cut at %d: a key of %d bytes not found", cut, len(key))
		}
	}
}

// A change read through a list (an agent's relist) is an arrival too, and
// a wait splits each node's latency at it.
func TestWaitSplitsItsLatenciesAtTheRead(t *testing.T) {
	a, c := newArrivals(), &byteCounter{}
	s := a.node("node-0")
	tr := &tracker{byNode: map[string]map[*wait]struct{}{}, arrivals: a}
	w := tr.expectReading("key-blob", true, []string{"node-0", "node-1"}, "the-token")
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(rw, `{"items":[{"data":"the-token"}]}`)
	}))
	t.Cleanup(srv.Close)
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/apis/x", nil) // a list, not a watch
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.wrapFor(s)(http.DefaultTransport).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	readIn(t, resp.Body)
	resp.Body.Close()
	read := time.Now()
	w.resolve("node-0", read.Add(30*time.Millisecond))
	w.resolve("node-1", read.Add(40*time.Millisecond)) // a node without an in-process agent
	if _, err := w.done(time.Second); err != nil {
		t.Fatal(err)
	}
	arrived, passes, unarrived := w.passes()
	if len(arrived) != 1 || len(passes) != 1 || unarrived != 0 {
		t.Fatalf("arrived %v, passes %v, %d unarrived: want one of each for node-0", arrived, passes, unarrived)
	}
	if arrived[0] <= 0 || arrived[0] > time.Since(w.from) || passes[0] < 30*time.Millisecond || passes[0] > 30*time.Millisecond+read.Sub(w.from) {
		t.Fatalf("read %v after the change, then the file %v later: want the read before the file, the file 30 ms after it", arrived[0], passes[0])
	}
	if c.snapshot().reads == 0 {
		t.Fatal("the list's bytes were not counted as reads")
	}
}

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

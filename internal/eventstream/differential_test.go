package eventstream

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	jsonserializer "k8s.io/apimachinery/pkg/runtime/serializer/json"
)

// pieces are what the generated strings are made of: brackets, quotes
// and every kind of escape among plain characters.
var pieces = []string{"a", "Z", "{", "}", "[", "]", `\\`, `\"`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`, `\u005c`, `\u0022`, `\u007b`, "é", "\u2028", " ", ":", ","}

func space(r *rand.Rand, b *bytes.Buffer) {
	if r.Intn(3) != 0 {
		return
	}
	for n := r.Intn(4); n > 0; n-- {
		b.WriteByte(" \t\r\n"[r.Intn(4)])
	}
}

func genString(r *rand.Rand, b *bytes.Buffer) {
	b.WriteByte('"')
	n := r.Intn(12)
	if r.Intn(40) == 0 {
		n = 2000 + r.Intn(12000) // long enough to span reads and grow the buffer
	}
	for ; n > 0; n-- {
		b.WriteString(pieces[r.Intn(len(pieces))])
	}
	b.WriteByte('"')
}

// genValue writes a random JSON value (an object when obj is set), with
// whitespace inside it.
func genValue(r *rand.Rand, depth int, b *bytes.Buffer, obj bool) {
	k := r.Intn(8)
	if obj {
		k = 0
	}
	if depth > 6 && k < 2 {
		k = 2
	}
	switch k {
	case 0, 1:
		open, end := byte('{'), byte('}')
		if k == 1 {
			open, end = '[', ']'
		}
		b.WriteByte(open)
		space(r, b)
		for i, n := 0, r.Intn(5); i < n; i++ {
			if i > 0 {
				b.WriteByte(',')
				space(r, b)
			}
			if k == 0 {
				genString(r, b)
				space(r, b)
				b.WriteByte(':')
				space(r, b)
			}
			genValue(r, depth+1, b, false)
			space(r, b)
		}
		b.WriteByte(end)
	case 2, 3:
		genString(r, b)
	case 4:
		b.WriteString([]string{"true", "false", "null"}[r.Intn(3)])
	default:
		fmt.Fprintf(b, "%d.5e-3", r.Intn(100000))
	}
}

// unevenReader returns its data in reads of random sizes, some of them
// (0, nil), and its last bytes with io.EOF when eofWith is set, as an
// HTTP body may.
type unevenReader struct {
	r       *rand.Rand
	data    []byte
	eofWith bool
	zeros   int
}

func (c *unevenReader) Read(p []byte) (int, error) {
	if c.zeros > 0 && c.r.Intn(4) == 0 {
		c.zeros--
		return 0, nil
	}
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(1+c.r.Intn(1+[]int{1, 7, 300, 5000, 40000}[c.r.Intn(5)]), len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	if len(c.data) == 0 && c.eofWith {
		return n, io.EOF
	}
	return n, nil
}

// readFrames reads every frame as client-go's streaming decoder does,
// doubling its buffer from start bytes on io.ErrShortBuffer, and says how
// the stream ended.
func readFrames(frames io.ReadCloser, start int) ([]string, string) {
	buf := make([]byte, start)
	var out []string
	for {
		base := 0
		for {
			n, err := frames.Read(buf[base:])
			if err == io.ErrShortBuffer {
				if n == 0 {
					return out, "short buffer with nothing read"
				}
				base += n
				buf = append(buf, make([]byte, len(buf))...)
				continue
			}
			switch {
			case err == io.EOF:
				return out, "EOF"
			case err == io.ErrUnexpectedEOF:
				return out, "unexpected EOF"
			case err != nil:
				return out, "error"
			}
			base += n
			break
		}
		out = append(out, string(buf[:base]))
	}
}

// The framer cuts random streams of JSON objects, whole or cut short, as
// client-go's framer does, whatever the reads' sizes and the caller's
// buffer.
func TestFramerCutsRandomStreamsAsClientGo(t *testing.T) {
	for seed := range int64(4) {
		r := rand.New(rand.NewSource(seed))
		for it := range 1000 {
			var b bytes.Buffer
			space(r, &b)
			for n := 1 + r.Intn(5); n > 0; n-- {
				genValue(r, 0, &b, true)
				space(r, &b)
			}
			stream := b.Bytes()
			if r.Intn(10) == 0 {
				stream = stream[:r.Intn(len(stream))]
			}
			start := []int{1, 2, 3, 1024, 16384, 70000}[r.Intn(6)]
			want, wantEnd := readFrames(jsonserializer.Framer.NewFrameReader(io.NopCloser(bytes.NewReader(stream))), start)
			body := &unevenReader{r: r, data: bytes.Clone(stream), eofWith: r.Intn(2) == 0, zeros: 3}
			got, gotEnd := readFrames(Framer{}.NewFrameReader(io.NopCloser(body)), start)
			if !reflect.DeepEqual(got, want) || gotEnd != wantEnd {
				t.Fatalf("seed %d, stream %d, %q:\ncut into %d frames, then %s\nclient-go: %d frames, then %s", seed, it, abbreviate(stream), len(got), gotEnd, len(want), wantEnd)
			}
		}
	}
}

// Frames that fill the framer's first buffer exactly, or just over it.
func TestFramerCutsFramesAroundItsBufferSize(t *testing.T) {
	for _, size := range []int{16383, 16384, 16385, 32768, 32769, 65536} {
		for _, before := range []string{"", "{}", "{}\n", "   "} {
			stream := before + `{"a":"` + strings.Repeat("x", size-8) + `"}` + "\n" + `{"b":[{}]}` + "\n"
			want, wantEnd := readFrames(jsonserializer.Framer.NewFrameReader(io.NopCloser(strings.NewReader(stream))), 1024)
			got, gotEnd := readFrames(Framer{}.NewFrameReader(io.NopCloser(strings.NewReader(stream))), 1024)
			if !reflect.DeepEqual(got, want) || gotEnd != wantEnd {
				t.Fatalf("a frame of %d bytes after %q: %d frames, then %s; client-go %d, then %s", size, before, len(got), gotEnd, len(want), wantEnd)
			}
		}
	}
}

// The envelope's fast path gives the type and object bytes that the JSON
// serializer's full decode gives, or fails where it fails, for random
// objects in envelopes as the API server writes them.
func TestSerializerAgreesWithTheFullDecode(t *testing.T) {
	scheme := runtime.NewScheme()
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	full := jsonserializer.NewSerializerWithOptions(jsonserializer.DefaultMetaFactory, scheme, scheme, jsonserializer.SerializerOptions{})
	fast := Serializer{Serializer: full}
	r := rand.New(rand.NewSource(1))
	for it := range 3000 {
		var obj bytes.Buffer
		genValue(r, 0, &obj, true)
		typ := []string{"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR", "X"}[r.Intn(6)]
		var doc []byte
		if r.Intn(3) == 0 {
			d, err := json.Marshal(struct {
				Type   string          `json:"type"`
				Object json.RawMessage `json:"object"`
			}{typ, obj.Bytes()})
			if err != nil {
				t.Fatal(err)
			}
			doc = d
		} else {
			var b bytes.Buffer
			b.WriteString(`{"type":"` + typ + `","object":`)
			b.Write(obj.Bytes())
			space(r, &b)
			b.WriteString("}")
			doc = b.Bytes()
		}
		var a, c metav1.WatchEvent
		_, _, errA := fast.Decode(doc, nil, &a)
		_, _, errC := full.Decode(doc, nil, &c)
		if (errA == nil) != (errC == nil) || a.Type != c.Type || !bytes.Equal(a.Object.Raw, c.Object.Raw) {
			t.Fatalf("event %d, %q:\nfast path %q %q %v\nfull decode %q %q %v", it, abbreviate(doc), a.Type, abbreviate(a.Object.Raw), errA, c.Type, abbreviate(c.Object.Raw), errC)
		}
	}
}

func abbreviate(b []byte) string {
	if len(b) > 400 {
		return string(b[:400]) + "..."
	}
	return string(b)
}

// BenchmarkFramerEscapes cuts an event with a string of 128 Ki escapes
// (as a Node's annotations may hold), read 16 KiB at a time: its time
// grows with the event's length, not with its square.
func BenchmarkFramerEscapes(b *testing.B) {
	event := `{"type":"MODIFIED","object":{"kind":"Node","apiVersion":"v1","metadata":{"name":"n","annotations":{"a":"` + strings.Repeat(`\n`, 128<<10) + `"}}}}` + "\n"
	for name, framer := range map[string]runtime.Framer{"client-go": jsonserializer.Framer, "eventstream": Framer{}} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(event)))
			for b.Loop() {
				body := io.LimitReader(strings.NewReader(event), int64(len(event)))
				if frames, end := readFrames(framer.NewFrameReader(io.NopCloser(sixteenKiB{body})), 1024); len(frames) != 1 || end != "EOF" {
					b.Fatalf("%d frames, then %s", len(frames), end)
				}
			}
		})
	}
}

// sixteenKiB reads at most 16 KiB at a time.
type sixteenKiB struct{ r io.Reader }

func (s sixteenKiB) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), 16<<10)]) }

package eventstream

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	jsonserializer "k8s.io/apimachinery/pkg/runtime/serializer/json"
)

// A stream that is not a sequence of JSON objects ends the watch with an
// error, and so does an event cut short or longer than the framer takes.
func TestEventFramerRefusesWhatIsNotAnObjectStream(t *testing.T) {
	for name, stream := range map[string]string{
		"a value that is no object": `{"type":"ADDED","object":{}}` + "\n" + `[1,2]`,
		"junk between events":       `{"type":"ADDED","object":{}}x{"type":"ADDED","object":{}}`,
		"cut short":                 `{"type":"ADDED","object":{"kind":"Node","metadata":{"name":"a`,
		"cut in an escape":          `{"type":"ADDED","object":{"kind":"Node\`,
	} {
		frames := Framer{}.NewFrameReader(io.NopCloser(strings.NewReader(stream)))
		buf := make([]byte, 1<<10)
		var err error
		for range 3 {
			if _, err = frames.Read(buf); err != nil {
				break
			}
		}
		if err == nil || err == io.EOF {
			t.Errorf("%s: read without error (%v)", name, err)
		}
	}
	huge := io.MultiReader(strings.NewReader(`{"type":"ADDED","object":{"kind":"`), neverEnding('x'))
	frames := Framer{}.NewFrameReader(io.NopCloser(huge))
	if _, err := frames.Read(make([]byte, 1<<10)); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("an endless event: %v", err)
	}
}

type neverEnding byte

func (b neverEnding) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// The agent's framer cuts every stream of JSON objects where client-go's
// does, whatever the strings inside them, the whitespace between them
// and the reads' sizes.
func FuzzEventFramerCutsAsClientGo(f *testing.F) {
	f.Add("alice", " \n", uint8(0))
	f.Add(`} {"]\" [`, "\r\n\t", uint8(3))
	f.Add("\x00\u2028\\", "", uint8(7))
	f.Fuzz(func(t *testing.T, comment, space string, shape uint8) {
		if strings.Trim(space, " \t\r\n") != "" {
			return
		}
		var stream bytes.Buffer
		for i := range 1 + int(shape%4) {
			doc, err := json.Marshal(map[string]any{"type": "ADDED", "object": map[string]any{"comment": strings.Repeat(comment, i+1), "list": []any{comment, map[string]any{"k": comment}}}})
			if err != nil {
				return
			}
			stream.Write(doc)
			stream.WriteString(space)
		}
		cut := func(frames io.ReadCloser) []string {
			var out []string
			buf := make([]byte, 1+int(shape)*7)
			var frame []byte
			for {
				n, err := frames.Read(buf)
				frame = append(frame, buf[:n]...)
				switch {
				case err == io.ErrShortBuffer:
					continue
				case err == io.EOF:
					return out
				case err != nil:
					return append(out, "error: "+err.Error())
				}
				out = append(out, string(frame))
				frame = nil
			}
		}
		var body io.Reader = bytes.NewReader(stream.Bytes())
		if shape&8 != 0 {
			body = iotest.OneByteReader(body)
		}
		want := cut(jsonserializer.Framer.NewFrameReader(io.NopCloser(bytes.NewReader(stream.Bytes()))))
		if got := cut(Framer{}.NewFrameReader(io.NopCloser(body))); !reflect.DeepEqual(got, want) {
			t.Fatalf("stream %q:\ncut into %q\nclient-go %q", stream.Bytes(), got, want)
		}
	})
}

// passedOn is a serializer that records the documents handed to it.
type passedOn struct {
	runtime.Serializer
	docs []string
}

func (p *passedOn) Decode(data []byte, _ *schema.GroupVersionKind, into runtime.Object) (runtime.Object, *schema.GroupVersionKind, error) {
	p.docs = append(p.docs, string(data))
	return into, nil, nil
}

// Only an event written as the API server writes it has its object taken
// as it is; every other one goes to the JSON serializer whole.
func TestSerializerTakesOnlyTheAPIServersEnvelope(t *testing.T) {
	for doc, obj := range map[string]string{
		`{"type":"ADDED","object":{"kind":"Node"}}`:                    `{"kind":"Node"}`,
		`{"type":"BOOKMARK","object":{"metadata":{}}}` + "\n":          `{"metadata":{}}`,
		`{"type":"MODIFIED","object":{"a":"}"} }`:                      `{"a":"}"}`,
		`{"type":"ERROR","object":{"kind":"Status","code":410}}` + " ": `{"kind":"Status","code":410}`,
	} {
		inner := &passedOn{}
		var ev metav1.WatchEvent
		if _, _, err := (Serializer{Serializer: inner}).Decode([]byte(doc), nil, &ev); err != nil || len(inner.docs) > 0 || string(ev.Object.Raw) != obj {
			t.Errorf("%s: object %q, passed on %q, %v; want %q taken", doc, ev.Object.Raw, inner.docs, err, obj)
		}
	}
	for _, doc := range []string{
		`{"object":{},"type":"ADDED"}`,
		`{ "type":"ADDED","object":{}}`,
		`{"type": "ADDED","object":{}}`,
		`{"type":"added","object":{}}`,
		`{"type":"","object":{}}`,
		`{"type":"ADDED","object":[]}`,
		`{"type":"ADDED","object":null}`,
		`{"type":"ADDED","object":{},"type":"DELETED"}`,
		`{"type":"ADDED","object":{}`,
		`{"type":"ADD\u0045D","object":{}}`,
	} {
		inner := &passedOn{}
		var ev metav1.WatchEvent
		if _, _, err := (Serializer{Serializer: inner}).Decode([]byte(doc), nil, &ev); err != nil || len(inner.docs) != 1 {
			t.Errorf("%s: not passed on whole (%q, object %q, %v)", doc, inner.docs, ev.Object.Raw, err)
		}
	}
	// Any other kind of target goes to the JSON serializer too.
	inner := &passedOn{}
	if _, _, err := (Serializer{Serializer: inner}).Decode([]byte(`{"type":"ADDED","object":{}}`), nil, &metav1.Status{}); err != nil || len(inner.docs) != 1 {
		t.Errorf("a document decoded into a Status was not passed on: %q, %v", inner.docs, err)
	}
}

package agent

import (
	"bytes"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/streaming"
	restclientwatch "k8s.io/client-go/rest/watch"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// The kind is read from a document's first members only when they are
// the kind and apiVersion, or a watch event's type then object; any other
// start is left to the full parse.
func TestLeadingKindReadsOnlyTheFirstMembers(t *testing.T) {
	rendered := schema.GroupVersionKind{Group: nav1.GroupVersion.Group, Version: nav1.GroupVersion.Version, Kind: "RenderedNodeAccess"}
	for doc, want := range map[string]*schema.GroupVersionKind{
		`{"kind":"RenderedNodeAccess","apiVersion":"` + nav1.GroupVersion.String() + `","metadata":{}}`: &rendered,
		`{"apiVersion":"` + nav1.GroupVersion.String() + `","kind":"RenderedNodeAccess"}`:               &rendered,
		`{"type":"MODIFIED","object":{"kind":"Node","apiVersion":"v1"}}`:                                {},
		`{"kind":"Status","apiVersion":"v1","status":"Failure"}`:                                        {Version: "v1", Kind: "Status"},
	} {
		got, ok := leadingGVK([]byte(doc))
		if !ok || *got != *want {
			t.Errorf("%s: got %v (%v), want %v", doc, got, ok, want)
		}
	}
	for _, doc := range []string{
		`{"metadata":{},"kind":"Node","apiVersion":"v1"}`,
		`{"kind":"Node","metadata":{},"apiVersion":"v1"}`,
		`{"kind":"Node","kind":"ConfigMap","apiVersion":"v1"}`,
		`{"kind":"Node"}`,
		`{"kind":"","apiVersion":"v1"}`,
		`{"kind":1,"apiVersion":"v1"}`,
		`{"object":{},"type":"ADDED"}`,
		`{"type":"ADDED","kind":"Node","apiVersion":"v1"}`,
		`{"kind":"Node","apiVersion":"a/b/c"}`,
		`["kind","Node"]`,
		`{"kind":"Node",`,
		``,
	} {
		if got, ok := leadingGVK([]byte(doc)); ok {
			t.Errorf("%s: read as %v, want the full parse", doc, got)
		}
	}
}

// A watch stream decodes to the same events through the agent's
// serializers as through client-go's own, whether its documents start
// with their kind or not.
func TestAgentSerializersDecodeWatchEventsAsClientGoDoes(t *testing.T) {
	stream := `{"type":"ADDED","object":{"kind":"RenderedNodeAccess","apiVersion":"` + nav1.GroupVersion.String() + `","metadata":{"name":"team-a","namespace":"ops","resourceVersion":"7","labels":{"pool":"a"}},` +
		`"spec":{"nodeAccessName":"team-a","nodeAccessUID":"u-1","generation":2,"hash":"h","nodeSelector":{"matchLabels":{"pool":"a"}},"users":[{"name":"alice","keys":[{"type":"ssh-ed25519","data":"AAAAC3NzaC1lZDI1NTE5AAAAIA","comment":"alice"}]}]}}}` + "\n" +
		`{"type":"MODIFIED","object":{"metadata":{"name":"node-a","resourceVersion":"8","labels":{"pool":"a"}},"kind":"Node","apiVersion":"v1"}}` + "\n" +
		`{"object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"f"},"data":{"keys":"pool"}},"type":"ADDED"}` + "\n" +
		`{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old","reason":"Expired","code":410}}` + "\n" +
		`{"type":"BOOKMARK","object":{"kind":"RenderedNodeAccess","apiVersion":"` + nav1.GroupVersion.String() + `","metadata":{"resourceVersion":"9"}}}` + "\n" +
		// Brackets, quotes and backslashes inside strings, escaped and not,
		// a comment longer than the streaming decoder's first buffer, an
		// envelope with spaces, and whitespace between events.
		`{"type":"MODIFIED","object":{"kind":"RenderedNodeAccess","apiVersion":"` + nav1.GroupVersion.String() + `","metadata":{"name":"team-b","resourceVersion":"10"},` +
		`"spec":{"nodeAccessName":"team-b","nodeAccessUID":"u-2","users":[{"name":"bob","keys":[{"type":"ssh-ed25519","data":"AAAA","comment":"} {\"]\\\" [\u007d\\` + strings.Repeat("x}", 1500) + `"}]}]}}}` +
		"\r\n \t" + `{ "type" : "DELETED" , "object" : {"kind":"Node","apiVersion":"v1","metadata":{"name":"node-b","resourceVersion":"11"}} }` + "\n\n"
	decodeAll := func(ns runtime.NegotiatedSerializer, oneByte bool) []any {
		info, ok := runtime.SerializerInfoForMediaType(ns.SupportedMediaTypes(), runtime.ContentTypeJSON)
		if !ok || info.StreamSerializer == nil {
			t.Fatal("no JSON stream serializer")
		}
		var body io.Reader = bytes.NewBufferString(stream)
		if oneByte {
			body = iotest.OneByteReader(body)
		}
		frames := info.StreamSerializer.Framer.NewFrameReader(io.NopCloser(body))
		dec := restclientwatch.NewDecoder(streaming.NewDecoder(frames, info.StreamSerializer.Serializer), ns.DecoderToVersion(info.Serializer, nav1.GroupVersion))
		var out []any
		for {
			typ, obj, err := dec.Decode()
			if err != nil {
				if err != io.EOF {
					out = append(out, err.Error())
				}
				return out
			}
			out = append(out, typ, obj)
		}
	}
	want := decodeAll(agentCodecs.WithoutConversion(), false)
	if len(want) != 14 {
		t.Fatalf("client-go decoded %d items, want 7 events: %v", len(want), want)
	}
	for _, oneByte := range []bool{false, true} {
		if got := decodeAll(newAgentSerializers(), oneByte); !reflect.DeepEqual(got, want) {
			t.Fatalf("the agent's serializers decoded (one byte a read: %v)\n%#v\nclient-go's\n%#v", oneByte, got, want)
		}
	}
	got := decodeAll(newAgentSerializers(), false)
	if r, ok := got[11].(*nav1.RenderedNodeAccess); !ok || !strings.HasPrefix(r.Spec.Users[0].Keys[0].Comment, `} {"]\" [}\x}`) {
		t.Fatalf("the grant with brackets in its comment decoded as %#v", got[11])
	}
	if r, ok := got[1].(*nav1.RenderedNodeAccess); !ok || r.Spec.Users[0].Keys[0].Data != "AAAAC3NzaC1lZDI1NTE5AAAAIA" {
		t.Fatalf("the rendered grant decoded as %#v", got[1])
	}
	if _, ok := got[3].(*nodeMeta); !ok {
		t.Fatalf("the node decoded as %#v", got[3])
	}
	if s, ok := got[7].(*metav1.Status); !ok || s.Code != 410 {
		t.Fatalf("the error decoded as %#v", got[7])
	}
}

// BenchmarkWatchEventDecode decodes one event of a rendered grant of 20
// keys, as the agent's watch does, through client-go's serializers and
// through the agent's.
func BenchmarkWatchEventDecode(b *testing.B) {
	var keys bytes.Buffer
	for i := range 20 {
		if i > 0 {
			keys.WriteByte(',')
		}
		keys.WriteString(`{"type":"ssh-ed25519","data":"AAAAC3NzaC1lZDI1NTE5AAAAIFdmSmNDMkhaVnFqbHBXeWtRWnJ4dHJzc0hvS2RXbnRU","comment":"team-0001-` + string(rune('a'+i)) + `","fingerprint":"SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"}`)
	}
	frame := []byte(`{"type":"MODIFIED","object":{"kind":"RenderedNodeAccess","apiVersion":"` + nav1.GroupVersion.String() + `","metadata":{"name":"team-0001","namespace":"nodeaccess-system","uid":"6c1f3d2e-8a4b-4c5d-9e6f-0a1b2c3d4e5f","resourceVersion":"123456","generation":3,"creationTimestamp":"2026-12-03T12:00:00Z","labels":{"app.kubernetes.io/managed-by":"nodeaccess-operator","pool":"p1"}},` +
		`"spec":{"nodeAccessName":"team-0001","nodeAccessUID":"u-1","generation":3,"hash":"0123456789abcdef","nodeSelector":{"matchLabels":{"pool":"p1"}},"users":[{"name":"bench","keys":[` + keys.String() + `]}]}}}`)
	for name, ns := range map[string]runtime.NegotiatedSerializer{"client-go": agentCodecs.WithoutConversion(), "agent": newAgentSerializers()} {
		b.Run(name, func(b *testing.B) {
			info, _ := runtime.SerializerInfoForMediaType(ns.SupportedMediaTypes(), runtime.ContentTypeJSON)
			embedded := ns.DecoderToVersion(info.Serializer, nav1.GroupVersion)
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				frames := info.StreamSerializer.Framer.NewFrameReader(io.NopCloser(bytes.NewReader(frame)))
				dec := restclientwatch.NewDecoder(streaming.NewDecoder(frames, info.StreamSerializer.Serializer), embedded)
				if _, _, err := dec.Decode(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

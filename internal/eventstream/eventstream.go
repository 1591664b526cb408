// Package eventstream reads the watch streams of the agent's REST
// clients faster than client-go's JSON framer and serializer, and to the
// same events: Framer cuts a stream into events in one pass, and
// Serializer takes an event's object out of its envelope without parsing
// it (the object is then decoded, and checked, by the JSON serializer as
// any document is). Each accepts exactly what the API server writes and
// hands anything else to client-go's path, or refuses it.
package eventstream

import (
	"bytes"
	"fmt"
	"io"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	jsonserializer "k8s.io/apimachinery/pkg/runtime/serializer/json"
)

// maxFrameBytes is the largest watch event the framer reads, the largest
// that client-go's streaming decoder takes; a longer one ends the watch
// with an error (the informer then starts another). The API server stores
// objects of at most a few MiB.
const maxFrameBytes = 16 << 20

// Framer cuts watch streams into events. client-go's
// JSON framer has encoding/json scan every event twice to find where it
// ends; this one finds the end by counting brackets outside strings,
// in one pass that jumps from quote to quote inside them. It only cuts:
// every event is still decoded, and its object checked, by the JSON
// serializer, so a stream that is not valid JSON fails there as it did.
// A stream must be a sequence of JSON objects (as the API server writes
// them, each followed by a newline); anything else between them is an
// error.
type Framer struct{}

func (Framer) NewFrameWriter(w io.Writer) io.Writer {
	return jsonserializer.Framer.NewFrameWriter(w)
}

func (Framer) NewFrameReader(r io.ReadCloser) io.ReadCloser {
	return &frameReader{r: r, buf: make([]byte, 0, 16<<10)}
}

// frameReader returns one event per Read, as the streaming decoder reads
// frames: an event longer than the caller's buffer is returned in parts,
// each but the last with io.ErrShortBuffer.
type frameReader struct {
	r io.ReadCloser
	// buf[off:] are bytes read from r and not yet returned.
	buf []byte
	off int
	// remaining is the rest of an event the caller's buffer could not hold.
	remaining []byte
	// err is the error r returned, for when buf holds no more events.
	err error
}

func (f *frameReader) Read(data []byte) (int, error) {
	if len(f.remaining) > 0 {
		n := copy(data, f.remaining)
		f.remaining = f.remaining[n:]
		if len(f.remaining) > 0 {
			return n, io.ErrShortBuffer
		}
		f.remaining = nil
		return n, nil
	}
	frame, err := f.next()
	if err != nil {
		return 0, err
	}
	n := copy(data, frame)
	if n < len(frame) {
		// frame is in buf, which the next event reuses.
		f.remaining = append([]byte(nil), frame[n:]...)
		return n, io.ErrShortBuffer
	}
	return n, nil
}

func (f *frameReader) Close() error { return f.r.Close() }

// next returns the next event, valid until the next call.
func (f *frameReader) next() ([]byte, error) {
	// Skip the whitespace before the event.
	for {
		for f.off < len(f.buf) && isJSONSpace(f.buf[f.off]) {
			f.off++
		}
		if f.off < len(f.buf) {
			break
		}
		if err := f.fill(); err != nil {
			if err == io.EOF && f.off == len(f.buf) {
				return nil, io.EOF
			}
			return nil, err
		}
	}
	if f.buf[f.off] != '{' {
		return nil, fmt.Errorf("watch stream: an event starts with %q, not an object", f.buf[f.off])
	}
	// quote is where the next quote is when inString (len(b) when none
	// was read yet, -1 when it must be looked for again): each byte is
	// looked at by a constant number of searches, however many escapes a
	// string holds.
	depth, inString, quote := 0, false, -1
	for i := f.off; ; {
		b := f.buf
		for i < len(b) {
			if inString {
				if quote < i {
					if q := bytes.IndexByte(b[i:], '"'); q >= 0 {
						quote = i + q
					} else {
						quote = len(b)
					}
				}
				if esc := bytes.IndexByte(b[i:quote], '\\'); esc >= 0 {
					if i+esc+1 >= len(b) {
						i += esc // the escaped byte is not read yet
						break
					}
					i += esc + 2 // past the quote when it escaped it: looked for again
					continue
				}
				if quote == len(b) {
					i = len(b)
					break
				}
				i = quote + 1
				inString = false
				continue
			}
			switch b[i] {
			case '"':
				inString, quote = true, -1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					frame := b[f.off : i+1]
					f.off = i + 1
					return frame, nil
				}
			}
			i++
		}
		// The event goes on past what was read: read more, keeping the
		// scan's place relative to the event's start.
		at := i - f.off
		if err := f.fill(); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		i, quote = f.off+at, -1
	}
}

// fill reads more of the stream into buf, first moving the unreturned
// bytes to its start (or growing it when they fill it).
func (f *frameReader) fill() error {
	if f.err != nil {
		return f.err
	}
	if f.off > 0 {
		n := copy(f.buf, f.buf[f.off:])
		f.buf, f.off = f.buf[:n], 0
	}
	if len(f.buf) == cap(f.buf) {
		if len(f.buf) >= maxFrameBytes {
			return fmt.Errorf("watch stream: an event is longer than %d bytes", maxFrameBytes)
		}
		f.buf = append(f.buf, make([]byte, len(f.buf))...)[:len(f.buf)]
	}
	n, err := f.r.Read(f.buf[len(f.buf):cap(f.buf)])
	f.buf = f.buf[:len(f.buf)+n]
	if err != nil {
		f.err = err
		if n > 0 {
			return nil
		}
		return err
	}
	return nil
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// Serializer decodes a watch event's envelope without parsing the
// object it carries: for an event as the API server writes it,
// {"type":"<TYPE>","object":{...}}, the object's bytes are taken as they
// are, and the watch then decodes them with the JSON serializer (which
// checks them as it does every document). Any other event, with spaces
// or other members, or its members in another order, goes to the JSON
// serializer whole. The one difference: an event with another member
// after the object, where that member's value ends in a bracket, fails to
// decode, where the JSON serializer would ignore it (or, for a second
// "object", take that one); the API server writes none.
type Serializer struct {
	runtime.Serializer
}

func (s Serializer) Decode(data []byte, defaults *schema.GroupVersionKind, into runtime.Object) (runtime.Object, *schema.GroupVersionKind, error) {
	if ev, ok := into.(*metav1.WatchEvent); ok {
		if typ, obj, ok := splitEvent(data); ok {
			ev.Type, ev.Object = typ, runtime.RawExtension{Raw: append([]byte(nil), obj...)}
			return ev, &schema.GroupVersionKind{Version: "v1", Kind: "WatchEvent"}, nil
		}
	}
	return s.Serializer.Decode(data, defaults, into)
}

// splitEvent returns the type and the object of an event written as
// {"type":"<TYPE>","object":<object>}, <TYPE> in capitals and the object
// a JSON object, with nothing else but trailing whitespace.
func splitEvent(data []byte) (string, []byte, bool) {
	const typePrefix, objectPrefix = `{"type":"`, `","object":`
	rest, ok := bytes.CutPrefix(data, []byte(typePrefix))
	if !ok {
		return "", nil, false
	}
	end := 0
	for end < len(rest) && rest[end] >= 'A' && rest[end] <= 'Z' {
		end++
	}
	typ := string(rest[:end])
	if rest, ok = bytes.CutPrefix(rest[end:], []byte(objectPrefix)); !ok || typ == "" {
		return "", nil, false
	}
	rest = bytes.TrimRight(rest, " \t\r\n")
	if len(rest) < 3 || rest[len(rest)-1] != '}' {
		return "", nil, false
	}
	obj := bytes.TrimRight(rest[:len(rest)-1], " \t\r\n")
	if len(obj) < 2 || obj[0] != '{' || obj[len(obj)-1] != '}' {
		return "", nil, false
	}
	return typ, obj, true
}

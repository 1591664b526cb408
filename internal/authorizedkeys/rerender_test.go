package authorizedkeys

import (
	"bytes"
	"testing"
)

// rerenderSections is the sections of shape: each bit adds a grant, two
// of them sharing a key line, one with options.
func rerenderSections(shape byte) []Section {
	var s []Section
	if shape&1 != 0 {
		s = append(s, sec("team-a", "uid-a", key(blobA, "alice")))
	}
	if shape&2 != 0 {
		s = append(s, sec("team-b", "uid-b", key(blobA, "alice"), key(blobB, "bob")))
	}
	if shape&4 != 0 {
		k := key(distinctBlob(int(shape)), "carol")
		k.Options = `from="10.0.0.0/8",no-pty`
		s = append(s, sec("team-c", "uid-c", k))
	}
	if shape&8 != 0 {
		s = append(s, sec("team-d", "uid-d", key(distinctBlob(1000+int(shape>>4)), "dan")))
	}
	return s
}

// Rerender, from what a render returned and its span, returns what
// RenderSpan returns from the same bytes, whatever the user's lines
// around the block (none, no final newline, CRLF, stray markers, lines
// that look like the operator's) and whatever the sequence of changes
// (blocks appearing, growing, shrinking, going away and coming back).
func FuzzRerenderMatchesRender(f *testing.F) {
	seeds := []string{
		"", user1, user1 + "\n", "# c\r\n" + user1 + "\r\n", "\n\n",
		block("# nodeaccess a uid=u", "ssh-ed25519 "+blobA+" x nodeaccess=a") + user1,
		user1 + "\n" + block("# nodeaccess a uid=u", "ssh-ed25519 "+blobA+" x nodeaccess=a"),
		user1 + "\n" + block("# nodeaccess a uid=u") + "# tail, no newline",
		BeginMarker + "\n" + user1 + "\n",
		EndMarker + "\n" + BeginMarker + "\n" + BeginMarker,
		"ssh-ed25519 " + blobB + " stray nodeaccess=team-b\n# nodeaccess team-b uid=uid-b\n",
		"\x00\n\n\n \t\r\n",
		" " + BeginMarker + "\nx" + EndMarker + "\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s), []byte{0, 1, 3, 0, 15, 6, 0})
		f.Add([]byte(s), []byte{7, 7, 2, 12, 1})
		f.Add([]byte(s), []byte{3, 0, 1, 0, 8})
	}
	f.Fuzz(func(t *testing.T, content []byte, shapes []byte) {
		if len(shapes) == 0 {
			return
		}
		prev, span, err := RenderSpan(content, rerenderSections(shapes[0]))
		if err != nil {
			t.Fatal(err)
		}
		for i, shape := range append(shapes[1:], shapes[0]) {
			checkSpan(t, prev, span)
			sections := rerenderSections(shape)
			want, wantSpan, err := RenderSpan(prev, sections)
			if err != nil {
				t.Fatal(err)
			}
			got, gotSpan, err := Rerender(prev, span, sections)
			if err != nil {
				t.Fatal(err)
			}
			if blk, err := newBlock(sections); err != nil || len(blk.appendTo(nil)) != blk.size {
				t.Fatalf("shape %d: a block of %d bytes was sized %d in advance (%v)", shape, len(blk.appendTo(nil)), blk.size, err)
			}
			if !bytes.Equal(got, want) || gotSpan != wantSpan {
				t.Fatalf("change %d (shape %d) from\n%q (block at %v):\nrerendered %q (block at %v)\nrendered   %q (block at %v)", i, shape, prev, span, got, gotSpan, want, wantSpan)
			}
			prev, span = got, gotSpan
		}
		checkSpan(t, prev, span)
	})
}

// checkSpan checks that span is the one block of out, or zero when it has none.
func checkSpan(t *testing.T, out []byte, span Span) {
	t.Helper()
	begins := 0
	for _, l := range splitLines(out) {
		if isBegin(l) {
			begins++
		}
	}
	if span == (Span{}) {
		if begins > 0 {
			t.Fatalf("no span, but the output has a block: %q", out)
		}
		return
	}
	b := out[span.Start:span.End]
	if !bytes.HasPrefix(b, []byte(BeginMarker+"\n")) || !bytes.HasSuffix(b, []byte(EndMarker+"\n")) || begins != 1 ||
		(span.Start > 0 && out[span.Start-1] != '\n') {
		t.Fatalf("span %v is not the one block of %q", span, out)
	}
}

// A span that does not fit the content is refused, not sliced.
func TestRerenderRefusesASpanOutsideTheContent(t *testing.T) {
	for _, span := range []Span{{Start: -1, End: 2}, {Start: 3, End: 2}, {Start: 0, End: 100}} {
		if _, _, err := Rerender([]byte("short\n"), span, nil); err == nil {
			t.Errorf("span %v of 6 bytes accepted", span)
		}
	}
}

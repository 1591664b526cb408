package authorizedkeys

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

const (
	blobA = "AAAAC3NzaC1lZDI1NTE5AAAAIHQcKBUJvZCUI4cabRgJQrFMYA/uPYHs+vLi/MryWsmq"
	blobB = "AAAAC3NzaC1lZDI1NTE5AAAAILx8BlVk0iQ8dc2TlIotZ8phKS+nHaE6FNvJayhFxslz"
	user1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUserOneUserOneUserOneUserOneUserOneUserOne me@home"
)

func sec(owner, uid string, keys ...Key) Section { return Section{Owner: owner, UID: uid, Keys: keys} }

func key(blob, comment string) Key { return Key{Type: "ssh-ed25519", Base64: blob, Comment: comment} }

// block builds the expected managed block from its inner lines.
func block(inner ...string) string {
	return BeginMarker + "\n" + strings.Join(inner, "\n") + "\n" + EndMarker + "\n"
}

func TestRender(t *testing.T) {
	teamA := sec("team-a", "uid-a", key(blobA, "alice"))
	blockA := block("# nodeaccess team-a uid=uid-a", "ssh-ed25519 "+blobA+" alice nodeaccess=team-a")
	cases := []struct {
		name     string
		in       string
		sections []Section
		want     string
	}{
		{"empty file", "", []Section{teamA}, blockA},
		{"nothing to do", "", nil, ""},
		{"user lines kept after a new block", "# mine\n" + user1 + "\n", []Section{teamA}, blockA + "# mine\n" + user1 + "\n"},
		{"missing final newline kept", user1, []Section{teamA}, blockA + user1},
		{"CRLF lines kept", "# mine\r\n" + user1 + "\r\n\r\n", []Section{teamA}, blockA + "# mine\r\n" + user1 + "\r\n\r\n"},
		{"block replaced in place", "# top\n" + block("# nodeaccess old uid=u0", "ssh-ed25519 "+blobB+" x nodeaccess=old") + "# bottom\n",
			[]Section{teamA}, "# top\n" + blockA + "# bottom\n"},
		{"block removed", "# top\n" + blockA + "# bottom\n", nil, "# top\n# bottom\n"},
		{"sections without keys remove the block", blockA + user1 + "\n", []Section{sec("team-a", "uid-a")}, user1 + "\n"},
		{"shared key once, attributed to both", "",
			[]Section{sec("team-b", "uid-b", key(blobA, "alice"), key(blobB, "bob")), sec("team-a", "uid-a", key(blobA, "alice"))},
			block("# nodeaccess team-a uid=uid-a", "ssh-ed25519 "+blobA+" alice nodeaccess=team-a,team-b",
				"# nodeaccess team-b uid=uid-b", "ssh-ed25519 "+blobB+" bob nodeaccess=team-b")},
		{"shared key only: the second grant still gets its header", "",
			[]Section{sec("team-a", "uid-a", key(blobA, "alice")), sec("team-b", "uid-b", key(blobA, "alice"))},
			block("# nodeaccess team-a uid=uid-a", "ssh-ed25519 "+blobA+" alice nodeaccess=team-a,team-b", "# nodeaccess team-b uid=uid-b")},
		{"same key, other options: two lines", "",
			[]Section{sec("team-a", "uid-a", key(blobA, "a"), Key{Options: `from="10.0.0.0/8",no-pty`, Type: "ssh-ed25519", Base64: blobA, Comment: "a"})},
			block("# nodeaccess team-a uid=uid-a", "ssh-ed25519 "+blobA+" a nodeaccess=team-a",
				`from="10.0.0.0/8",no-pty ssh-ed25519 `+blobA+" a nodeaccess=team-a")},
		{"one key under three options, one of them shared by a second grant", "",
			[]Section{
				sec("team-a", "uid-a", key(blobA, "a"), Key{Options: "no-pty", Type: "ssh-ed25519", Base64: blobA, Comment: "a"},
					Key{Options: "no-agent-forwarding", Type: "ssh-ed25519", Base64: blobA, Comment: "a"}),
				sec("team-b", "uid-b", Key{Options: "no-agent-forwarding", Type: "ssh-ed25519", Base64: blobA, Comment: "a"}, key(blobB, "b")),
			},
			block("# nodeaccess team-a uid=uid-a", "ssh-ed25519 "+blobA+" a nodeaccess=team-a", "no-pty ssh-ed25519 "+blobA+" a nodeaccess=team-a",
				"no-agent-forwarding ssh-ed25519 "+blobA+" a nodeaccess=team-a,team-b",
				"# nodeaccess team-b uid=uid-b", "ssh-ed25519 "+blobB+" b nodeaccess=team-b")},
		{"duplicate within a grant written once", "", []Section{sec("team-a", "uid-a", key(blobA, "alice"), key(blobA, "again"))}, blockA},
		{"hand edit inside the block discarded", block("# nodeaccess team-a uid=uid-a", "ssh-ed25519 "+blobB+" sneaked in", "ssh-ed25519 "+blobA+" alice nodeaccess=team-a") + user1 + "\n",
			[]Section{teamA}, blockA + user1 + "\n"},
		{"BEGIN without END keeps the user's lines", "# top\n" + BeginMarker + "\n# nodeaccess old uid=u0\nssh-ed25519 " + blobB + " x nodeaccess=old\n" + user1 + "\n# mine\n",
			[]Section{teamA}, "# top\n" + blockA + user1 + "\n# mine\n"},
		{"END without BEGIN dropped", user1 + "\n" + EndMarker + "\n# mine\n", []Section{teamA}, blockA + user1 + "\n# mine\n"},
		{"two blocks become one, where the first was", "# a\n" + blockA + "# b\n" + blockA + "# c\n", []Section{teamA}, "# a\n" + blockA + "# b\n# c\n"},
		{"BEGIN then BEGIN: the first span keeps the user's lines", BeginMarker + "\n" + user1 + "\n" + blockA + "# end\n", []Section{teamA}, blockA + user1 + "\n# end\n"},
		{"markers with CR and trailing spaces", strings.ReplaceAll(blockA, "\n", " \r\n") + user1 + "\n", []Section{teamA}, blockA + user1 + "\n"},
		{"operator-looking line outside the block left alone", "ssh-ed25519 " + blobB + " copied nodeaccess=old\n", nil, "ssh-ed25519 " + blobB + " copied nodeaccess=old\n"},
		{"binary junk outside kept", "\x00\xff\xfe junk\n", []Section{teamA}, blockA + "\x00\xff\xfe junk\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Render([]byte(tc.in), tc.sections)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got\n%q\nwant\n%q", got, tc.want)
			}
			again, err := Render(got, tc.sections)
			if err != nil || !bytes.Equal(again, got) {
				t.Fatalf("not idempotent:\n%q\n%q", got, again)
			}
			if p := Parse(got); p.Damaged() {
				t.Fatalf("rendered output parses as damaged:\n%q", got)
			}
		})
	}
}

func TestRenderIsDeterministicWhateverTheSectionOrder(t *testing.T) {
	a := sec("team-a", "uid-a", key(blobA, "alice"))
	b := sec("team-b", "uid-b", key(blobB, "bob"), key(blobA, "alice"))
	x, _ := Render([]byte(user1), []Section{a, b})
	y, _ := Render([]byte(user1), []Section{b, a})
	if !bytes.Equal(x, y) {
		t.Fatalf("order changed the output:\n%q\n%q", x, y)
	}
}

func TestParseReportsOwnersAndDamage(t *testing.T) {
	content, _ := Render([]byte(user1+"\n"), []Section{sec("team-b", "uid-b", key(blobB, "b")), sec("team-a", "uid-a", key(blobA, "a"))})
	p := Parse(content)
	if got := fmt.Sprint(p.Owners()); got != "[{team-a uid-a} {team-b uid-b}]" || p.Damaged() {
		t.Fatalf("owners %s damaged %v", got, p.Damaged())
	}
	for name, damaged := range map[string]string{
		"hand-added line":   strings.Replace(string(content), EndMarker, "ssh-ed25519 "+blobB+" mine\n"+EndMarker, 1),
		"BEGIN without END": strings.Replace(string(content), EndMarker+"\n", "", 1),
		"stray END":         string(content) + EndMarker + "\n",
		"two blocks":        string(content) + string(content),
	} {
		if !Parse([]byte(damaged)).Damaged() {
			t.Errorf("%s: not reported as damaged", name)
		}
	}
	if owners := Parse([]byte(user1)).Owners(); len(owners) != 0 {
		t.Errorf("owners in a file without block: %v", owners)
	}
}

func TestRenderRefusesInvalidInput(t *testing.T) {
	for name, s := range map[string]Section{
		"bad owner":                  sec("Team_A", "uid", key(blobA, "")),
		"owner with newline":         sec("a\nb", "uid", key(blobA, "")),
		"bad uid":                    sec("a", "uid with space", key(blobA, "")),
		"newline in comment":         sec("a", "uid", key(blobA, "alice\nssh-ed25519 "+blobB)),
		"attribution in comment":     sec("a", "uid", key(blobA, "x nodeaccess=other")),
		"bad base64":                 sec("a", "uid", key("AAAA AAAA", "")),
		"bad type":                   sec("a", "uid", Key{Type: "ssh ed25519", Base64: blobA}),
		"newline in options":         sec("a", "uid", Key{Options: "no-pty\ncommand=\"sh\"", Type: "ssh-ed25519", Base64: blobA}),
		"carriage return in comment": sec("a", "uid", key(blobA, "x\r")),
		"options read as the END":    sec("a", "uid", Key{Options: EndMarker, Type: "ssh-ed25519", Base64: blobA}),
		"options read as a comment":  sec("a", "uid", Key{Options: "#no-pty", Type: "ssh-ed25519", Base64: blobA}),
		"options after a space":      sec("a", "uid", Key{Options: " no-pty", Type: "ssh-ed25519", Base64: blobA}),
	} {
		if _, err := Render([]byte(user1), []Section{s}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// userLines returns the lines of content the package promises to keep: those
// not recognisably the operator's and not inside a closed BEGIN..END block
// (whose content the BEGIN line says is overwritten). It is written apart from
// Parse so that the fuzzer checks one against the other.
func userLines(content []byte) []string {
	lines := splitLines(content)
	var out []string
	for i := 0; i < len(lines); i++ {
		if isBegin(lines[i]) {
			j := i + 1
			for j < len(lines) && !isEnd(lines[j]) && !isBegin(lines[j]) {
				j++
			}
			if j < len(lines) && isEnd(lines[j]) {
				i = j // a closed block: skipped whole
				continue
			}
		}
		if !isOurs(lines[i]) {
			out = append(out, lines[i].text)
		}
	}
	return out
}

func FuzzRender(f *testing.F) {
	seeds := []string{
		"", user1, user1 + "\n", "# c\r\n" + user1 + "\r\n",
		block("# nodeaccess a uid=u", "ssh-ed25519 "+blobA+" x nodeaccess=a") + user1,
		BeginMarker + "\n" + user1 + "\n",
		EndMarker + "\n" + BeginMarker + "\n" + BeginMarker,
		"\x00\n\n\n \t\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, content []byte, shape uint8) {
		var sections []Section
		if shape&1 != 0 {
			sections = append(sections, sec("team-a", "uid-a", key(blobA, "alice")))
		}
		if shape&2 != 0 {
			sections = append(sections, sec("team-b", "uid-b", key(blobA, "alice"), key(blobB, "bob")))
		}
		out, err := Render(content, sections)
		if err != nil {
			t.Fatal(err)
		}
		// Every line that is not recognisably the operator's survives, in order, byte for byte.
		want := userLines(content)
		got := userLines(out)
		if strings.Join(got, "\x01") != strings.Join(want, "\x01") {
			t.Fatalf("user lines changed:\nin  %q\nout %q", content, out)
		}
		again, err := Render(out, sections)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent:\n%q\n%q", out, again)
		}
		p := Parse(out)
		if p.Damaged() {
			t.Fatalf("output parses as damaged: %q", out)
		}
		wantOwners := 0
		if shape&1 != 0 {
			wantOwners++
		}
		if shape&2 != 0 {
			wantOwners++
		}
		if len(p.Owners()) != wantOwners {
			t.Fatalf("owners %v, want %d: %q", p.Owners(), wantOwners, out)
		}
		if len(sections) == 0 && !bytes.Contains(content, []byte("nodeaccess")) && !bytes.Equal(out, content) {
			t.Fatalf("a file without any operator line changed:\n%q\n%q", content, out)
		}
	})
}

// lastField splits as strings.Fields does, for ASCII and other text: the
// last field and whether two fields stand before it.
func TestLastFieldSplitsAsFields(t *testing.T) {
	parts := []string{"", " ", "\t", "\r", "\v", "\f", "\u00a0", "\u2003", "a", "nodeaccess=x", "é", "ssh-ed25519", "  "}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		var b strings.Builder
		for range rng.IntN(8) {
			b.WriteString(parts[rng.IntN(len(parts))])
		}
		s := b.String()
		f := strings.Fields(s)
		wantLast, wantBefore := "", 0
		if len(f) > 0 {
			wantLast, wantBefore = f[len(f)-1], min(len(f)-1, 2)
		}
		if last, before := lastField(s); last != wantLast || before != wantBefore {
			t.Fatalf("lastField(%q) = %q, %d; strings.Fields gives %q, %d", s, last, before, wantLast, wantBefore)
		}
	}
}

// BenchmarkRenderManagedBlock is Render as an agent's pass runs it on a
// node that many grants select: a few lines of the user's and a block of 200 keys of 100
// grants, rendered again with one grant's key changed.
func BenchmarkRenderManagedBlock(b *testing.B) {
	sections := make([]Section, 100)
	for i := range sections {
		k1, k2 := key(distinctBlob(2*i), fmt.Sprintf("alice@laptop-%d", i)), key(distinctBlob(2*i+1), fmt.Sprintf("bob@laptop-%d", i))
		k1.Options = `from="10.0.0.0/8",no-agent-forwarding,expiry-time="20271201000000Z"`
		sections[i] = sec(fmt.Sprintf("team-%03d", i), fmt.Sprintf("0b5e4c2a-6f1d-4e7b-9c3a-%012d", i), k1, k2)
	}
	current, err := Render([]byte("# mine\n"+user1+"\n"), sections)
	if err != nil {
		b.Fatal(err)
	}
	sections[50].Keys[0].Comment = "alice@desktop"
	if held := Parse(current).Holdings(); len(held) != len(sections) || held[Owner{Name: "team-050", UID: sections[50].UID}] != 2 {
		b.Fatalf("the rendered file holds %v", held)
	}
	b.SetBytes(int64(len(current)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Render(current, sections); err != nil {
			b.Fatal(err)
		}
	}
}

// distinctBlob is an ed25519 key's base64 of its own for each n.
func distinctBlob(n int) string {
	raw := append([]byte("\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"), make([]byte, 32)...)
	binary.BigEndian.PutUint64(raw[len(raw)-8:], uint64(n))
	return base64.StdEncoding.EncodeToString(raw)
}

func BenchmarkRenderLargeFile(b *testing.B) {
	var content bytes.Buffer
	for i := 0; i < 20000; i++ {
		fmt.Fprintf(&content, "ssh-ed25519 %s user%d@host-%d comment padding padding padding\n", blobB, i, i)
	}
	var sections []Section
	for i := 0; i < 50; i++ {
		sections = append(sections, sec(fmt.Sprintf("team-%02d", i), fmt.Sprintf("uid-%d", i), key(blobA, fmt.Sprintf("k%d", i))))
	}
	current, _ := Render(content.Bytes(), sections)
	b.SetBytes(int64(len(current)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := Render(current, sections); err != nil {
			b.Fatal(err)
		}
	}
}

// Holdings counts what the file holds per grant, including shared lines,
// lines of damaged blocks and names left without a header by older files.
func TestHoldings(t *testing.T) {
	opts := Key{Options: `from="10.0.0.0/8",command="echo ssh-ed25519 x",no-pty`, Type: "ssh-ed25519", Base64: blobB, Comment: "with options"}
	written, err := Render([]byte(user1+"\n"), []Section{
		sec("team-a", "uid-a", key(blobA, "alice"), opts),
		sec("team-b", "uid-b", key(blobA, "alice")),
		sec("team-c", "uid-c"),
	})
	if err != nil {
		t.Fatal(err)
	}
	got := Parse(written).Holdings()
	want := map[Owner]int{{"team-a", "uid-a"}: 2, {"team-b", "uid-b"}: 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("holdings %v, want %v", got, want)
	}

	// A file written before every grant had a header: team-b only in the attribution.
	old := block("# nodeaccess team-a uid=uid-a", "ssh-ed25519 "+blobA+" alice nodeaccess=team-a,team-b") + user1 + "\n"
	if got := Parse([]byte(old)).Holdings(); got[Owner{Name: "team-b"}] != 1 || got[Owner{"team-a", "uid-a"}] != 1 {
		t.Errorf("old-format holdings %v", got)
	}
	// BEGIN without END: the recognisable key lines are still held (Render drops them).
	open := BeginMarker + "\n# nodeaccess team-a uid=uid-a\nno-pty ssh-ed25519 " + blobA + " a nodeaccess=team-a\n" + user1 + "\n"
	if got := Parse([]byte(open)).Holdings(); got[Owner{"team-a", "uid-a"}] != 1 {
		t.Errorf("unclosed block holdings %v", got)
	}
	// A copy of an operator line outside the block is the user's: not held.
	if got := Parse([]byte("ssh-ed25519 " + blobB + " copied nodeaccess=old\n")).Holdings(); len(got) != 0 {
		t.Errorf("a user's line outside the block counted as held: %v", got)
	}
}

// KeepPresent keeps only keys already in the file, so rendering it can only
// remove lines.
func TestKeepPresentOnlyRemoves(t *testing.T) {
	current, err := Render(nil, []Section{sec("team-a", "uid-a", key(blobA, "alice")), sec("team-b", "uid-b", key(blobB, "bob"))})
	if err != nil {
		t.Fatal(err)
	}
	desired := []Section{
		sec("team-a", "uid-a", key(blobA, "alice"), key(blobB, "new for a")),               // one present, one new
		sec("team-c", "uid-c", key(blobA, "alice")),                                        // new grant
		sec("team-b", "uid-b", Key{Options: "no-pty", Type: "ssh-ed25519", Base64: blobB}), // options changed
	}
	kept := Parse(current).KeepPresent(desired)
	out, err := Render(current, kept)
	if err != nil {
		t.Fatal(err)
	}
	want := block("# nodeaccess team-a uid=uid-a", "ssh-ed25519 "+blobA+" alice nodeaccess=team-a")
	if string(out) != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
	if len(out) > len(current) {
		t.Fatal("KeepPresent grew the file")
	}
}

// Count agrees with what Parse finds in the rendered file.
func TestCountAgreesWithHoldings(t *testing.T) {
	sections := []Section{
		sec("team-a", "uid-a", key(blobA, "alice"), key(blobA, "twice"), key(blobB, "bob")),
		sec("team-b", "uid-b", key(blobA, "alice")),
		sec("team-c", "uid-c"),
		// One blob under other options: a line each, however often listed.
		sec("team-d", "uid-d", key(blobB, "plain"), Key{Options: "no-pty", Type: "ssh-ed25519", Base64: blobB},
			Key{Options: "no-pty", Type: "ssh-ed25519", Base64: blobB, Comment: "again"},
			Key{Options: "no-x11-forwarding", Type: "ssh-ed25519", Base64: blobB}, key(blobB, "plain again")),
	}
	out, err := Render([]byte(user1+"\n"), sections)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(Count(sections)), fmt.Sprint(Parse(out).Holdings()); got != want {
		t.Fatalf("Count %s, Holdings of the rendered file %s", got, want)
	}
	if got := Count(sections)[Owner{Name: "team-d", UID: "uid-d"}]; got != 3 {
		t.Fatalf("team-d has 3 distinct lines, Count says %d", got)
	}
}

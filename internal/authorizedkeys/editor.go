// Package authorizedkeys edits authorized_keys files: pure functions from the
// file's bytes and the desired keys to the new bytes, with no I/O.
//
// The operator's lines live in one managed block:
//
//	# BEGIN nodeaccess-operator managed keys: edits between BEGIN and END are overwritten
//	# nodeaccess team-a uid=0f3c...
//	from="10.0.0.0/8",no-pty ssh-ed25519 AAAA... alice nodeaccess=team-a
//	ssh-ed25519 AAAA... bob nodeaccess=team-a,team-b
//	# nodeaccess team-b uid=7d2a...
//	# END nodeaccess-operator managed keys
//
// One sub-section per grant (NodeAccess), sorted by name then UID, each
// headed by its name and UID. A key line granted by several grants (same
// options, type and key) appears once, in the first grant's sub-section, and
// its last field names every grant. A grant with no key line gets no header;
// with no key at all there is no block.
//
// Every line outside the block is kept byte for byte and in place: comments,
// blank lines, options, CRLF endings, a missing final newline. A new block is
// put at the top of the file, so appending it never has to change the user's
// last line; an existing block is rewritten where it is.
//
// Damaged blocks are repaired without losing a line that is not recognisably
// the operator's (a BEGIN or END marker, a sub-section header, or a key line
// whose last field starts with "nodeaccess="):
//   - BEGIN followed by END: everything between is the operator's, and hand
//     edits there are discarded, as the BEGIN line says;
//   - BEGIN without END (before the end of the file or the next BEGIN): only
//     the recognisable lines of that span are dropped, the rest stays in place;
//   - END without BEGIN: the stray marker is dropped;
//   - several blocks: all are removed, the new block takes the first one's place.
package authorizedkeys

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// Markers and prefixes of the managed block.
const (
	// BeginMarker opens the managed block.
	BeginMarker = "# BEGIN nodeaccess-operator managed keys: edits between BEGIN and END are overwritten"
	// EndMarker closes the managed block.
	EndMarker = "# END nodeaccess-operator managed keys"
	// HeaderPrefix starts each grant's sub-section header: "# nodeaccess <name> uid=<uid>".
	HeaderPrefix = "# nodeaccess "
	// AttributionPrefix starts the last field of every managed key line.
	AttributionPrefix = "nodeaccess="

	beginPrefix = "# BEGIN nodeaccess-operator"
	endPrefix   = "# END nodeaccess-operator"
)

// Key is one key line the operator writes.
type Key struct {
	// Options is the rendered sshd options prefix, e.g. `from="10.0.0.0/8",no-pty`, or "".
	Options string
	// Type is the key type, e.g. "ssh-ed25519".
	Type string
	// Base64 is the key blob.
	Base64 string
	// Comment is the human comment written after the key, e.g. "alice".
	Comment string
}

// Section is what one grant gives one account.
type Section struct {
	// Owner is the grant's (NodeAccess's) name.
	Owner string
	// UID is the grant's UID.
	UID string
	// Keys are the grant's key lines, in order.
	Keys []Key
}

// Owner identifies a grant found in a file.
type Owner struct {
	Name string
	UID  string
}

// The checks of validateSection run for every key at every write of every
// node, so they are byte loops over class tables rather than regular
// expressions (which were a quarter of the agents' pass CPU under churn).
// validate_test.go holds the regular expressions they implement and checks
// that both agree.

func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
func isAlnum(c byte) bool      { return isLowerAlnum(c) || c >= 'A' && c <= 'Z' }

// class is a set of bytes, looked up by value.
type class [256]bool

func newClass(in func(byte) bool) *class {
	var c class
	for b := range 256 {
		c[b] = in(byte(b))
	}
	return &c
}

// all reports whether every byte of s is in the class.
func (c *class) all(s string) bool {
	for i := 0; i < len(s); i++ {
		if !c[s[i]] {
			return false
		}
	}
	return true
}

var (
	ownerChars  = newClass(func(c byte) bool { return isLowerAlnum(c) || c == '-' || c == '.' })
	uidChars    = newClass(func(c byte) bool { return isAlnum(c) || c == '-' })
	typeChars   = newClass(func(c byte) bool { return isAlnum(c) || c == '@' || c == '.' || c == '_' || c == '-' })
	base64Chars = newClass(func(c byte) bool { return isAlnum(c) || c == '+' || c == '/' })
)

// validOwner: ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$
func validOwner(s string) bool {
	return s != "" && isLowerAlnum(s[0]) && isLowerAlnum(s[len(s)-1]) && ownerChars.all(s)
}

// validUID: ^[A-Za-z0-9-]{1,64}$
func validUID(s string) bool {
	return s != "" && len(s) <= 64 && uidChars.all(s)
}

// validType: ^[A-Za-z0-9@._-]{1,64}$
func validType(s string) bool {
	return s != "" && len(s) <= 64 && typeChars.all(s)
}

// validBase64: ^[A-Za-z0-9+/]+={0,3}$
func validBase64(s string) bool {
	body := strings.TrimRight(s, "=")
	return body != "" && len(s)-len(body) <= 3 && base64Chars.all(body)
}

// hasControl: [\x00-\x1f\x7f] anywhere. Bytes of multi-byte UTF-8 sequences
// are all 0x80 or above, so a byte test finds exactly the control characters.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

// line is one line of a file: its text without terminator, and the
// terminator ("\n", or "" for a last line without one). A CRLF line keeps its
// "\r" in text, so it is written back exactly.
type line struct {
	text string
	eol  string
}

func (l line) bare() string { return strings.TrimRight(l.text, " \t\r") }

func isBegin(l line) bool  { return strings.HasPrefix(l.bare(), beginPrefix) }
func isEnd(l line) bool    { return strings.HasPrefix(l.bare(), endPrefix) }
func isHeader(l line) bool { return strings.HasPrefix(l.bare(), HeaderPrefix) }

// isOurs tells whether a line is recognisably the operator's.
func isOurs(l line) bool {
	if isBegin(l) || isEnd(l) || isHeader(l) {
		return true
	}
	last, before := lastField(l.text)
	return before >= 2 && strings.HasPrefix(last, AttributionPrefix)
}

// isSpace is what strings.Fields splits ASCII text on.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// lastField is the last whitespace-separated field of s and how many
// fields stand before it (counting at most 2), as strings.Fields would
// split s; ASCII text, the common case, is scanned without splitting it.
func lastField(s string) (string, int) {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			f := strings.Fields(s)
			if len(f) == 0 {
				return "", 0
			}
			return f[len(f)-1], min(len(f)-1, 2)
		}
	}
	end := len(s)
	for end > 0 && isSpace(s[end-1]) {
		end--
	}
	start := end
	for start > 0 && !isSpace(s[start-1]) {
		start--
	}
	before := 0
	for i := start; i > 0 && before < 2; {
		for i > 0 && isSpace(s[i-1]) {
			i--
		}
		if i == 0 {
			break
		}
		before++
		for i > 0 && !isSpace(s[i-1]) {
			i--
		}
	}
	return s[start:end], before
}

// splitLines copies content once; each line's text is a part of the copy.
func splitLines(content []byte) []line {
	text := string(content)
	lines := make([]line, 0, bytes.Count(content, []byte{'\n'})+1)
	for len(text) > 0 {
		i := strings.IndexByte(text, '\n')
		if i < 0 {
			lines = append(lines, line{text: text})
			break
		}
		lines = append(lines, line{text: text[:i], eol: "\n"})
		text = text[i+1:]
	}
	return lines
}

// Parsed is a file split into the user's lines and the operator's.
type Parsed struct {
	// outside are the lines that are not the operator's, in order.
	outside []line
	// insertAt is where in outside the block stands, or -1 when there is none.
	insertAt int
	owners   []Owner
	// keys are the operator's key lines found, wherever Render would drop them.
	keys    []heldKey
	damaged bool
}

// heldKey is one operator key line found in a file: the key, the grant
// whose sub-section holds it (zero when none), and the grant names of its
// attribution field.
type heldKey struct {
	key     Key
	section Owner
	names   []string
}

// Parse splits content into the user's lines and the managed block(s).
func Parse(content []byte) *Parsed { return parse(content, true) }

// parse is Parse; without keys it skips reading the operator's key lines
// and headers (Owners, Holdings and KeepPresent then know nothing), which
// is all Render needs.
func parse(content []byte, keys bool) *Parsed {
	lines := splitLines(content)
	p := &Parsed{insertAt: -1}
	seen := map[Owner]bool{}
	noteHeader := func(l line) Owner {
		f := strings.Fields(l.bare())
		if len(f) == 4 && strings.HasPrefix(f[3], "uid=") {
			o := Owner{Name: f[2], UID: strings.TrimPrefix(f[3], "uid=")}
			if !seen[o] {
				seen[o] = true
				p.owners = append(p.owners, o)
			}
			return o
		}
		return Owner{}
	}
	noteKey := func(l line, section Owner) {
		if k, names, ok := parseKeyLine(l.bare()); ok {
			p.keys = append(p.keys, heldKey{key: k, section: section, names: names})
		}
	}
	blocks := 0
	for i := 0; i < len(lines); {
		l := lines[i]
		switch {
		case isBegin(l):
			blocks++
			if p.insertAt < 0 {
				p.insertAt = len(p.outside)
			}
			// The span runs to the matching END, or to the next BEGIN or the end of file.
			end, closed := i+1, false
			for ; end < len(lines); end++ {
				if isEnd(lines[end]) {
					closed = true
					break
				}
				if isBegin(lines[end]) {
					break
				}
			}
			var section Owner
			for _, in := range lines[i+1 : end] {
				switch {
				case isHeader(in):
					if keys {
						section = noteHeader(in)
					}
				case isOurs(in):
					if keys {
						noteKey(in, section)
					}
				case !closed && !isOurs(in):
					p.outside = append(p.outside, in) // not recognisably ours: kept
				case closed && !isOurs(in):
					p.damaged = true // a hand edit inside the block: discarded
				}
			}
			if !closed {
				p.damaged = true
				i = end
			} else {
				i = end + 1
			}
		case isEnd(l):
			p.damaged = true // stray END: dropped
			i++
		default:
			p.outside = append(p.outside, l)
			i++
		}
	}
	if blocks > 1 {
		p.damaged = true
	}
	sort.Slice(p.owners, func(i, j int) bool {
		if p.owners[i].Name != p.owners[j].Name {
			return p.owners[i].Name < p.owners[j].Name
		}
		return p.owners[i].UID < p.owners[j].UID
	})
	return p
}

// Owners lists the grants whose sub-section headers stand in the managed
// block(s), sorted by name then UID.
func (p *Parsed) Owners() []Owner { return append([]Owner(nil), p.owners...) }

// Holdings counts, for each grant the managed block(s) hold, its key lines:
// those in its sub-section and those elsewhere whose attribution names it.
// A name attributed with no sub-section header of its own (files written
// before every grant got a header) is counted under an Owner with no UID.
// Two grants of the same name each count a line attributed to that name:
// the count errs towards "held", never towards "gone".
func (p *Parsed) Holdings() map[Owner]int {
	held := map[Owner]int{}
	byName := map[string][]Owner{}
	for _, o := range p.owners {
		held[o] = 0
		byName[o.Name] = append(byName[o.Name], o)
	}
	for _, k := range p.keys {
		counted := map[Owner]bool{}
		if k.section != (Owner{}) {
			counted[k.section] = true
		}
		for _, n := range k.names {
			owners := byName[n]
			if len(owners) == 0 {
				owners = []Owner{{Name: n}}
			}
			for _, o := range owners {
				counted[o] = true
			}
		}
		for o := range counted {
			held[o]++
		}
	}
	return held
}

// Count is Holdings for a file rendered from sections: each grant's
// distinct key lines (a line shared by grants counts for each of them).
func Count(sections []Section) map[Owner]int {
	held := make(map[Owner]int, len(sections))
	most := 0
	for _, s := range sections {
		most = max(most, len(s.Keys))
	}
	// By blob: a blob seen under other options or another type is rare,
	// and only then are a section's lines told apart in full.
	seen := make(map[string]*Key, most)
	for _, s := range sections {
		clear(seen)
		n := 0
		var others map[[3]string]struct{}
		for i := range s.Keys {
			k := &s.Keys[i]
			first, ok := seen[k.Base64]
			switch {
			case !ok:
				seen[k.Base64] = k
				n++
			case first.Options == k.Options && first.Type == k.Type:
			default:
				if others == nil {
					others = map[[3]string]struct{}{}
				}
				if _, dup := others[[3]string{k.Options, k.Type, k.Base64}]; !dup {
					others[[3]string{k.Options, k.Type, k.Base64}] = struct{}{}
					n++
				}
			}
		}
		if n > 0 {
			held[Owner{Name: s.Owner, UID: s.UID}] += n
		}
	}
	return held
}

// KeepPresent returns sections with only the keys the file already holds
// for each grant (same options, type and key, attributed to the grant's
// name): rendering them removes lines and never adds one, so the file
// cannot grow. It is the edit that revokes when the full one would not fit.
func (p *Parsed) KeepPresent(sections []Section) []Section {
	present := map[string]map[[3]string]bool{}
	for _, k := range p.keys {
		id := [3]string{k.key.Options, k.key.Type, k.key.Base64}
		names := append([]string{k.section.Name}, k.names...)
		for _, n := range names {
			if present[n] == nil {
				present[n] = map[[3]string]bool{}
			}
			present[n][id] = true
		}
	}
	out := make([]Section, 0, len(sections))
	for _, s := range sections {
		kept := Section{Owner: s.Owner, UID: s.UID}
		for _, k := range s.Keys {
			if present[s.Owner][[3]string{k.Options, k.Type, k.Base64}] {
				kept.Keys = append(kept.Keys, k)
			}
		}
		out = append(out, kept)
	}
	return out
}

// isKeyType tells a key type from an option: every type the operator
// writes starts with ssh-, ecdsa- or sk-, and no sshd option does.
func isKeyType(s string) bool {
	return validType(s) && (strings.HasPrefix(s, "ssh-") || strings.HasPrefix(s, "ecdsa-") || strings.HasPrefix(s, "sk-"))
}

// parseKeyLine reads an operator key line: an options prefix (up to the
// first space outside double quotes, when the line does not start with a
// key type), the type, the key, an optional comment and the attribution
// field "nodeaccess=<name>,<name>...".
func parseKeyLine(text string) (Key, []string, bool) {
	var k Key
	rest := strings.TrimLeft(text, " \t")
	first, _, _ := strings.Cut(rest, " ")
	if !isKeyType(first) {
		quoted := false
		end := -1
		for i := 0; i < len(rest) && end < 0; i++ {
			switch c := rest[i]; {
			case c == '"':
				quoted = !quoted
			case (c == ' ' || c == '\t') && !quoted:
				end = i
			}
		}
		if end < 0 {
			return Key{}, nil, false
		}
		k.Options, rest = rest[:end], rest[end+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 3 || !isKeyType(f[0]) || !validBase64(f[1]) || !strings.HasPrefix(f[len(f)-1], AttributionPrefix) {
		return Key{}, nil, false
	}
	k.Type, k.Base64 = f[0], f[1]
	k.Comment = strings.Join(f[2:len(f)-1], " ")
	names := strings.Split(strings.TrimPrefix(f[len(f)-1], AttributionPrefix), ",")
	return k, names, true
}

// Damaged tells whether the block was not as Render writes it: a marker
// without its pair, several blocks, or lines inside that are not the operator's.
func (p *Parsed) Damaged() bool { return p.damaged }

// Render returns content with the managed block holding exactly sections.
// It is deterministic and idempotent. On invalid input it returns an error
// and the caller must write nothing.
func Render(content []byte, sections []Section) ([]byte, error) {
	out, _, err := RenderSpan(content, sections)
	return out, err
}

// Span is where a render put the managed block in its output: the bytes
// [Start, End). A render that writes no block returns the zero Span.
type Span struct{ Start, End int }

// RenderSpan is Render, and also says where the block is in its output.
func RenderSpan(content []byte, sections []Section) ([]byte, Span, error) {
	blk, err := newBlock(sections)
	if err != nil {
		return nil, Span{}, err
	}
	p := parse(content, false)
	out := make([]byte, 0, len(content)+blk.size+1)
	at := p.insertAt
	if at < 0 {
		at = 0 // a new block goes at the top: the user's lines stay byte for byte
	}
	var span Span
	put := func() {
		if blk.size > 0 {
			span.Start = len(out)
			out = blk.appendTo(out)
			span.End = len(out)
		}
	}
	for i, l := range p.outside {
		if i == at {
			put()
		}
		out = append(out, l.text...)
		out = append(out, l.eol...)
	}
	if at >= len(p.outside) {
		if n := len(p.outside); n > 0 && p.outside[n-1].eol == "" && blk.size > 0 {
			out = append(out, '\n') // the block follows a last line that had no newline
		}
		put()
	}
	return out, span, nil
}

// Rerender is RenderSpan for content that a render returned, byte for
// byte, with its block at span: it renders the new block and puts it in
// the old one's place, without parsing the lines around it. Every line
// outside a rendered block is one that a parse keeps, where it is, and a
// new block goes where the old one was (or at the top when there was
// none), so the result is what RenderSpan(content, sections) returns. The
// caller must know the precondition holds (for example, content has the
// digest of what it wrote); for any other content, use RenderSpan.
func Rerender(content []byte, span Span, sections []Section) ([]byte, Span, error) {
	if span.Start < 0 || span.End < span.Start || span.End > len(content) {
		return nil, Span{}, fmt.Errorf("block span [%d, %d) is outside the %d bytes of the file", span.Start, span.End, len(content))
	}
	blk, err := newBlock(sections)
	if err != nil {
		return nil, Span{}, err
	}
	out := make([]byte, 0, len(content)-(span.End-span.Start)+blk.size)
	out = append(out, content[:span.Start]...)
	out = blk.appendTo(out)
	end := len(out)
	out = append(out, content[span.End:]...)
	if blk.size == 0 {
		return out, Span{}, nil
	}
	return out, Span{Start: span.Start, End: end}, nil
}

// blockPlan is a managed block ready to be written: its sections validated,
// sorted and deduplicated, and its size in bytes.
type blockPlan struct {
	subs    []blockSub
	entries []blockEntry
	size    int
}

// A blockEntry is one key line: its key and the grants it is attributed to
// (owners, when the line is shared; first alone otherwise).
type blockEntry struct {
	key    *Key
	first  string
	owners []string
	// same is the next entry with the same key blob (and other options
	// or type), or -1.
	same int
}

// A blockSub is one grant's sub-section: its header and its entries.
type blockSub struct {
	owner, uid string
	entries    []int
}

// newBlock prepares the managed block for sections; its size is exactly
// the length of its bytes, zero when no section has a key (there is then
// no block).
func newBlock(sections []Section) (blockPlan, error) {
	sorted := append([]Section(nil), sections...)
	for _, s := range sorted {
		if err := validateSection(s); err != nil {
			return blockPlan{}, err
		}
	}
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].Owner != sorted[j].Owner {
			return sorted[i].Owner < sorted[j].Owner
		}
		return sorted[i].UID < sorted[j].UID
	})
	total := 0
	for _, s := range sorted {
		total += len(s.Keys)
	}
	b := blockPlan{subs: make([]blockSub, 0, len(sorted)), entries: make([]blockEntry, 0, total), size: len(BeginMarker) + len(EndMarker) + 2}
	// A line is identified by its options, type and blob; the index is by
	// blob alone, the rare other lines of one blob chained from the first.
	byBlob := make(map[string]int, total)
	for _, s := range sorted {
		cur := blockSub{owner: s.Owner, uid: s.UID, entries: make([]int, 0, len(s.Keys))}
		for i := range s.Keys {
			k := &s.Keys[i]
			at, seen := byBlob[k.Base64]
			last := -1
			for ; seen && at >= 0; at = b.entries[at].same {
				if o := b.entries[at].key; o.Options == k.Options && o.Type == k.Type {
					break
				}
				last = at
			}
			if seen && at >= 0 {
				e := &b.entries[at]
				if e.owners == nil && e.first != s.Owner {
					e.owners = []string{e.first}
				}
				if e.owners != nil && e.owners[len(e.owners)-1] != s.Owner && !contains(e.owners, s.Owner) {
					e.owners = append(e.owners, s.Owner)
					b.size += len(s.Owner) + 1
				}
				continue
			}
			if last >= 0 {
				b.entries[last].same = len(b.entries)
			} else {
				byBlob[k.Base64] = len(b.entries)
			}
			cur.entries = append(cur.entries, len(b.entries))
			b.entries = append(b.entries, blockEntry{key: k, first: s.Owner, same: -1})
			b.size += lineSize(k, s.Owner)
		}
		// A grant whose every key is shared still gets its header, so the
		// file says which grants it holds.
		if len(s.Keys) > 0 {
			b.subs = append(b.subs, cur)
			b.size += len(HeaderPrefix) + len(s.Owner) + len(" uid=") + len(s.UID) + 1
		}
	}
	if len(b.subs) == 0 {
		return blockPlan{}, nil
	}
	return b, nil
}

// lineSize is the length of k's line, attributed to owner alone, with its
// newline: the options and a space, the type, the blob and the comment
// each followed by a space, the attribution.
func lineSize(k *Key, owner string) int {
	n := len(k.Type) + 1 + len(k.Base64) + 1 + len(AttributionPrefix) + len(owner) + 1
	if k.Options != "" {
		n += len(k.Options) + 1
	}
	if k.Comment != "" {
		n += len(k.Comment) + 1
	}
	return n
}

// appendTo appends the block's bytes to dst (nothing when it is empty).
func (b *blockPlan) appendTo(dst []byte) []byte {
	if len(b.subs) == 0 {
		return dst
	}
	dst = append(dst, BeginMarker...)
	dst = append(dst, '\n')
	for _, s := range b.subs {
		dst = append(dst, HeaderPrefix...)
		dst = append(dst, s.owner...)
		dst = append(dst, " uid="...)
		dst = append(dst, s.uid...)
		dst = append(dst, '\n')
		for _, at := range s.entries {
			e := &b.entries[at]
			if e.key.Options != "" {
				dst = append(dst, e.key.Options...)
				dst = append(dst, ' ')
			}
			dst = append(dst, e.key.Type...)
			dst = append(dst, ' ')
			dst = append(dst, e.key.Base64...)
			dst = append(dst, ' ')
			if e.key.Comment != "" {
				dst = append(dst, e.key.Comment...)
				dst = append(dst, ' ')
			}
			dst = append(dst, AttributionPrefix...)
			if e.owners == nil {
				dst = append(dst, e.first...)
			}
			sort.Strings(e.owners)
			for i, o := range e.owners {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = append(dst, o...)
			}
			dst = append(dst, '\n')
		}
	}
	dst = append(dst, EndMarker...)
	return append(dst, '\n')
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func validateSection(s Section) error {
	if len(s.Owner) > 253 || !validOwner(s.Owner) {
		return fmt.Errorf("grant name %q is not a valid object name", s.Owner)
	}
	if !validUID(s.UID) {
		return fmt.Errorf("grant %s: UID %q is not valid", s.Owner, s.UID)
	}
	for i, k := range s.Keys {
		switch {
		case !validType(k.Type):
			return fmt.Errorf("grant %s key %d: type %q is not valid", s.Owner, i, k.Type)
		case len(k.Base64) > 16384 || !validBase64(k.Base64):
			return fmt.Errorf("grant %s key %d: key data is not base64", s.Owner, i)
		case hasControl(k.Comment) || strings.Contains(k.Comment, AttributionPrefix) || len(k.Comment) > 1024:
			return fmt.Errorf("grant %s key %d: comment has control characters, is too long or contains %q", s.Owner, i, AttributionPrefix)
		case hasControl(k.Options) || len(k.Options) > 4096:
			return fmt.Errorf("grant %s key %d: options have control characters or are too long", s.Owner, i)
		case k.Options != "" && (k.Options[0] == '#' || isSpace(k.Options[0])):
			// The line would read as a comment to sshd, or as the block's
			// END marker or a header to the next parse.
			return fmt.Errorf("grant %s key %d: options start with %q", s.Owner, i, k.Options[:1])
		}
	}
	return nil
}

package agent

import (
	"bytes"
	"crypto/sha256"
	"testing"

	"github.com/nodeaccess/nodeaccess-operator/internal/authorizedkeys"
)

// A pass reuses its last render only for the very bytes it wrote and the
// very sections it rendered, and its block's place only for the very
// bytes it wrote: any other file is parsed and rendered again, and any
// change to a grant's keys, name or UID is rendered again.
func TestLastWriteHoldsOnlyItsOwnBytesAndSections(t *testing.T) {
	sections := []authorizedkeys.Section{{Owner: "team-a", UID: "u-1", Keys: []authorizedkeys.Key{
		{Type: "ssh-ed25519", Base64: "AAAAC3NzaC1lZDI1NTE5AAAAIA", Comment: "alice"},
	}}}
	out, err := authorizedkeys.Render([]byte("# mine\n"), sections)
	if err != nil {
		t.Fatal(err)
	}
	last := lastWrite{sections: sections, sum: sha256.Sum256(out)}
	if !last.wrote(append([]byte(nil), out...)) || !last.rendered(cloneSections(sections)) {
		t.Fatal("the same bytes and equal sections were not recognised")
	}
	edited := append([]byte(nil), out...)
	edited[len(edited)-2] ^= 1
	changedKey, changedUID, extra := cloneSections(sections), cloneSections(sections), cloneSections(sections)
	changedKey[0].Keys[0].Options = `from="10.0.0.1"`
	changedUID[0].UID = "u-2"
	extra = append(extra, authorizedkeys.Section{Owner: "team-b", UID: "u-3"})
	for name, c := range map[string]struct {
		file     []byte
		sections []authorizedkeys.Section
	}{
		"a byte of the file changed": {edited, sections},
		"the file emptied":           {nil, sections},
		"a key's options changed":    {out, changedKey},
		"the grant's UID changed":    {out, changedUID},
		"another grant added":        {out, extra},
		"every grant gone":           {out, nil},
	} {
		if !bytes.Equal(c.file, out) && last.wrote(c.file) {
			t.Errorf("%s: taken for the file the last render left", name)
		}
		if last.wrote(c.file) && last.rendered(c.sections) {
			t.Errorf("%s: the last render was reused", name)
		}
	}
}

func cloneSections(in []authorizedkeys.Section) []authorizedkeys.Section {
	out := make([]authorizedkeys.Section, len(in))
	for i, s := range in {
		out[i] = s
		out[i].Keys = append([]authorizedkeys.Key(nil), s.Keys...)
	}
	return out
}

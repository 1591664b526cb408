package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nodeaccess/nodeaccess-operator/internal/authorizedkeys"
	"github.com/nodeaccess/nodeaccess-operator/internal/nodewriter"
)

// reuseHost is a host root with alice (1001, her own line in her file) and
// toor (uid 0). (internal/testenv cannot be imported here: it imports this
// package.)
type reuseHost struct{ Root string }

func newReuseHost(t testing.TB) reuseHost {
	t.Helper()
	h := reuseHost{Root: t.TempDir()}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(h.Root, "etc"), 0o755))
	must(os.WriteFile(filepath.Join(h.Root, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/bash\n"+
		"alice:x:1001:1001::/home/alice:/bin/bash\ntoor:x:0:0::/home/toor:/bin/bash\n"), 0o644))
	for _, a := range []struct {
		name string
		id   int
	}{{"alice", 1001}, {"toor", 0}} {
		must(os.MkdirAll(filepath.Join(h.Root, "home", a.name, ".ssh"), 0o700))
		must(os.Chown(filepath.Join(h.Root, "home", a.name), a.id, a.id))
		must(os.Chown(filepath.Join(h.Root, "home", a.name, ".ssh"), a.id, a.id))
	}
	must(os.WriteFile(h.KeysFile("alice"), []byte("# alice's own\n"), 0o600))
	must(os.Chown(h.KeysFile("alice"), 1001, 1001))
	return h
}

func (h reuseHost) KeysFile(user string) string {
	return filepath.Join(h.Root, "home", user, ".ssh", "authorized_keys")
}

func (h reuseHost) Read(user string) string {
	data, _ := os.ReadFile(h.KeysFile(user))
	return string(data)
}

// lastWrite.rendered compares a Section field by field: a field added
// to Section must be compared there too.
func TestLastWriteComparesEverySectionField(t *testing.T) {
	if n := reflect.TypeFor[authorizedkeys.Section]().NumField(); n != 3 {
		t.Fatalf("authorizedkeys.Section has %d fields; lastWrite.rendered compares 3", n)
	}
}

// A pass that reuses its last render, or the place of its last block,
// leaves exactly what a full render would: a hand edit is repaired, a
// changed grant is written, the user's own lines stay, and nothing
// is remembered from a pass that refused keys (root, a file too large) or
// could not find the account, so the next pass renders in full.
func TestApplyAccountReusesOnlyItsOwnLastRender(t *testing.T) {
	h := newReuseHost(t)
	w, err := nodewriter.New(h.Root, nodewriter.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{writer: w, files: &fileWatcher{hostRoot: h.Root}, held: map[string]map[authorizedkeys.Owner]int{}, lastWrites: map[string]lastWrite{}}
	sections := []authorizedkeys.Section{{Owner: "team-a", UID: "0b5e4c2a-6f1d-4e7b-9c3a-000000000001", Keys: []authorizedkeys.Key{
		{Type: "ssh-ed25519", Base64: "AAAAC3NzaC1lZDI1NTE5AAAAIGFsaWNlYWxpY2VhbGljZWFsaWNlYWxpY2VhbGljZQ", Comment: "alice"},
	}}}
	want, err := authorizedkeys.Render([]byte("# alice's own\n"), sections)
	if err != nil {
		t.Fatal(err)
	}
	apply := func(step string, s []authorizedkeys.Section) accountResult {
		t.Helper()
		res := a.applyAccount("alice", s, nil)
		if res.err != nil {
			t.Fatalf("%s: %v", step, res.err)
		}
		return res
	}

	if res := apply("first pass", sections); !res.changed || h.Read("alice") != string(want) {
		t.Fatalf("first pass: changed %v, file\n%s", res.changed, h.Read("alice"))
	}
	if _, ok := a.lastWrites["alice"]; !ok {
		t.Fatal("the first pass's render was not remembered")
	}
	res := apply("same grants", sections)
	if res.changed || h.Read("alice") != string(want) || res.held[authorizedkeys.Owner{Name: "team-a", UID: sections[0].UID}] != 1 {
		t.Fatalf("same grants: changed %v, held %v, file\n%s", res.changed, res.held, h.Read("alice"))
	}

	// A hand edit inside the block, of the same length.
	edited := strings.Replace(string(want), " alice nodeaccess=", " mallo nodeaccess=", 1)
	if edited == string(want) {
		t.Fatal("the edit changed nothing")
	}
	if err := os.WriteFile(h.KeysFile("alice"), []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	if res := apply("after a hand edit", sections); !res.changed || h.Read("alice") != string(want) {
		t.Fatalf("after a hand edit: changed %v, file\n%s", res.changed, h.Read("alice"))
	}

	// The grant's key changes: a new block in the old one's place.
	changed := []authorizedkeys.Section{{Owner: sections[0].Owner, UID: sections[0].UID, Keys: []authorizedkeys.Key{
		{Options: `from="10.0.0.1"`, Type: sections[0].Keys[0].Type, Base64: sections[0].Keys[0].Base64, Comment: "alice"},
	}}}
	wantChanged, _ := authorizedkeys.Render([]byte("# alice's own\n"), changed)
	if res := apply("a changed grant", changed); !res.changed || h.Read("alice") != string(wantChanged) {
		t.Fatalf("a changed grant: changed %v, file\n%s", res.changed, h.Read("alice"))
	}

	// Alice adds lines above and below the block, and the grant changes
	// back: the file is no longer the one the agent wrote, so it is parsed
	// again, and her lines stay where she put them.
	mine := "# alice's laptop\n" + string(wantChanged) + "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHerOwnHerOwnHerOwnHerOwnHerOwnHerOwnHerO alice@desk"
	if err := os.WriteFile(h.KeysFile("alice"), []byte(mine), 0o600); err != nil {
		t.Fatal(err)
	}
	wantMine, _ := authorizedkeys.Render([]byte(mine), sections)
	if res := apply("her lines, then a changed grant", sections); !res.changed || h.Read("alice") != string(wantMine) ||
		!strings.HasPrefix(string(wantMine), "# alice's laptop\n"+authorizedkeys.BeginMarker) || !strings.HasSuffix(string(wantMine), " alice@desk") {
		t.Fatalf("her lines, then a changed grant: changed %v, file\n%s", res.changed, h.Read("alice"))
	}
	// Every grant goes (the block leaves her lines as they were), then one
	// comes back: a write that left no block is not remembered, so this
	// is a full render, which puts the new block at the top.
	wantNone, _ := authorizedkeys.Render([]byte(wantMine), nil)
	apply("no grant", nil)
	if h.Read("alice") != string(wantNone) || wantNone == nil || strings.Contains(string(wantNone), authorizedkeys.BeginMarker) {
		t.Fatalf("no grant: file\n%s", h.Read("alice"))
	}
	wantBack, _ := authorizedkeys.Render(wantNone, changed)
	if res := apply("a grant again", changed); !res.changed || h.Read("alice") != string(wantBack) || !strings.HasPrefix(string(wantBack), authorizedkeys.BeginMarker) {
		t.Fatalf("a grant again: changed %v, file\n%s", res.changed, h.Read("alice"))
	}
	if err := os.WriteFile(h.KeysFile("alice"), []byte(wantChanged), 0o600); err != nil {
		t.Fatal(err)
	}

	// Root under another name: refused, nothing remembered.
	if res := a.applyAccount("toor", sections, nil); res.refused == nil || len(res.held) != 0 {
		t.Fatalf("root: refused %v, held %v", res.refused, res.held)
	}
	if _, ok := a.lastWrites["toor"]; ok {
		t.Fatal("a refused pass was remembered")
	}

	// Too large to add: only removals, nothing remembered.
	big := []authorizedkeys.Section{{Owner: "team-b", UID: "0b5e4c2a-6f1d-4e7b-9c3a-000000000002", Keys: []authorizedkeys.Key{
		{Type: "ssh-ed25519", Base64: "AAAA" + strings.Repeat("A", 16000), Comment: strings.Repeat("c", 1000)},
	}}}
	for i := range nodewriter.MaxFileBytes / 16000 {
		big[0].Keys = append(big[0].Keys, authorizedkeys.Key{Type: "ssh-rsa", Base64: fmt.Sprintf("AAAA%08d", i) + strings.Repeat("B", 16000), Comment: "k"})
	}
	if res := a.applyAccount("alice", big, nil); res.refused == nil {
		t.Fatalf("a file over the limit was not refused: %v", res.err)
	}
	if _, ok := a.lastWrites["alice"]; ok {
		t.Fatal("a pass that refused keys was remembered")
	}
	apply("back to the grant", sections)
	if h.Read("alice") != string(want) {
		t.Fatalf("back to the grant: file\n%s", h.Read("alice"))
	}

	// The account disappears: its entry goes with it.
	if err := os.WriteFile(h.Root+"/etc/passwd", []byte("root:x:0:0:root:/root:/bin/bash\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a.applyAccount("alice", sections, nil)
	if _, ok := a.lastWrites["alice"]; ok {
		t.Fatal("the entry of an account that no longer exists was kept")
	}
}

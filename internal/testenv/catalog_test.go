package testenv

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestTruncateChannels(t *testing.T) {
	const pkg = `schema: olm.package
name: p
defaultChannel: stable
---
schema: olm.channel
package: p
name: stable
entries:
- name: p.v0.1.0
- name: p.v0.2.0
  replaces: p.v0.1.0
- name: p.v0.3.0
  replaces: p.v0.2.0
---
schema: olm.channel
package: p
name: candidate
entries:
- name: p.v0.1.0
`
	for _, tc := range []struct {
		csv  string
		want map[string][]string // channel -> entries
	}{
		{"p.v0.1.0", map[string][]string{"stable": {"p.v0.1.0"}, "candidate": {"p.v0.1.0"}}},
		{"p.v0.2.0", map[string][]string{"stable": {"p.v0.1.0", "p.v0.2.0"}, "candidate": {"p.v0.1.0"}}},
		{"p.v0.3.0", map[string][]string{"stable": {"p.v0.1.0", "p.v0.2.0", "p.v0.3.0"}, "candidate": {"p.v0.1.0"}}},
	} {
		t.Run(tc.csv, func(t *testing.T) {
			out, err := truncateChannels([]byte(pkg), tc.csv)
			if err != nil {
				t.Fatal(err)
			}
			docs := strings.Split(strings.TrimPrefix(string(out), "---\n"), "---\n")
			if len(docs) != 3 {
				t.Fatalf("%d documents, want 3:\n%s", len(docs), out)
			}
			got := map[string][]string{}
			for _, d := range docs {
				var doc struct {
					Schema, Name, DefaultChannel string
					Entries                      []struct{ Name string }
				}
				if err := yaml.Unmarshal([]byte(d), &doc); err != nil {
					t.Fatal(err)
				}
				if doc.Schema == "olm.package" {
					if doc.DefaultChannel != "stable" {
						t.Errorf("the package document changed: %s", d)
					}
					continue
				}
				for _, e := range doc.Entries {
					got[doc.Name] = append(got[doc.Name], e.Name)
				}
			}
			for ch, want := range tc.want {
				if strings.Join(got[ch], ",") != strings.Join(want, ",") {
					t.Errorf("channel %s: %v, want %v", ch, got[ch], want)
				}
			}
		})
	}
}

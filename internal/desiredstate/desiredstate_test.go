package desiredstate

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/authorizedkeys"
)

func TestRenderOptions(t *testing.T) {
	cases := []struct {
		name    string
		opts    *nav1.KeyOptions
		want    string
		wantErr string
	}{
		{"none", nil, "", ""},
		{"empty", &nav1.KeyOptions{}, "", ""},
		{"every option in a fixed order", &nav1.KeyOptions{
			NoUserRC: true, NoPTY: true, NoX11Forwarding: true, NoAgentForwarding: true, NoPortForwarding: true,
			Command: "internal-sftp", From: []string{"10.0.0.0/8", "!10.1.2.3", "*.corp.example"}, Restrict: true,
		}, `restrict,from="10.0.0.0/8,!10.1.2.3,*.corp.example",command="internal-sftp",no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-pty,no-user-rc`, ""},
		{"from escaping its quotes", &nav1.KeyOptions{From: []string{`1.2.3.4",command="sh`}}, "", "is not a host, address or CIDR pattern"},
		{"from smuggling a second pattern", &nav1.KeyOptions{From: []string{"10.0.0.1,*"}}, "", "is not a host, address or CIDR pattern"},
		{"command escaping its quotes", &nav1.KeyOptions{Command: `true" ssh-ed25519 AAAA`}, "", "has a quote"},
		{"command with a backslash", &nav1.KeyOptions{Command: `true\`}, "", "has a quote, backslash"},
		{"command with a newline", &nav1.KeyOptions{Command: "true\nssh-ed25519 AAAA"}, "", "control character"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RenderOptions(tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %q, %v", tc.wantErr, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestHashChangesExactlyWithContent(t *testing.T) {
	base := nav1.RenderedNodeAccessSpec{
		NodeAccessName: "a", NodeAccessUID: "u", Generation: 1,
		NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pool": "a"}},
		Users:        []nav1.RenderedUser{{Name: "alice", Keys: []nav1.RenderedKey{{Type: "ssh-ed25519", Data: "AAAA"}}}},
	}
	h0, err := Hash(&base)
	if err != nil {
		t.Fatal(err)
	}
	same := base.DeepCopy()
	same.Generation, same.Hash, same.NodeAccessUID = 7, "whatever", "other"
	if h, _ := Hash(same); h != h0 {
		t.Errorf("hash changed with generation, uid or hash field: %s vs %s", h, h0)
	}
	for name, mutate := range map[string]func(s *nav1.RenderedNodeAccessSpec){
		"suspend":  func(s *nav1.RenderedNodeAccessSpec) { s.Suspend = true },
		"selector": func(s *nav1.RenderedNodeAccessSpec) { s.NodeSelector.MatchLabels["pool"] = "b" },
		"expiry":   func(s *nav1.RenderedNodeAccessSpec) { s.ExpiresAt = &metav1.Time{Time: time.Unix(100, 0)} },
		"key":      func(s *nav1.RenderedNodeAccessSpec) { s.Users[0].Keys[0].Data = "BBBB" },
		"user":     func(s *nav1.RenderedNodeAccessSpec) { s.Users[0].Name = "bob" },
	} {
		changed := base.DeepCopy()
		mutate(changed)
		if h, _ := Hash(changed); h == h0 {
			t.Errorf("hash did not change with %s", name)
		}
	}
}

func TestForNode(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(d)} }
	k := func(data string, expires *metav1.Time) nav1.RenderedKey {
		return nav1.RenderedKey{Type: "ssh-ed25519", Data: data, Comment: data, ExpiresAt: expires}
	}
	rendered := func(name string, sel metav1.LabelSelector, mutate func(*nav1.RenderedNodeAccessSpec), users ...nav1.RenderedUser) nav1.RenderedNodeAccess {
		r := nav1.RenderedNodeAccess{Spec: nav1.RenderedNodeAccessSpec{NodeAccessName: name, NodeAccessUID: "uid-" + name, NodeSelector: sel, Users: users}}
		if mutate != nil {
			mutate(&r.Spec)
		}
		return r
	}
	poolA := metav1.LabelSelector{MatchLabels: map[string]string{"pool": "a"}}
	everyNode := metav1.LabelSelector{}
	alice := func(keys ...nav1.RenderedKey) nav1.RenderedUser { return nav1.RenderedUser{Name: "alice", Keys: keys} }

	plan := ForNode(map[string]string{"pool": "a"}, []nav1.RenderedNodeAccess{
		rendered("z-every", everyNode, nil, alice(k("K1", nil)), nav1.RenderedUser{Name: "deploy", Keys: []nav1.RenderedKey{k("K2", at(time.Hour))}}),
		rendered("a-pool", poolA, nil, alice(k("K3", at(-time.Second)), k("K4", at(30*time.Minute)))),
		rendered("other-pool", metav1.LabelSelector{MatchLabels: map[string]string{"pool": "b"}}, nil, alice(k("K5", nil))),
		rendered("suspended", everyNode, func(s *nav1.RenderedNodeAccessSpec) { s.Suspend = true }, alice(k("K6", nil))),
		rendered("expired", everyNode, func(s *nav1.RenderedNodeAccessSpec) { s.ExpiresAt = at(0) }, alice(k("K7", nil))),
		rendered("expiring", everyNode, func(s *nav1.RenderedNodeAccessSpec) { s.ExpiresAt = at(10 * time.Minute) }, alice(k("K8", nil))),
		rendered("bad-selector", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pool", Operator: "Bogus"}}}, nil, alice(k("K9", nil))),
		rendered("bad-options", everyNode, nil, alice(nav1.RenderedKey{Type: "ssh-ed25519", Data: "K10", Options: &nav1.KeyOptions{Command: `"`}})),
	}, now, Options{})

	keysOf := func(sections []authorizedkeys.Section) map[string]string {
		got := map[string]string{}
		for _, s := range sections {
			var blobs []string
			for _, key := range s.Keys {
				blobs = append(blobs, key.Base64)
			}
			got[s.Owner] = strings.Join(blobs, ",")
		}
		return got
	}
	wantAlice := map[string]string{"z-every": "K1", "a-pool": "K4", "expiring": "K8"}
	if got := keysOf(plan.Accounts["alice"]); len(got) != len(wantAlice) || got["z-every"] != "K1" || got["a-pool"] != "K4" || got["expiring"] != "K8" {
		t.Errorf("alice's sections %v, want %v", got, wantAlice)
	}
	if got := keysOf(plan.Accounts["deploy"]); len(got) != 1 || got["z-every"] != "K2" {
		t.Errorf("deploy's sections %v", got)
	}
	if !plan.NextChange.Equal(now.Add(10 * time.Minute)) {
		t.Errorf("next change %v, want the grant expiring in 10 minutes", plan.NextChange)
	}

	grants := map[string]Grant{}
	for _, g := range plan.Grants {
		grants[g.Name] = g
	}
	check := func(name string, selected, active bool, keys int, wantErr bool) {
		t.Helper()
		g := grants[name]
		if g.Selected != selected || g.Active != active || g.Keys != keys || (g.Err != nil) != wantErr {
			t.Errorf("%s: selected=%v active=%v keys=%d err=%v; want %v %v %d err=%v", name, g.Selected, g.Active, g.Keys, g.Err, selected, active, keys, wantErr)
		}
	}
	check("z-every", true, true, 2, false)
	check("a-pool", true, true, 1, false)
	check("other-pool", false, false, 0, false)
	check("suspended", true, false, 0, false)
	check("expired", true, false, 0, false)
	check("expiring", true, true, 1, false)
	check("bad-selector", false, false, 0, true)
	check("bad-options", true, false, 0, true)
	if len(plan.Grants) != 8 || plan.Grants[0].Name != "a-pool" {
		t.Errorf("grants must be listed once each, sorted by name: %v", plan.Grants)
	}
	if _, ok := keysOf(plan.Accounts["alice"])["bad-options"]; ok {
		t.Error("a grant with invalid options must write nothing")
	}
}

// An agent skips the events of grants that are no concern of its node; a
// grant must never be skipped when it selects the node or cannot be parsed.
func TestConcerns(t *testing.T) {
	node := map[string]string{"pool": "a", "zone": "z1"}
	for _, tc := range []struct {
		name string
		sel  metav1.LabelSelector
		want bool
	}{
		{"every node", metav1.LabelSelector{}, true},
		{"its pool", metav1.LabelSelector{MatchLabels: map[string]string{"pool": "a"}}, true},
		{"another pool", metav1.LabelSelector{MatchLabels: map[string]string{"pool": "b"}}, false},
		{"a label it lacks", metav1.LabelSelector{MatchLabels: map[string]string{"pool": "a", "gpu": "yes"}}, false},
		{"not in", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "zone", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"z2"}}}}, true},
		{"unparsable", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pool", Operator: "Bogus"}}}, true},
	} {
		r := &nav1.RenderedNodeAccess{Spec: nav1.RenderedNodeAccessSpec{NodeSelector: tc.sel}}
		if got := Concerns(node, r); got != tc.want {
			t.Errorf("%s: Concerns = %v, want %v", tc.name, got, tc.want)
		}
		// Concerns must agree with ForNode's own selection.
		plan := ForNode(node, []nav1.RenderedNodeAccess{*r}, time.Now(), Options{})
		if g := plan.Grants[0]; tc.want != (g.Selected || g.Err != nil) {
			t.Errorf("%s: Concerns = %v but ForNode selected=%v err=%v", tc.name, tc.want, g.Selected, g.Err)
		}
	}
}

func TestSelectedNodes(t *testing.T) {
	nodes := map[string]map[string]string{
		"a1": {"pool": "a"}, "a2": {"pool": "a", "gpu": "yes"}, "b1": {"pool": "b"}, "bare": nil,
	}
	for _, tc := range []struct {
		name    string
		sel     metav1.LabelSelector
		want    string
		wantErr bool
	}{
		{"every node", metav1.LabelSelector{}, "a1,a2,b1,bare", false},
		{"a pool", metav1.LabelSelector{MatchLabels: map[string]string{"pool": "a"}}, "a1,a2", false},
		{"exists", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "gpu", Operator: metav1.LabelSelectorOpExists}}}, "a2", false},
		{"not in", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pool", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"a"}}}}, "b1,bare", false},
		{"none", metav1.LabelSelector{MatchLabels: map[string]string{"pool": "c"}}, "", false},
		{"invalid", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pool", Operator: "Bogus"}}}, "", true},
	} {
		got, err := SelectedNodes(&tc.sel, nodes)
		if strings.Join(got, ",") != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%s: SelectedNodes = %v, %v; want %q, error %v", tc.name, got, err, tc.want, tc.wantErr)
		}
		// The agents' own test of selection agrees for every node.
		for name, l := range nodes {
			r := &nav1.RenderedNodeAccess{Spec: nav1.RenderedNodeAccessSpec{NodeSelector: tc.sel}}
			g := ForNode(l, []nav1.RenderedNodeAccess{*r}, time.Now(), Options{}).Grants[0]
			if g.Selected != strings.Contains(","+tc.want+",", ","+name+",") {
				t.Errorf("%s: node %s: ForNode selected=%v, SelectedNodes %v", tc.name, name, g.Selected, got)
			}
		}
	}
}

// With an sshd that understands it, every expiring line carries
// expiry-time in UTC, naming the last second before the earlier of the
// key's and the grant's expiry (sshd refuses once that second has passed).
func TestExpiryTimeOption(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time {
		return &metav1.Time{Time: now.Add(d).In(time.FixedZone("CET", 3600))}
	}
	grant := nav1.RenderedNodeAccess{Spec: nav1.RenderedNodeAccessSpec{
		NodeAccessName: "g", NodeAccessUID: "u", ExpiresAt: at(2 * time.Hour),
		Users: []nav1.RenderedUser{{Name: "alice", Keys: []nav1.RenderedKey{
			{Type: "ssh-ed25519", Data: "KEARLY", ExpiresAt: at(time.Hour + 30*time.Second), Options: &nav1.KeyOptions{NoPTY: true}},
			{Type: "ssh-ed25519", Data: "KGRANT"},
		}}},
	}}
	options := func(o Options) map[string]string {
		got := map[string]string{}
		for _, s := range ForNode(nil, []nav1.RenderedNodeAccess{grant}, now, o).Accounts["alice"] {
			for _, k := range s.Keys {
				got[k.Base64] = k.Options
			}
		}
		return got
	}
	got := options(Options{SSHDExpiry: true})
	if want := `no-pty,expiry-time="20300101130029Z"`; got["KEARLY"] != want {
		t.Errorf("the key's own expiry: %q, want %q", got["KEARLY"], want)
	}
	if want := `expiry-time="20300101135959Z"`; got["KGRANT"] != want {
		t.Errorf("the grant's expiry: %q, want %q", got["KGRANT"], want)
	}
	grant.Spec.ExpiresAt = nil
	if got := options(Options{SSHDExpiry: true}); got["KGRANT"] != "" {
		t.Errorf("a key that never expires got %q", got["KGRANT"])
	}
	if got := options(Options{}); got["KEARLY"] != "no-pty" {
		t.Errorf("without an sshd that understands it: %q", got["KEARLY"])
	}
}

// sshd refuses a key once the second its expiry-time names has passed, so
// the option names the second before the instant, whatever its fraction
// and zone: never a moment of access after the instant.
func TestExpiryOptionEndsAtTheInstant(t *testing.T) {
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC), `expiry-time="20300101115959Z"`},
		{time.Date(2030, 1, 1, 12, 0, 0, 999_999_999, time.UTC), `expiry-time="20300101115959Z"`},
		{time.Date(2030, 1, 1, 13, 0, 1, 0, time.FixedZone("CET", 3600)), `expiry-time="20300101120000Z"`},
		{time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), `expiry-time="20291231235959Z"`},
	} {
		if got := ExpiryOption(tc.at); got != tc.want {
			t.Errorf("ExpiryOption(%s) = %s, want %s", tc.at, got, tc.want)
		}
	}
}

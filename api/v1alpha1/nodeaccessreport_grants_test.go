package v1alpha1

import "testing"

// A grant listed twice in a report is applied only when both entries say
// so for the same hash, holds the larger count of keys, and keeps the
// reason of an entry that is not applied, in whichever order they come.
func TestAGrantListedTwiceIsReadConservatively(t *testing.T) {
	applied := GrantReport{Name: "g", UID: "u", Hash: "h1", Keys: 0, Applied: true}
	stale, holding, failing, silent := applied, applied, applied, applied
	stale.Hash = "h0"
	holding.Keys = 2
	failing.Applied, failing.Reason = false, ReadFailedReason
	silent.Applied = false
	for _, c := range []struct {
		name    string
		a, b    GrantReport
		applied bool
		keys    int32
		reason  string
	}{
		{"the same entry twice", applied, applied, true, 0, ""},
		{"another rendering", applied, stale, false, 0, ""},
		{"keys held in one", applied, holding, true, 2, ""},
		{"one failing", applied, failing, false, 0, ReadFailedReason},
		{"one failing, the other not applied without a reason", silent, failing, false, 0, ReadFailedReason},
	} {
		for _, order := range [][2]GrantReport{{c.a, c.b}, {c.b, c.a}} {
			other := GrantReport{Name: "other", UID: "v", Applied: true, Hash: "x"}
			st := NodeAccessReportStatus{Grants: []GrantReport{order[0], other, order[1]}}
			g, ok := st.Grant("u")
			byUID := st.GrantsByUID()
			for _, got := range []GrantReport{g, byUID["u"]} {
				if !ok || got.Applied != c.applied || got.Keys != c.keys || got.Reason != c.reason {
					t.Errorf("%s (%s first): applied %v, keys %d, reason %q; want %v, %d, %q",
						c.name, order[0].Hash+order[0].Reason, got.Applied, got.Keys, got.Reason, c.applied, c.keys, c.reason)
				}
			}
			if v := byUID["v"]; v.Name != other.Name || !v.Applied || v.Hash != other.Hash || len(byUID) != 2 {
				t.Errorf("%s: the other grant read as %+v of %d", c.name, byUID["v"], len(byUID))
			}
		}
	}
	if _, ok := (&NodeAccessReportStatus{Grants: []GrantReport{applied}}).Grant("missing"); ok {
		t.Error("a grant the report does not list was found")
	}
}

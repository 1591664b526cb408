package v1alpha1

// Grant returns the report's entry for the grant of uid. The list of
// grants is atomic, so the API server takes a report that names a grant
// twice, which no agent writes; such entries are read together as a
// reader of a report must read them, since either may be the true one:
// applied only if both say so for the same rendering, the larger count
// of keys (a revocation is proven only when both say none is left), and
// the reason of an entry that says it is not applied.
func (s *NodeAccessReportStatus) Grant(uid string) (GrantReport, bool) {
	var out GrantReport
	found := false
	for _, g := range s.Grants {
		if g.UID != uid {
			continue
		}
		if found {
			g = mergeEntries(out, g)
		}
		out, found = g, true
	}
	return out, found
}

// GrantsByUID returns every grant of the report by UID, each as Grant
// returns it.
func (s *NodeAccessReportStatus) GrantsByUID() map[string]GrantReport {
	out := make(map[string]GrantReport, len(s.Grants))
	for _, g := range s.Grants {
		if prev, twice := out[g.UID]; twice {
			g = mergeEntries(prev, g)
		}
		out[g.UID] = g
	}
	return out
}

// mergeEntries is what two entries of one grant say together.
func mergeEntries(a, b GrantReport) GrantReport {
	out := a
	if b.Reason != "" && (a.Applied || a.Reason == "") && !b.Applied {
		out = b
	}
	out.Applied = a.Applied && b.Applied && a.Hash == b.Hash
	out.Keys = max(a.Keys, b.Keys)
	return out
}

package render

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
	"github.com/nodeaccess/nodeaccess-operator/internal/nodefilter"
)

// CheckNodes says whether replacing name's footprint with f keeps every
// node within its limits. nodes are the label sets of the cluster's nodes
// and keys the watch filter's vocabulary:
// a node's agent receives the grants its filter lets through (bounded by
// MaxNodeGrants and MaxNodeBytes) and writes those that select it (bounded
// by MaxAccountBytes). As with Check, a node already over a limit refuses
// only a change that adds to it there.
func (l *Ledger) CheckNodes(name string, f Footprint, nodes []map[string]string, keys []string) error {
	old, had := l.grants[name]
	if had && !grows(old, f) {
		return nil
	}
	type reach struct {
		selector labels.Selector // nil: selects no node
		filter   labels.Set
	}
	reachOf := func(fp Footprint) reach {
		if fp.Selector == nil {
			return reach{}
		}
		r := reach{filter: nodefilter.Labels(fp.Selector, keys)}
		if s, err := desiredstate.Selector(fp.Selector); err == nil {
			r.selector = s
		}
		return r
	}
	others := make([]string, 0, len(l.grants))
	for other := range l.grants {
		if other != name {
			others = append(others, other)
		}
	}
	slices.Sort(others)
	reaches := make(map[string]reach, len(others))
	for _, other := range others {
		reaches[other] = reachOf(l.grants[other])
	}
	oldReach, newReach := reachOf(old), reachOf(f)

	var over []string
	overNodes := 0
	for _, group := range groupNodes(nodes, slices.Concat([]Footprint{f}, slices.Collect(maps.Values(l.grants)))) {
		node := group.labels
		filter := nodefilter.Selector(node, keys)
		set := labels.Set(node)
		receives := func(r reach) bool { return filter.Matches(r.filter) }
		writes := func(r reach) bool { return r.selector != nil && r.selector.Matches(set) }
		if !receives(newReach) && !writes(newReach) {
			continue
		}
		grants, bytes, accounts := 0, 0, map[string]int{}
		for _, other := range others {
			r := reaches[other]
			if receives(r) {
				grants++
				bytes += l.grants[other].Bytes
			}
			if writes(r) {
				for acct, n := range l.grants[other].Accounts {
					accounts[acct] += n
				}
			}
		}
		var here []string
		if receives(newReach) {
			before := 0
			if had && receives(oldReach) {
				before = old.Bytes
			}
			if grants+1 > l.limits.MaxNodeGrants && !(had && receives(oldReach)) {
				here = append(here, fmt.Sprintf("%d grants, at most %d", grants+1, l.limits.MaxNodeGrants))
			}
			if total := bytes + f.Bytes; total > l.limits.MaxNodeBytes && f.Bytes > before {
				here = append(here, fmt.Sprintf("%d rendered bytes, at most %d", total, l.limits.MaxNodeBytes))
			}
		}
		if writes(newReach) {
			for _, acct := range slices.Sorted(maps.Keys(f.Accounts)) {
				n, before := f.Accounts[acct], 0
				if had && writes(oldReach) {
					before = old.Accounts[acct]
				}
				if total := accounts[acct] + n; total > l.limits.MaxAccountBytes && n > before {
					here = append(here, fmt.Sprintf("%d bytes of keys for the account %s, at most %d", total, acct, l.limits.MaxAccountBytes))
				}
			}
		}
		if len(here) > 0 {
			if overNodes == 0 {
				over = here
			}
			overNodes += group.nodes
		}
	}
	if overNodes > 0 {
		return fmt.Errorf("accepting it would take %d nodes to %s", overNodes, strings.Join(over, "; "))
	}
	return nil
}

// grows reports whether f adds to what old costs any node: another
// selector, more bytes, or more key bytes for an account.
func grows(old, f Footprint) bool {
	if f.Bytes > old.Bytes || (old.Selector == nil) != (f.Selector == nil) ||
		(f.Selector != nil && f.Selector.String() != old.Selector.String()) {
		return true
	}
	for acct, n := range f.Accounts {
		if n > old.Accounts[acct] {
			return true
		}
	}
	return false
}

// nodeGroup is the nodes that no grant's selector tells apart.
type nodeGroup struct {
	labels map[string]string
	nodes  int
}

// groupNodes groups nodes by their labels of the keys the footprints'
// selectors name: every selector, and so every watch filter, treats the
// nodes of one group alike.
func groupNodes(nodes []map[string]string, fps []Footprint) []nodeGroup {
	named := map[string]bool{}
	for _, fp := range fps {
		if fp.Selector == nil {
			continue
		}
		for k := range fp.Selector.MatchLabels {
			named[k] = true
		}
		for _, e := range fp.Selector.MatchExpressions {
			named[e.Key] = true
		}
	}
	keys := slices.Sorted(maps.Keys(named))
	byKey := map[string]*nodeGroup{}
	var out []*nodeGroup
	for _, node := range nodes {
		projected := map[string]string{}
		var id strings.Builder
		for _, k := range keys {
			if v, ok := node[k]; ok {
				projected[k] = v
				fmt.Fprintf(&id, "%q=%q,", k, v)
			}
		}
		g := byKey[id.String()]
		if g == nil {
			g = &nodeGroup{labels: projected}
			byKey[id.String()] = g
			out = append(out, g)
		}
		g.nodes++
	}
	groups := make([]nodeGroup, len(out))
	for i, g := range out {
		groups[i] = *g
	}
	return groups
}

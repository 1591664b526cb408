package render

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// ClusterLimits bound what the agents hold over all grants together, so
// that no set of NodeAccess objects can exhaust the agents' memory (every
// agent caches every rendered grant) or push an account shared by many
// grants past the size an agent writes. docs/benchmarks.md measures an
// agent at these bounds.
type ClusterLimits struct {
	// MaxGrants is the most rendered grants.
	MaxGrants int
	// MaxBytes bounds the rendered grants' total encoded size.
	MaxBytes int
	// MaxAccountBytes bounds, for one account name, the bytes of the key
	// lines all grants give it: what a node selected by all of them writes
	// into that account's file, a part of the agent's 8 MiB per file.
	MaxAccountBytes int
}

// DefaultClusterLimits are the manager's bounds unless told otherwise.
var DefaultClusterLimits = ClusterLimits{MaxGrants: 1000, MaxBytes: 16 << 20, MaxAccountBytes: 4 << 20}

// Footprint is what one rendered grant costs every agent.
type Footprint struct {
	// Bytes is the rendered spec's encoded size.
	Bytes int
	// Accounts maps each account to the bytes of its key lines.
	Accounts map[string]int
}

// FootprintOf measures a rendered spec.
func FootprintOf(spec *nav1.RenderedNodeAccessSpec) Footprint {
	data, _ := json.Marshal(spec)
	f := Footprint{Bytes: len(data), Accounts: map[string]int{}}
	for _, u := range spec.Users {
		for _, k := range u.Keys {
			// type, key, comment, the options (at most a few hundred
			// bytes of rendered text) and the attribution field.
			n := len(k.Type) + len(k.Data) + len(k.Comment) + len(spec.NodeAccessName) + len(" nodeaccess=") + 3
			if k.Options != nil {
				opts, _ := json.Marshal(k.Options)
				n += len(opts)
			}
			f.Accounts[u.Name] += n
		}
	}
	return f
}

// Ledger adds up the footprints of every rendered grant. It is not safe
// for concurrent use.
type Ledger struct {
	limits   ClusterLimits
	grants   map[string]Footprint
	bytes    int
	accounts map[string]int
}

// NewLedger returns an empty ledger with the given limits.
func NewLedger(limits ClusterLimits) *Ledger {
	return &Ledger{limits: limits, grants: map[string]Footprint{}, accounts: map[string]int{}}
}

// Has says whether the ledger counts a grant.
func (l *Ledger) Has(name string) bool {
	_, ok := l.grants[name]
	return ok
}

// Check says whether replacing name's footprint with f keeps the cluster
// within its limits. A change that does not grow a total that is over its
// limit (the limits were lowered, say) is accepted: refusing it would keep
// more, not less.
func (l *Ledger) Check(name string, f Footprint) error {
	old, had := l.grants[name]
	var over []string
	if grants := len(l.grants); !had && grants+1 > l.limits.MaxGrants {
		over = append(over, fmt.Sprintf("%d grants, at most %d", grants+1, l.limits.MaxGrants))
	}
	if total := l.bytes - old.Bytes + f.Bytes; total > l.limits.MaxBytes && f.Bytes > old.Bytes {
		over = append(over, fmt.Sprintf("%d rendered bytes over all grants, at most %d", total, l.limits.MaxBytes))
	}
	names := make([]string, 0, len(f.Accounts))
	for acct := range f.Accounts {
		names = append(names, acct)
	}
	sort.Strings(names)
	for _, acct := range names {
		n := f.Accounts[acct]
		if total := l.accounts[acct] - old.Accounts[acct] + n; total > l.limits.MaxAccountBytes && n > old.Accounts[acct] {
			over = append(over, fmt.Sprintf("%d bytes of keys for the account %s over all grants, at most %d", total, acct, l.limits.MaxAccountBytes))
		}
	}
	if len(over) > 0 {
		return fmt.Errorf("accepting it would take the cluster to %s", strings.Join(over, "; "))
	}
	return nil
}

// Set records name's footprint, replacing what it had.
func (l *Ledger) Set(name string, f Footprint) {
	l.Remove(name)
	l.grants[name] = f
	l.bytes += f.Bytes
	for acct, n := range f.Accounts {
		l.accounts[acct] += n
	}
}

// Remove forgets name's footprint.
func (l *Ledger) Remove(name string) {
	old, ok := l.grants[name]
	if !ok {
		return
	}
	delete(l.grants, name)
	l.bytes -= old.Bytes
	for acct, n := range old.Accounts {
		if l.accounts[acct] -= n; l.accounts[acct] <= 0 {
			delete(l.accounts, acct)
		}
	}
}

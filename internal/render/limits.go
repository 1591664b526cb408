package render

import (
	"encoding/json"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// ClusterLimits bound what the rendered grants cost: the cluster (etcd and
// the manager hold every one) and each node's agent (which holds the grants
// that may select its node, and writes those that do). docs/benchmarks.md
// measures an agent at these bounds.
type ClusterLimits struct {
	// MaxGrants is the most rendered grants in the cluster.
	MaxGrants int
	// MaxBytes bounds the rendered grants' total encoded size in the cluster.
	MaxBytes int
	// MaxNodeGrants is the most rendered grants one node's agent receives.
	MaxNodeGrants int
	// MaxNodeBytes bounds the encoded size of the rendered grants one
	// node's agent receives and holds in memory.
	MaxNodeBytes int
	// MaxAccountBytes bounds, for one account name, the bytes of the key
	// lines the grants selecting one node give it: what that node writes
	// into the account's file, a part of the agent's 8 MiB per file.
	MaxAccountBytes int
}

// DefaultClusterLimits are the manager's bounds unless told otherwise. They
// admit 500 NodeAccess objects of 20 ed25519 keys each (about 2.5 MiB
// rendered), every one selecting every node, whatever the number of nodes;
// and an agent receiving the most they allow stays within its container's
// memory limit (docs/benchmarks.md, "bounds").
var DefaultClusterLimits = ClusterLimits{
	MaxGrants: 1000, MaxBytes: 16 << 20,
	MaxNodeGrants: 512, MaxNodeBytes: 4 << 20, MaxAccountBytes: 2 << 20,
}

// Footprint is what one rendered grant costs the agents it reaches.
type Footprint struct {
	// Bytes is the rendered spec's encoded size.
	Bytes int
	// Accounts maps each account to the bytes of its key lines.
	Accounts map[string]int
	// Selector is the grant's node selector (nil: it selects no node).
	Selector *metav1.LabelSelector
}

// FootprintOf measures a rendered spec.
func FootprintOf(spec *nav1.RenderedNodeAccessSpec) Footprint {
	data, _ := json.Marshal(spec)
	f := Footprint{Bytes: len(data), Accounts: map[string]int{}, Selector: spec.NodeSelector.DeepCopy()}
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
	limits ClusterLimits
	grants map[string]Footprint
	bytes  int
}

// NewLedger returns an empty ledger with the given limits.
func NewLedger(limits ClusterLimits) *Ledger {
	return &Ledger{limits: limits, grants: map[string]Footprint{}}
}

// Has says whether the ledger counts a grant.
func (l *Ledger) Has(name string) bool {
	_, ok := l.grants[name]
	return ok
}

// Check says whether replacing name's footprint with f keeps the cluster
// within its cluster-wide limits (CheckNodes checks the nodes'). A change that does not grow a total that is over its
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
}

// Remove forgets name's footprint.
func (l *Ledger) Remove(name string) {
	old, ok := l.grants[name]
	if !ok {
		return
	}
	delete(l.grants, name)
	l.bytes -= old.Bytes
}

package desiredstate

import (
	"fmt"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/authorizedkeys"
)

// Plan is what one node must hold at one instant.
type Plan struct {
	// Accounts maps each account a selected grant names to the sections it
	// must hold (none, when only suspended, expired or invalid grants name
	// it: their keys must be gone).
	Accounts map[string][]authorizedkeys.Section
	// Grants describes every rendered grant as seen from this node, sorted by name.
	Grants []Grant
	// NextChange is the earliest future instant at which a key or grant
	// expires, so the plan changes; zero when nothing expires.
	NextChange time.Time
}

// Grant is one rendered NodeAccess as seen from one node.
type Grant struct {
	Name       string
	UID        string
	Generation int64
	Hash       string
	// Selected is true when the grant's selector matches the node.
	Selected bool
	// Active is true when the grant is selected, not suspended and not expired.
	Active bool
	// Accounts lists the accounts the grant names on this node when it
	// selects it, whatever its state: where its keys are written, or must be
	// proven gone.
	Accounts []string
	// Keys counts the grant's unexpired keys on this node.
	Keys int
	// Err is set when the grant cannot be applied here (a bad selector or key options).
	Err error
}

// Options shape the lines of a plan for one node.
type Options struct {
	// SSHDExpiry adds OpenSSH's expiry-time="YYYYMMDDHHMMSSZ" option (UTC)
	// to every line whose key or grant expires, so that the node's sshd
	// refuses the key at that instant by itself, even when the agent, the
	// network or the control plane is down. Only for an sshd that
	// understands it (hostkeys.UnderstandsUTCExpiry): sshd ignores a line
	// whose options it cannot parse.
	SSHDExpiry bool
}

// ForNode computes the plan for a node with the given labels from every
// rendered grant, at time now.
func ForNode(nodeLabels map[string]string, rendered []nav1.RenderedNodeAccess, now time.Time, opts Options) Plan {
	plan := Plan{Accounts: map[string][]authorizedkeys.Section{}}
	set := labels.Set(nodeLabels)
	for i := range rendered {
		r := &rendered[i]
		g := Grant{Name: r.Spec.NodeAccessName, UID: r.Spec.NodeAccessUID, Generation: r.Spec.Generation, Hash: r.Spec.Hash}
		sections, err := grantSections(r, set, now, opts, &g, &plan)
		if err != nil {
			g.Err = err
		}
		for account, s := range sections {
			plan.Accounts[account] = append(plan.Accounts[account], s)
		}
		if g.Selected {
			for _, u := range r.Spec.Users {
				if _, ok := plan.Accounts[u.Name]; !ok {
					plan.Accounts[u.Name] = nil
				}
				g.Accounts = append(g.Accounts, u.Name)
			}
			sort.Strings(g.Accounts)
		}
		plan.Grants = append(plan.Grants, g)
	}
	sort.Slice(plan.Grants, func(i, j int) bool {
		if plan.Grants[i].Name != plan.Grants[j].Name {
			return plan.Grants[i].Name < plan.Grants[j].Name
		}
		return plan.Grants[i].UID < plan.Grants[j].UID
	})
	return plan
}

// grantSections returns the sections one grant contributes, per account, and
// records the grant's selection and the plan's next change.
func grantSections(r *nav1.RenderedNodeAccess, node labels.Set, now time.Time, o Options, g *Grant, plan *Plan) (map[string]authorizedkeys.Section, error) {
	selector, err := Selector(&r.Spec.NodeSelector)
	if err != nil {
		return nil, err
	}
	g.Selected = selector.Matches(node)
	if !g.Selected || r.Spec.Suspend {
		return nil, nil
	}
	if expired(r.Spec.ExpiresAt, now) {
		return nil, nil
	}
	sections := map[string]authorizedkeys.Section{}
	for _, u := range r.Spec.Users {
		s := authorizedkeys.Section{Owner: r.Spec.NodeAccessName, UID: r.Spec.NodeAccessUID, Keys: make([]authorizedkeys.Key, 0, len(u.Keys))}
		for _, k := range u.Keys {
			if expired(k.ExpiresAt, now) {
				continue
			}
			opts, err := RenderOptions(k.Options)
			if err != nil {
				g.Keys = 0
				return nil, fmt.Errorf("user %s key %s: %w", u.Name, k.Fingerprint, err)
			}
			if until := earlier(k.ExpiresAt, r.Spec.ExpiresAt); o.SSHDExpiry && until != nil {
				opts = joinOptions(opts, ExpiryOption(until.Time))
			}
			plan.noteExpiry(k.ExpiresAt, now)
			s.Keys = append(s.Keys, authorizedkeys.Key{Options: opts, Type: k.Type, Base64: k.Data, Comment: k.Comment})
		}
		if len(s.Keys) > 0 {
			sections[u.Name] = s
			g.Keys += len(s.Keys)
		}
	}
	plan.noteExpiry(r.Spec.ExpiresAt, now)
	g.Active = true
	return sections, nil
}

// ExpiryOption is the expiry-time option that ends a key at an instant. sshd
// compares the option with the current time in whole seconds and refuses
// only once the second it names has passed (valid_before < now), so the
// option names the last whole second before the instant: sshd refuses from
// the instant's second on, never later than the instant (up to a second
// early for an instant with a fraction). In UTC.
func ExpiryOption(at time.Time) string {
	last := at.UTC().Truncate(time.Second).Add(-time.Second)
	return `expiry-time="` + last.Format("20060102150405") + `Z"`
}

func joinOptions(a, b string) string {
	if a == "" {
		return b
	}
	return a + "," + b
}

// earlier returns the earlier of two instants; nil means never.
func earlier(a, b *metav1.Time) *metav1.Time {
	switch {
	case a == nil:
		return b
	case b == nil || a.Before(b):
		return a
	default:
		return b
	}
}

func expired(at *metav1.Time, now time.Time) bool {
	return at != nil && !now.Before(at.Time)
}

func (p *Plan) noteExpiry(at *metav1.Time, now time.Time) {
	if at == nil || !at.After(now) {
		return
	}
	if p.NextChange.IsZero() || at.Time.Before(p.NextChange) {
		p.NextChange = at.Time
	}
}

// Concerns reports whether a change to grant r can change the plan of a node
// with the given labels: true when r selects the node, or when its selector
// cannot be parsed (the node reports the error). A grant that neither
// selected a node before a change nor selects it after is no concern of
// the node's.
func Concerns(nodeLabels map[string]string, r *nav1.RenderedNodeAccess) bool {
	selector, err := Selector(&r.Spec.NodeSelector)
	return err != nil || selector.Matches(labels.Set(nodeLabels))
}

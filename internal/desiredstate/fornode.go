package desiredstate

import (
	"fmt"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

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
	var p Planner
	return p.ForNode(nodeLabels, rendered, now, opts)
}

// Planner is ForNode with a memory of each grant's parsed selector and key
// lines, so that a node's next plan computes again only the grants that
// changed (an agent's passes under churn). A grant is remembered by its
// object's UID and resource version, which the API server changes with
// every write, so within one list of objects they name one content; and,
// should a restored etcd give a resource version again, by the spec's
// hash and generation as well. One without a resource version is computed
// every time. Key lines are kept only for the grants a plan wrote. A plan
// from a Planner shares the remembered key lines: callers must not modify
// its sections. The zero Planner is ready; it is not safe for concurrent
// use.
type Planner struct {
	compiled map[types.UID]*compiled
}

// ForNode is the package's ForNode, from what the planner remembers. It
// forgets the grants no longer rendered.
func (p *Planner) ForNode(nodeLabels map[string]string, rendered []nav1.RenderedNodeAccess, now time.Time, opts Options) Plan {
	plan := Plan{Accounts: map[string][]authorizedkeys.Section{}, Grants: make([]Grant, 0, len(rendered))}
	set := labels.Set(nodeLabels)
	kept := make(map[types.UID]*compiled, len(rendered))
	for i := range rendered {
		r := &rendered[i]
		c := p.compiled[r.UID]
		if c == nil || r.ResourceVersion == "" || c.version != versionOf(r, opts) {
			c = compile(r, opts)
		}
		if r.ResourceVersion != "" {
			kept[r.UID] = c
		}
		g := Grant{Name: r.Spec.NodeAccessName, UID: r.Spec.NodeAccessUID, Generation: r.Spec.Generation, Hash: r.Spec.Hash}
		c.sections(r, set, now, &g, &plan)
		if g.Selected {
			g.Accounts = c.accounts
			for _, name := range c.accounts {
				if _, ok := plan.Accounts[name]; !ok {
					plan.Accounts[name] = nil
				}
			}
		}
		plan.Grants = append(plan.Grants, g)
	}
	p.compiled = kept
	sort.Slice(plan.Grants, func(i, j int) bool {
		if plan.Grants[i].Name != plan.Grants[j].Name {
			return plan.Grants[i].Name < plan.Grants[j].Name
		}
		return plan.Grants[i].UID < plan.Grants[j].UID
	})
	return plan
}

// compiled is what one version of a grant gives any node, at any time:
// its selector, and each account's key lines with the instants they
// expire. The key lines are built when a plan first needs them (the grant
// selects the node, and is neither suspended nor expired), so a grant that
// only passes through a node's watch costs its selector alone.
type compiled struct {
	version  version
	selector labels.Selector
	selErr   error
	// accounts are the accounts the grant names, sorted (Grant.Accounts).
	accounts []string
	// users are the key lines by account, once built.
	users []compiledUser
	built bool
}

type compiledUser struct {
	name string
	// keys are the account's key lines, in the grant's order; lines[i]
	// expires at expires[i] (nil: never), and errs[i] is set when its
	// options cannot be rendered. expires and errs are nil when no key
	// expires or fails, and keys is then the section's as it is.
	keys    []authorizedkeys.Key
	expires []*metav1.Time
	errs    []error
}

// version is what names the content a grant was compiled from, and the
// options it was compiled with.
type version struct {
	resourceVersion, hash string
	generation            int64
	sshdExpiry            bool
}

func versionOf(r *nav1.RenderedNodeAccess, o Options) version {
	return version{resourceVersion: r.ResourceVersion, hash: r.Spec.Hash, generation: r.Spec.Generation, sshdExpiry: o.SSHDExpiry}
}

func compile(r *nav1.RenderedNodeAccess, o Options) *compiled {
	c := &compiled{version: versionOf(r, o)}
	c.selector, c.selErr = Selector(&r.Spec.NodeSelector)
	for _, u := range r.Spec.Users {
		c.accounts = append(c.accounts, u.Name)
	}
	sort.Strings(c.accounts)
	return c
}

// build builds the key lines of r, the version c was compiled from.
func (c *compiled) build(r *nav1.RenderedNodeAccess) {
	c.built = true
	for _, u := range r.Spec.Users {
		cu := compiledUser{name: u.Name, keys: make([]authorizedkeys.Key, 0, len(u.Keys))}
		for i, k := range u.Keys {
			opts, err := RenderOptions(k.Options)
			if err != nil {
				if cu.errs == nil {
					cu.errs = make([]error, len(u.Keys))
				}
				cu.errs[i] = fmt.Errorf("user %s key %s: %w", u.Name, k.Fingerprint, err)
			}
			if until := earlier(k.ExpiresAt, r.Spec.ExpiresAt); c.version.sshdExpiry && until != nil {
				opts = joinOptions(opts, ExpiryOption(until.Time))
			}
			if k.ExpiresAt != nil {
				if cu.expires == nil {
					cu.expires = make([]*metav1.Time, len(u.Keys))
				}
				cu.expires[i] = k.ExpiresAt
			}
			cu.keys = append(cu.keys, authorizedkeys.Key{Options: opts, Type: k.Type, Base64: k.Data, Comment: k.Comment})
		}
		c.users = append(c.users, cu)
	}
}

// sections adds to the plan the sections the grant gives the node at now,
// and records in g the grant's selection, keys and error, and in the plan
// its next change.
func (c *compiled) sections(r *nav1.RenderedNodeAccess, node labels.Set, now time.Time, g *Grant, plan *Plan) {
	if c.selErr != nil {
		g.Err = c.selErr
		return
	}
	g.Selected = c.selector.Matches(node)
	if !g.Selected || r.Spec.Suspend || expired(r.Spec.ExpiresAt, now) {
		return
	}
	if !c.built {
		c.build(r)
	}
	type added struct {
		account string
		section authorizedkeys.Section
	}
	var out []added
	for _, u := range c.users {
		s := authorizedkeys.Section{Owner: r.Spec.NodeAccessName, UID: r.Spec.NodeAccessUID, Keys: u.keys}
		if u.expires != nil || u.errs != nil {
			s.Keys = make([]authorizedkeys.Key, 0, len(u.keys))
			for i, k := range u.keys {
				if u.expires != nil && expired(u.expires[i], now) {
					continue
				}
				if u.errs != nil && u.errs[i] != nil {
					g.Keys, g.Err = 0, u.errs[i]
					return
				}
				if u.expires != nil {
					plan.noteExpiry(u.expires[i], now)
				}
				s.Keys = append(s.Keys, k)
			}
		}
		if len(s.Keys) == 0 {
			continue
		}
		g.Keys += len(s.Keys)
		// A user listed twice: the last of its lists counts, as in a map.
		replaced := false
		for j := range out {
			if out[j].account == u.name {
				out[j].section, replaced = s, true
			}
		}
		if !replaced {
			out = append(out, added{u.name, s})
		}
	}
	for _, a := range out {
		plan.Accounts[a.account] = append(plan.Accounts[a.account], a.section)
	}
	plan.noteExpiry(r.Spec.ExpiresAt, now)
	g.Active = true
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

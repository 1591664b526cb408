// Package render computes, from one NodeAccess and the content of the
// Secrets and ConfigMaps it refers to, the desired state agents apply (a
// RenderedNodeAccessSpec) and everything the manager must say about it:
// refused keys, missing or forbidden sources, the next expiry. It is pure:
// no clients, the time is an argument, and the same inputs give the same
// output.
//
// A change that removes access always renders, whatever the size of the
// rest of the spec: suspended and expired grants render their accounts with
// no key, and a grant over the limits renders what the last accepted version
// and the new one both grant (Narrow), so a refused change never widens
// access and always narrows it.
package render

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
	"github.com/nodeaccess/nodeaccess-operator/internal/keypolicy"
)

// Limits on what one NodeAccess may render; beyond them the update is
// refused and agents get only what the last accepted version and the new
// one both grant.
const (
	// MaxKeys is the most keys one NodeAccess may grant, over all accounts.
	MaxKeys = 4096
	// MaxRenderedBytes bounds the rendered object, well under etcd's object limit.
	MaxRenderedBytes = 1 << 20
)

// SourceKind is the kind of a key source.
type SourceKind string

// Kinds of key sources.
const (
	SourceSecret    SourceKind = "secret"
	SourceConfigMap SourceKind = "configmap"
)

// SourceRef names one data key of a Secret or ConfigMap.
type SourceRef struct {
	Kind      SourceKind
	Namespace string
	Name      string
	Key       string
}

// String is how a source is named in status and events.
func (r SourceRef) String() string {
	return fmt.Sprintf("%s %s/%s key %s", r.Kind, r.Namespace, r.Name, r.Key)
}

// RefOf returns the reference a key source makes.
func RefOf(src nav1.KeySource) SourceRef {
	if src.SecretKeyRef != nil {
		return SourceRef{SourceSecret, src.SecretKeyRef.Namespace, src.SecretKeyRef.Name, src.SecretKeyRef.Key}
	}
	if src.ConfigMapKeyRef != nil {
		return SourceRef{SourceConfigMap, src.ConfigMapKeyRef.Namespace, src.ConfigMapKeyRef.Name, src.ConfigMapKeyRef.Key}
	}
	return SourceRef{}
}

// Sources lists every source a NodeAccess refers to, once each.
func Sources(na *nav1.NodeAccess) []SourceRef {
	seen := map[SourceRef]bool{}
	var refs []SourceRef
	for _, u := range na.Spec.Users {
		for _, src := range u.KeysFrom {
			if ref := RefOf(src); !seen[ref] {
				seen[ref] = true
				refs = append(refs, ref)
			}
		}
	}
	return refs
}

// Source is what the manager could read of one key source.
type Source struct {
	// Content is the data key's value.
	Content string
	// Forbidden is set when the manager may not read the source (a Secret in
	// a namespace that has not allowed it); Content is then empty.
	Forbidden bool
}

// Options are the manager's settings that shape rendering.
type Options struct {
	Policy    keypolicy.Policy
	AllowRoot bool
}

// Result is the rendering of one NodeAccess.
type Result struct {
	// Spec is the desired state for agents, hash included: what to write.
	// Suspended and expired grants render their accounts with no key; a
	// grant over the limits renders Narrow(last, desired).
	Spec nav1.RenderedNodeAccessSpec
	// Refused lists keys and accounts not granted, with reasons.
	Refused []nav1.KeyRefusal
	// Missing lists sources that do not exist (their keys are not granted).
	Missing []SourceRef
	// Forbidden lists sources the manager may not read (their keys are not granted).
	Forbidden []SourceRef
	// Keys counts the keys of the desired state, over all accounts.
	Keys int
	// NextExpiry is the earliest future expiry of a key or the grant, if any.
	NextExpiry *metav1.Time
	// Expired is true when the grant's expiresAt has passed.
	Expired bool
	// TooLarge is set when the grant is over the limits of one NodeAccess;
	// Spec is then narrowed.
	TooLarge error
	// Narrowed is set when Spec is not the desired state but what the last
	// accepted version and the desired one both grant. When there was no
	// last accepted version, Spec holds no key and need not be written.
	Narrowed bool
}

// NodeAccess renders na at time now. sources holds what could be read of
// every source (a missing entry means the source is missing); last is the
// rendered spec the agents hold now, nil when there is none.
func NodeAccess(na *nav1.NodeAccess, sources map[SourceRef]Source, last *nav1.RenderedNodeAccessSpec, opts Options, now time.Time) Result {
	res := Result{Spec: nav1.RenderedNodeAccessSpec{
		NodeAccessName: na.Name,
		NodeAccessUID:  string(na.UID),
		Generation:     na.Generation,
		NodeSelector:   *na.Spec.NodeSelector.DeepCopy(),
		Suspend:        na.Spec.Suspend,
		ExpiresAt:      na.Spec.ExpiresAt.DeepCopy(),
	}}
	res.Expired = na.Spec.ExpiresAt != nil && !now.Before(na.Spec.ExpiresAt.Time)
	res.noteExpiry(na.Spec.ExpiresAt, now)

	missing, forbidden := map[SourceRef]bool{}, map[SourceRef]bool{}
	for ui, u := range na.Spec.Users {
		if u.Name == "root" && !opts.AllowRoot {
			res.Refused = append(res.Refused, nav1.KeyRefusal{
				User: u.Name, Source: fmt.Sprintf("users[%d]", ui), Reason: nav1.UserRefusedReason,
				Message: "the account root is refused: the operator must be started with --allow-root-user to grant it",
			})
			continue
		}
		ru := nav1.RenderedUser{Name: u.Name}
		seen := map[string]bool{}
		add := func(k keypolicy.Key, comment string, expires *metav1.Time, keyOpts *nav1.KeyOptions) {
			if keyOpts == nil {
				keyOpts = u.Options
			}
			rk := nav1.RenderedKey{
				Type: k.Type, Data: k.Data, Comment: comment, Fingerprint: k.Fingerprint,
				ExpiresAt: expires.DeepCopy(), Options: keyOpts.DeepCopy(),
			}
			id := keyID(&rk)
			if seen[id] {
				return
			}
			seen[id] = true
			ru.Keys = append(ru.Keys, rk)
		}
		for ki, ak := range u.Keys {
			if ak.ExpiresAt != nil && !now.Before(ak.ExpiresAt.Time) {
				continue
			}
			k, err := opts.Policy.Parse(ak.Key)
			if err != nil {
				res.Refused = append(res.Refused, refusal(u.Name, fmt.Sprintf("keys[%d]", ki), err))
				continue
			}
			comment := k.Comment
			if ak.Comment != "" {
				comment = keypolicy.SanitizeComment(ak.Comment)
			}
			res.noteExpiry(ak.ExpiresAt, now)
			add(k, comment, ak.ExpiresAt, ak.Options)
		}
		for _, src := range u.KeysFrom {
			ref := RefOf(src)
			source, ok := sources[ref]
			switch {
			case !ok:
				missing[ref] = true
				continue
			case source.Forbidden:
				forbidden[ref] = true
				continue
			}
			keys, refusals := opts.Policy.ParseList(source.Content)
			for _, r := range refusals {
				res.Refused = append(res.Refused, nav1.KeyRefusal{
					User: u.Name, Source: fmt.Sprintf("%s line %d", ref, r.Line), Reason: r.Reason, Message: r.Message,
				})
			}
			for _, k := range keys {
				add(k, k.Comment, nil, src.Options)
			}
		}
		res.Keys += len(ru.Keys)
		res.Spec.Users = append(res.Spec.Users, ru)
	}
	for _, ref := range Sources(na) {
		switch {
		case missing[ref]:
			res.Missing = append(res.Missing, ref)
		case forbidden[ref]:
			res.Forbidden = append(res.Forbidden, ref)
		}
	}
	if len(res.Refused) > nav1.MaxRefusedKeys {
		res.Refused = res.Refused[:nav1.MaxRefusedKeys]
	}

	if na.Spec.Suspend || res.Expired {
		// Removing access always renders: the accounts, without their keys.
		for i := range res.Spec.Users {
			res.Spec.Users[i].Keys = nil
		}
		res.Keys = 0
	} else if res.TooLarge = tooLarge(&res); res.TooLarge != nil {
		res.NarrowTo(last)
		return res
	}
	hash, err := desiredstate.Hash(&res.Spec)
	if err != nil {
		// Encoding a spec built from typed fields cannot fail; if it did,
		// nothing is granted.
		res.TooLarge = err
		res.NarrowTo(nil)
		return res
	}
	res.Spec.Hash = hash
	return res
}

// Revoked is the rendered grant of a deleted NodeAccess while its keys are
// being revoked: suspended, with no key, for the nodes and accounts of last
// (what the agents hold now) and of the NodeAccess. Every node it selects
// proves the revocation by reporting its hash applied; a node that holds
// the grant's keys for any other reason lists the grant as not applied.
func Revoked(na *nav1.NodeAccess, last *nav1.RenderedNodeAccessSpec) nav1.RenderedNodeAccessSpec {
	spec := nav1.RenderedNodeAccessSpec{
		NodeAccessName: na.Name,
		NodeAccessUID:  string(na.UID),
		Generation:     na.Generation,
		NodeSelector:   *na.Spec.NodeSelector.DeepCopy(),
		Suspend:        true,
	}
	var names []string
	if last != nil {
		spec.NodeSelector = *last.NodeSelector.DeepCopy()
		for _, u := range last.Users {
			names = append(names, u.Name)
		}
	}
	for _, u := range na.Spec.Users {
		names = append(names, u.Name)
	}
	slices.Sort(names)
	for _, n := range slices.Compact(names) {
		spec.Users = append(spec.Users, nav1.RenderedUser{Name: n})
	}
	// A spec built from typed fields always encodes.
	spec.Hash, _ = desiredstate.Hash(&spec)
	return spec
}

// NarrowTo replaces Spec with what last and Spec both grant (Narrow), with
// its hash, and marks the result narrowed.
func (r *Result) NarrowTo(last *nav1.RenderedNodeAccessSpec) {
	r.Spec, r.Narrowed = Narrow(last, &r.Spec), true
	// A spec narrowed from typed fields always encodes.
	r.Spec.Hash, _ = desiredstate.Hash(&r.Spec)
}

// tooLarge says whether a rendering is over the limits of one NodeAccess.
func tooLarge(res *Result) error {
	if res.Keys > MaxKeys {
		return fmt.Errorf("the grant has %d keys; at most %d are allowed", res.Keys, MaxKeys)
	}
	data, err := json.Marshal(res.Spec)
	if err != nil {
		return fmt.Errorf("encoding the rendered grant: %w", err)
	}
	if len(data) > MaxRenderedBytes {
		return fmt.Errorf("the rendered grant is %d bytes; at most %d are allowed", len(data), MaxRenderedBytes)
	}
	return nil
}

// keyID identifies a key with its options: the same key with other options
// is another grant of access.
func keyID(k *nav1.RenderedKey) string {
	id, _ := json.Marshal([]any{k.Type, k.Data, k.Options})
	return string(id)
}

func refusal(user, source string, err error) nav1.KeyRefusal {
	r := nav1.KeyRefusal{User: user, Source: source, Reason: nav1.MalformedKeyReason, Message: "the key was refused"}
	var pr *keypolicy.Refusal
	if errors.As(err, &pr) {
		r.Reason, r.Message = pr.Reason, pr.Message
	}
	return r
}

func (r *Result) noteExpiry(at *metav1.Time, now time.Time) {
	if at == nil || !at.After(now) {
		return
	}
	if r.NextExpiry == nil || at.Before(r.NextExpiry) {
		r.NextExpiry = at.DeepCopy()
	}
}

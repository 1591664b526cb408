// Package render computes, from one NodeAccess and the content of the
// Secrets and ConfigMaps it refers to, the desired state agents apply (a
// RenderedNodeAccessSpec) and everything the manager must say about it:
// refused keys, missing sources, the next expiry. It is pure: no clients, the
// time is an argument, and the same inputs give the same output.
package render

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
	"github.com/nodeaccess/nodeaccess-operator/internal/keypolicy"
)

// Limits on what one NodeAccess may render; beyond them the whole update is
// refused and agents keep the last accepted state (never a partial grant).
const (
	// MaxKeys is the most keys one NodeAccess may grant, over all accounts.
	MaxKeys = 4096
	// MaxRenderedBytes bounds the rendered object, well under etcd's object limit.
	MaxRenderedBytes = 1 << 20
)

// Refusal reasons the renderer adds to the key policy's.
const (
	// ReasonUserRefused: the account may not be granted (root without permission).
	ReasonUserRefused = "UserRefused"
	// ReasonTooManyKeys: the grant is over MaxKeys or MaxRenderedBytes.
	ReasonTooManyKeys = "TooManyKeys"
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

// Options are the manager's settings that shape rendering.
type Options struct {
	Policy    keypolicy.Policy
	AllowRoot bool
}

// Result is the rendering of one NodeAccess.
type Result struct {
	// Spec is the desired state for agents, hash included. Suspended and
	// expired grants render no users.
	Spec nav1.RenderedNodeAccessSpec
	// Refused lists keys and accounts not granted, with reasons.
	Refused []nav1.KeyRefusal
	// Missing lists sources that do not exist (their keys are not granted).
	Missing []SourceRef
	// Keys counts the keys granted, over all accounts.
	Keys int
	// NextExpiry is the earliest future expiry of a key or the grant, if any.
	NextExpiry *metav1.Time
	// Expired is true when the grant's expiresAt has passed.
	Expired bool
	// TooLarge is set when the grant is over the limits; Spec is then empty
	// and must not be written.
	TooLarge error
}

// NodeAccess renders na at time now. sources holds the content of every
// source that exists (a missing entry means the source is missing).
func NodeAccess(na *nav1.NodeAccess, sources map[SourceRef]string, opts Options, now time.Time) Result {
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

	missing := map[SourceRef]bool{}
	for ui, u := range na.Spec.Users {
		if u.Name == "root" && !opts.AllowRoot {
			res.Refused = append(res.Refused, nav1.KeyRefusal{
				User: u.Name, Source: fmt.Sprintf("users[%d]", ui), Reason: ReasonUserRefused,
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
			id, _ := json.Marshal([]any{rk.Type, rk.Data, rk.Options})
			if seen[string(id)] {
				return
			}
			seen[string(id)] = true
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
			content, ok := sources[ref]
			if !ok {
				missing[ref] = true
				continue
			}
			keys, refusals := opts.Policy.ParseList(content)
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
		if len(ru.Keys) > 0 {
			res.Spec.Users = append(res.Spec.Users, ru)
		}
	}
	for _, ref := range Sources(na) {
		if missing[ref] {
			res.Missing = append(res.Missing, ref)
		}
	}
	if len(res.Refused) > nav1.MaxRefusedKeys {
		res.Refused = res.Refused[:nav1.MaxRefusedKeys]
	}

	if res.Keys > MaxKeys {
		res.TooLarge = fmt.Errorf("the grant has %d keys; at most %d are allowed", res.Keys, MaxKeys)
	}
	if na.Spec.Suspend || res.Expired {
		res.Spec.Users, res.Keys = nil, 0
	}
	if res.TooLarge == nil {
		if data, err := json.Marshal(res.Spec); err != nil || len(data) > MaxRenderedBytes {
			res.TooLarge = fmt.Errorf("the rendered grant is %d bytes; at most %d are allowed", len(data), MaxRenderedBytes)
		}
	}
	if res.TooLarge != nil {
		res.Spec.Users = nil
		return res
	}
	hash, err := desiredstate.Hash(&res.Spec)
	if err != nil {
		res.TooLarge = err
		return res
	}
	res.Spec.Hash = hash
	return res
}

func refusal(user, source string, err error) nav1.KeyRefusal {
	r := nav1.KeyRefusal{User: user, Source: source, Reason: keypolicy.ReasonMalformed, Message: err.Error()}
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

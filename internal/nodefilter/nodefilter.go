// Package nodefilter lets the API server, not the agent, decide which
// rendered grants an agent receives.
//
// A label selector on a watch can only AND requirements on the watched
// object's own labels, while a grant selects nodes by the nodes' labels. The
// two meet through a vocabulary: the node label keys that grants constrain
// to one exact value (matchLabels, or In with a single value). The manager
// labels every rendered grant, for each key of the vocabulary, with the
// value it requires (hashed: a node label value may be empty, a label key
// holds no '/') or with AnyValue when it does not constrain the key that
// way; agents watch, for each key, the objects labelled with their own
// node's value or AnyValue. Every grant that selects a node passes its
// agent's watch (the filter only over-delivers: keys constrained in other
// ways, hash collisions and keys beyond MaxKeys are left to the agent's own
// evaluation of the selector), and a grant for another pool does not.
//
// The vocabulary lives in the ConfigMap ConfigMapName of the operator's
// namespace. The manager publishes a vocabulary only once every rendered
// grant carries its labels, so no agent's watch ever misses a grant; grants
// written without the Marker label (by a manager that predates this
// package) reach every agent through a second watch, LegacySelector.
package nodefilter

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/validation"
)

const (
	// ConfigMapName is the ConfigMap, in the operator's namespace, that
	// holds the vocabulary.
	ConfigMapName = "nodeaccess-node-filter"
	// KeysField is the ConfigMap's data key: the vocabulary's node label
	// keys, one per line.
	KeysField = "labelKeys"
	// Marker labels every rendered grant written with the vocabulary's labels.
	Marker = "filter.nodeaccess.io/labelled"
	// MarkerValue is Marker's value.
	MarkerValue = "true"
	// keyPrefix is the prefix of the label of one vocabulary key.
	keyPrefix = "select.nodeaccess.io/"
	// AnyValue labels a grant that does not require one exact value of a key.
	AnyValue = "any"
	// MaxKeys bounds the vocabulary, and so an agent's selector; the keys
	// constrained by the most grants come first.
	MaxKeys = 16
)

// LabelKey is the rendered grant's label for the node label key nodeKey.
func LabelKey(nodeKey string) string {
	return keyPrefix + "k" + digest(nodeKey)
}

// LabelValue is the label value that stands for the node label value v.
func LabelValue(v string) string {
	return "v" + digest(v)
}

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:10])
}

// exact returns the one value sel requires of key, if it requires one.
func exact(sel *metav1.LabelSelector, key string) (string, bool) {
	if v, ok := sel.MatchLabels[key]; ok {
		return v, true
	}
	for _, e := range sel.MatchExpressions {
		if e.Key == key && e.Operator == metav1.LabelSelectorOpIn && len(e.Values) == 1 {
			return e.Values[0], true
		}
	}
	return "", false
}

// Vocabulary returns the node label keys worth filtering on for these
// selectors: those at least one selector requires one exact value of, the
// most used first (then by name), at most MaxKeys, sorted by name.
func Vocabulary(selectors []*metav1.LabelSelector) []string {
	uses := map[string]int{}
	for _, sel := range selectors {
		if sel == nil {
			continue
		}
		seen := map[string]bool{}
		for k := range sel.MatchLabels {
			seen[k] = true
		}
		for _, e := range sel.MatchExpressions {
			if e.Operator == metav1.LabelSelectorOpIn && len(e.Values) == 1 {
				seen[e.Key] = true
			}
		}
		for k := range seen {
			if len(validation.IsQualifiedName(k)) == 0 {
				uses[k]++
			}
		}
	}
	keys := slices.Collect(maps.Keys(uses))
	slices.SortFunc(keys, func(a, b string) int {
		if c := cmp.Compare(uses[b], uses[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	keys = keys[:min(len(keys), MaxKeys)]
	slices.Sort(keys)
	return keys
}

// Keep returns the vocabulary to publish when needed are the keys the
// selectors call for and published those agents filter by now: every
// needed key, then as many published ones as fit in MaxKeys. A key no
// selector uses any more costs only a label per grant, while withdrawing it
// would make every agent list its grants again; so keys are dropped only to
// make room.
func Keep(needed, published []string) []string {
	out := slices.Clone(needed)
	rest := slices.Clone(published)
	slices.Sort(rest)
	for _, k := range rest {
		if len(out) >= MaxKeys {
			break
		}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// Labels returns the labels a rendered grant of sel carries for the
// vocabulary keys: the Marker and one label per key.
func Labels(sel *metav1.LabelSelector, keys []string) map[string]string {
	out := map[string]string{Marker: MarkerValue}
	for _, k := range keys {
		out[LabelKey(k)] = AnyValue
		if sel == nil {
			continue
		}
		if v, ok := exact(sel, k); ok {
			out[LabelKey(k)] = LabelValue(v)
		}
	}
	return out
}

// Labelled reports whether have carries every label Labels(sel, keys) sets,
// with the same value.
func Labelled(have map[string]string, sel *metav1.LabelSelector, keys []string) bool {
	for k, v := range Labels(sel, keys) {
		if have[k] != v {
			return false
		}
	}
	return true
}

// Selector is the label selector of an agent's watch: the labelled grants
// that may select a node with nodeLabels, under the vocabulary keys.
func Selector(nodeLabels map[string]string, keys []string) labels.Selector {
	s := labels.NewSelector()
	s = s.Add(mustRequirement(Marker, selection.Equals, MarkerValue))
	for _, k := range keys {
		values := []string{AnyValue}
		if v, ok := nodeLabels[k]; ok {
			values = append(values, LabelValue(v))
		}
		s = s.Add(mustRequirement(LabelKey(k), selection.In, values...))
	}
	return s
}

// LegacySelector selects the grants written without the vocabulary's labels.
func LegacySelector() labels.Selector {
	return labels.NewSelector().Add(mustRequirement(Marker, selection.DoesNotExist))
}

func mustRequirement(key string, op selection.Operator, values ...string) labels.Requirement {
	r, err := labels.NewRequirement(key, op, values)
	if err != nil {
		panic(err) // keys and values are built here, always valid
	}
	return *r
}

// ParseKeys reads the vocabulary from the ConfigMap's KeysField: one key per
// line; anything that is not a valid label key is dropped, and at most
// MaxKeys are kept.
func ParseKeys(field string) []string {
	var keys []string
	for line := range strings.Lines(field) {
		k := strings.TrimSpace(line)
		if k == "" || len(validation.IsQualifiedName(k)) != 0 || slices.Contains(keys, k) {
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys[:min(len(keys), MaxKeys)]
}

// FormatKeys is the KeysField of a vocabulary.
func FormatKeys(keys []string) string {
	if len(keys) == 0 {
		return ""
	}
	return strings.Join(keys, "\n") + "\n"
}

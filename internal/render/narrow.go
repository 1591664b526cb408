package render

import (
	"slices"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// Narrow returns what both last (the rendered spec the agents hold) and
// desired grant: the nodes both select (their selectors ANDed), suspended if
// either is, the earlier expiry, and for each account of desired only the
// keys last already grants with the same options, each with the earlier of
// its two expiries. It never grants anything last does not, and it removes
// everything desired removes, so an update that cannot be accepted whole
// still takes access away. With last nil it grants nothing. Identity (name,
// UID, generation) is desired's; the hash is left for the caller.
func Narrow(last, desired *nav1.RenderedNodeAccessSpec) nav1.RenderedNodeAccessSpec {
	out := nav1.RenderedNodeAccessSpec{
		NodeAccessName: desired.NodeAccessName,
		NodeAccessUID:  desired.NodeAccessUID,
		Generation:     desired.Generation,
		NodeSelector:   *desired.NodeSelector.DeepCopy(),
		Suspend:        desired.Suspend,
		ExpiresAt:      desired.ExpiresAt.DeepCopy(),
	}
	lastKeys := map[string]map[string]nav1.RenderedKey{}
	if last != nil {
		out.NodeSelector = andSelectors(&last.NodeSelector, &desired.NodeSelector)
		out.Suspend = last.Suspend || desired.Suspend
		out.ExpiresAt = earlier(last.ExpiresAt, desired.ExpiresAt)
		for _, u := range last.Users {
			keys := map[string]nav1.RenderedKey{}
			for i := range u.Keys {
				keys[keyID(&u.Keys[i])] = u.Keys[i]
			}
			lastKeys[u.Name] = keys
		}
	}
	for _, u := range desired.Users {
		ru := nav1.RenderedUser{Name: u.Name}
		for i := range u.Keys {
			was, ok := lastKeys[u.Name][keyID(&u.Keys[i])]
			if !ok {
				continue
			}
			k := *u.Keys[i].DeepCopy()
			k.ExpiresAt = earlier(was.ExpiresAt, k.ExpiresAt)
			ru.Keys = append(ru.Keys, k)
		}
		out.Users = append(out.Users, ru)
	}
	return out
}

// earlier returns the earlier of two expiries; nil means never.
func earlier(a, b *metav1.Time) *metav1.Time {
	switch {
	case a == nil:
		return b.DeepCopy()
	case b == nil || a.Before(b):
		return a.DeepCopy()
	default:
		return b.DeepCopy()
	}
}

// andSelectors returns a selector matching exactly the labels both match.
// Equal label requirements on the same key are written once; different
// ones both become expressions, which no label set can satisfy together.
func andSelectors(a, b *metav1.LabelSelector) metav1.LabelSelector {
	if equality.Semantic.DeepEqual(a, b) {
		return *a.DeepCopy()
	}
	out := metav1.LabelSelector{}
	for _, s := range []*metav1.LabelSelector{a, b} {
		for k, v := range s.MatchLabels {
			if cur, ok := out.MatchLabels[k]; ok && cur != v {
				out.MatchExpressions = append(out.MatchExpressions, metav1.LabelSelectorRequirement{
					Key: k, Operator: metav1.LabelSelectorOpIn, Values: []string{v},
				})
				continue
			}
			if out.MatchLabels == nil {
				out.MatchLabels = map[string]string{}
			}
			out.MatchLabels[k] = v
		}
	}
	for _, s := range []*metav1.LabelSelector{a, b} {
		for _, e := range s.MatchExpressions {
			if !slices.ContainsFunc(out.MatchExpressions, func(x metav1.LabelSelectorRequirement) bool {
				return equality.Semantic.DeepEqual(x, e)
			}) {
				out.MatchExpressions = append(out.MatchExpressions, *e.DeepCopy())
			}
		}
	}
	return out
}

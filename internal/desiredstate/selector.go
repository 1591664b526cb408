package desiredstate

import (
	"fmt"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Selector parses a NodeAccess's nodeSelector into the selector the
// manager, the agents and the kubectl plugin apply to Node labels: the one
// definition of which nodes a grant selects.
func Selector(sel *metav1.LabelSelector) (labels.Selector, error) {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return nil, fmt.Errorf("nodeSelector is invalid: %w", err)
	}
	return s, nil
}

// SelectedNodes returns the names, sorted, of the nodes (name to labels)
// that sel selects.
func SelectedNodes(sel *metav1.LabelSelector, nodes map[string]map[string]string) ([]string, error) {
	s, err := Selector(sel)
	if err != nil {
		return nil, err
	}
	var names []string
	for name, l := range nodes {
		if s.Matches(labels.Set(l)) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names, nil
}

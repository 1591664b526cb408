package nodefilter

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// TestFilterNeverMissesASelectedNode is the property the design rests on:
// whenever a grant's selector selects a node, the node's watch selector
// selects the grant's labels, whatever the vocabulary (the grant's keys,
// fewer, other ones) and whatever the node's labels.
func TestFilterNeverMissesASelectedNode(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := []string{"pool", "zone", "example.com/team", "kubernetes.io/hostname"}
	values := []string{"", "a", "b", "c"}
	randomLabels := func() map[string]string {
		l := map[string]string{}
		for _, k := range keys {
			if rng.IntN(3) > 0 {
				l[k] = values[rng.IntN(len(values))]
			}
		}
		return l
	}
	ops := []metav1.LabelSelectorOperator{metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn, metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist}
	randomSelector := func() *metav1.LabelSelector {
		sel := &metav1.LabelSelector{MatchLabels: map[string]string{}}
		for _, k := range keys {
			switch rng.IntN(4) {
			case 0:
				sel.MatchLabels[k] = values[rng.IntN(len(values))]
			case 1:
				e := metav1.LabelSelectorRequirement{Key: k, Operator: ops[rng.IntN(len(ops))]}
				if e.Operator == metav1.LabelSelectorOpIn || e.Operator == metav1.LabelSelectorOpNotIn {
					for range 1 + rng.IntN(2) {
						e.Values = append(e.Values, values[rng.IntN(len(values))])
					}
				}
				sel.MatchExpressions = append(sel.MatchExpressions, e)
			}
		}
		return sel
	}
	selected, filtered := 0, 0
	for i := range 20000 {
		sel := randomSelector()
		vocab := Vocabulary([]*metav1.LabelSelector{sel, randomSelector()})
		if i%3 == 0 {
			vocab = vocab[:len(vocab)/2]
		}
		objLabels := labels.Set(Labels(sel, vocab))
		node := randomLabels()
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			t.Fatal(err)
		}
		delivered := Selector(node, vocab).Matches(objLabels)
		if s.Matches(labels.Set(node)) {
			selected++
			if !delivered {
				t.Fatalf("selector %v selects node %v, but the watch selector %v misses labels %v", sel, node, Selector(node, vocab), objLabels)
			}
		} else if !delivered {
			filtered++
		}
		if LegacySelector().Matches(objLabels) {
			t.Fatalf("labelled grant %v also matches the legacy selector", objLabels)
		}
	}
	// The property is not vacuous, and the filter does filter.
	if selected < 500 || filtered < 5000 {
		t.Fatalf("only %d selected and %d filtered out of 20000: the cases do not exercise the filter", selected, filtered)
	}
}

func TestPoolsReachOnlyTheirNodes(t *testing.T) {
	poolA := &metav1.LabelSelector{MatchLabels: map[string]string{"pool": "a"}}
	poolB := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pool", Operator: metav1.LabelSelectorOpIn, Values: []string{"b"}}}}
	everyNode := &metav1.LabelSelector{}
	notA := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pool", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"a"}}}}
	vocab := Vocabulary([]*metav1.LabelSelector{poolA, poolB, everyNode, notA})
	if !slices.Equal(vocab, []string{"pool"}) {
		t.Fatalf("vocabulary %v, want [pool]", vocab)
	}
	nodeA := map[string]string{"pool": "a", "zone": "z"}
	nodeNone := map[string]string{"zone": "z"}
	for _, tc := range []struct {
		sel  *metav1.LabelSelector
		node map[string]string
		want bool
	}{
		{poolA, nodeA, true},
		{poolB, nodeA, false},
		{everyNode, nodeA, true},
		{notA, nodeA, true}, // over-delivered: NotIn is left to the agent
		{poolA, nodeNone, false},
		{everyNode, nodeNone, true},
	} {
		if got := Selector(tc.node, vocab).Matches(labels.Set(Labels(tc.sel, vocab))); got != tc.want {
			t.Errorf("grant %v to node %v: delivered %v, want %v", tc.sel, tc.node, got, tc.want)
		}
	}
}

func TestVocabularyIsBoundedAndRanked(t *testing.T) {
	var sels []*metav1.LabelSelector
	for i := range MaxKeys + 4 {
		for range i + 1 {
			sels = append(sels, &metav1.LabelSelector{MatchLabels: map[string]string{fmt.Sprintf("key-%02d", i): "x"}})
		}
	}
	sels = append(sels, &metav1.LabelSelector{MatchLabels: map[string]string{"Not A Key!": "x"}}, nil)
	vocab := Vocabulary(sels)
	if len(vocab) != MaxKeys || vocab[0] != "key-04" || vocab[len(vocab)-1] != "key-19" {
		t.Fatalf("vocabulary %v: want the %d most used keys, key-04 to key-19", vocab, MaxKeys)
	}
}

func TestParseKeysOnlyNarrowsTheFilter(t *testing.T) {
	got := ParseKeys("zone\n\npool\nnot a key\npool\n  example.com/team  \n")
	if want := []string{"example.com/team", "pool", "zone"}; !slices.Equal(got, want) {
		t.Fatalf("ParseKeys = %v, want %v", got, want)
	}
	if got := ParseKeys(FormatKeys([]string{"a", "b"})); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("round trip = %v", got)
	}
}

func TestKeepDropsKeysOnlyForRoom(t *testing.T) {
	if got := Keep([]string{"pool"}, []string{"zone", "old"}); !slices.Equal(got, []string{"old", "pool", "zone"}) {
		t.Fatalf("Keep = %v: published keys stay while they fit", got)
	}
	var many []string
	for i := range MaxKeys {
		many = append(many, fmt.Sprintf("k%02d", i))
	}
	got := Keep([]string{"new"}, many)
	if len(got) != MaxKeys || !slices.Contains(got, "new") || slices.Contains(got, "k15") {
		t.Fatalf("Keep = %v: the needed key takes the room of the last published one", got)
	}
}

package agent

import (
	"os/exec"
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestAgentLinksNoCoreAPITypes keeps k8s.io/api out of the agent's
// binary: its generated code for every core kind was a fifth of the
// binary's text and read-only data, resident on every node (coretypes.go).
func TestAgentLinksNoCoreAPITypes(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../../cmd/agent").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 100 {
		t.Fatalf("go list printed %d packages for the agent; want its whole dependency list", len(deps))
	}
	for _, dep := range deps {
		if dep == "k8s.io/api" || strings.HasPrefix(dep, "k8s.io/api/") {
			t.Errorf("the agent links %s", dep)
		}
	}
}

// The informer's store hands out the objects the agent reads; a copy of
// one must share nothing with it, down to the labels and the data.
func TestCoreTypeCopiesShareNothing(t *testing.T) {
	nodes := &nodeMetaList{Items: []nodeMeta{{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{"pool": "a"}}}}}
	cms := &configMapList{Items: []configMap{{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Data: map[string]string{"keys": "pool"}}}}
	nodeCopy := nodes.DeepCopyObject().(*nodeMetaList)
	cmCopy := cms.DeepCopyObject().(*configMapList)
	if !reflect.DeepEqual(nodeCopy, nodes) || !reflect.DeepEqual(cmCopy, cms) {
		t.Fatalf("copies differ: %#v %#v", nodeCopy, cmCopy)
	}
	nodeCopy.Items[0].Labels["pool"] = "b"
	cmCopy.Items[0].Data["keys"] = "zone"
	if nodes.Items[0].Labels["pool"] != "a" || cms.Items[0].Data["keys"] != "pool" {
		t.Fatalf("a copy shares its maps with the original: %v %v", nodes.Items[0].Labels, cms.Items[0].Data)
	}
	if (&nodeMetaList{}).DeepCopyObject().(*nodeMetaList).Items != nil {
		t.Fatal("a list without items copied into one with an empty slice")
	}
}

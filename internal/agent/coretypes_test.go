package agent

import (
	"os/exec"
	"strings"
	"testing"
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

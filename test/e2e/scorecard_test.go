package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/operator-framework/api/pkg/apis/scorecard/v1alpha3"
	"github.com/operator-framework/api/pkg/manifests"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// The operator's own scorecard test passes on a cluster whose nodes the
// alm-examples select (here: a node per example, labelled as its selector
// asks, with the example's accounts and a running agent), and fails, saying
// why, for an example the operator refuses.
func TestScorecardExamplesBecomeReady(t *testing.T) {
	root := testenv.RepoRoot()
	b, err := manifests.GetBundleFromDir(filepath.Join(root, "bundle"))
	must(t, err)
	var examples []nav1.NodeAccess
	must(t, json.Unmarshal([]byte(b.CSV.Annotations["alm-examples"]), &examples))
	ctx := context.Background()
	n := 0
	for _, ex := range examples {
		if ex.Kind != "NodeAccess" {
			continue
		}
		n++
		node := fmt.Sprintf("scorecard-%d", n)
		labels := map[string]string{"kubernetes.io/os": "linux", "kubernetes.io/hostname": node}
		for k, v := range ex.Spec.NodeSelector.MatchLabels {
			labels[k] = v
		}
		for _, e := range ex.Spec.NodeSelector.MatchExpressions {
			switch e.Operator {
			case metav1.LabelSelectorOpIn:
				labels[e.Key] = e.Values[0]
			case metav1.LabelSelectorOpExists:
				labels[e.Key] = "yes"
			}
		}
		obj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name: node, Labels: labels, Annotations: map[string]string{localcluster.KwokAnnotation: "fake"},
		}}
		must(t, k8s.Create(ctx, obj))
		t.Cleanup(func() { _ = k8s.Delete(ctx, obj) })
		var accounts []testenv.Account
		for i, u := range ex.Spec.Users {
			accounts = append(accounts, testenv.Account{Name: u.Name, ID: 3000 + i})
		}
		hosts[node] = testenv.NewHost(t, accounts...)
		agent, err := startAgent(node)
		must(t, err)
		t.Cleanup(func() { agent.Stop(syscall.SIGTERM) })
	}
	if n == 0 {
		t.Fatal("the CSV has no NodeAccess example")
	}

	status, out := scorecard(t, filepath.Join(root, "bundle"))
	if len(status.Results) != 1 || status.Results[0].State != v1alpha3.PassState {
		t.Fatalf("scorecard test did not pass:\n%s", out)
	}
	if got := strings.Count(status.Results[0].Log, "then revoked"); got != n {
		t.Fatalf("%d of %d examples Ready and revoked:\n%s", got, n, out)
	}
	t.Logf("scorecard: %s", strings.TrimSpace(status.Results[0].Log))

	// The same bundle with an example granting root: the operator refuses it,
	// and the test fails with the reason.
	bad := t.TempDir()
	must(t, os.CopyFS(bad, os.DirFS(filepath.Join(root, "bundle"))))
	csvPath := filepath.Join(bad, "manifests", "nodeaccess-operator.clusterserviceversion.yaml")
	data, err := os.ReadFile(csvPath)
	must(t, err)
	must(t, os.WriteFile(csvPath, bytes.Replace(data, []byte(`"name": "`+examples[0].Spec.Users[0].Name+`"`), []byte(`"name": "root"`), 1), 0o644))
	status, out = scorecard(t, bad, "--timeout=5s")
	if len(status.Results) != 1 || status.Results[0].State != v1alpha3.FailState || !strings.Contains(out, nav1.UserRefusedReason) {
		t.Fatalf("scorecard test on a refused example: want fail naming %s, got:\n%s", nav1.UserRefusedReason, out)
	}
}

// scorecard runs the operator's scorecard test against the cluster.
func scorecard(t *testing.T, bundleDir string, args ...string) (v1alpha3.TestStatus, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "nodeaccess-scorecard"),
		append(append([]string{"--bundle=" + bundleDir, "--kubeconfig=" + cluster.Kubeconfig}, args...), "examples-become-ready")...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nodeaccess-scorecard: %v\n%s%s", err, out, stderr.String())
	}
	var status v1alpha3.TestStatus
	if err := json.Unmarshal(out, &status); err != nil {
		t.Fatalf("nodeaccess-scorecard printed no TestStatus: %v\n%s", err, out)
	}
	return status, string(out)
}

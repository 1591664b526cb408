package realnode

import (
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// On the upgraded install, the agent's own credentials (a token for its
// service account bound to the running agent pod, as the kubelet projects
// it) cannot write the report of another node: the ValidatingAdmissionPolicy
// the new manager put in place refuses it with its message, while the same
// update of its own node's report is allowed.
func TestAgentTokenWritesOnlyItsOwnNodesReport(t *testing.T) {
	ctx := context.Background()
	pod := agentPod(t)
	agent, err := testenv.PodTokenClient(ctx, cluster.Config, k8s.Scheme(), pod)
	if err != nil {
		t.Fatal(err)
	}
	const otherNode = "realnode-other"
	other := &nav1.NodeAccessReport{ObjectMeta: metav1.ObjectMeta{Name: otherNode}, Spec: nav1.NodeAccessReportSpec{NodeName: otherNode}}
	if err := k8s.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k8s.Delete(ctx, other); err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
	})
	// The same change on both reports: a heartbeat, as the agent writes.
	heartbeat := func(c client.Client, name string) error {
		rep := &nav1.NodeAccessReport{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: name}, rep); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(rep.DeepCopy())
		rep.Status.HeartbeatTime = &metav1.Time{Time: time.Now().Truncate(time.Second)}
		return c.Status().Patch(ctx, rep, patch)
	}
	err = heartbeat(agent, otherNode)
	want := "an agent may write only the report of its own node (" + nodeName + ")"
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), want) {
		t.Errorf("the agent's token writing %s's report: %v; want refused with %q", otherNode, err, want)
	}
	if err := heartbeat(agent, nodeName); err != nil {
		t.Errorf("the agent's token writing its own node's report: %v", err)
	}
	// The refusal is the agent's alone: the administrator may write it.
	if err := heartbeat(k8s, otherNode); err != nil {
		t.Errorf("the administrator writing %s's report: %v", otherNode, err)
	}
}

package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	operatorsv2 "github.com/operator-framework/api/pkg/operators/v2"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/controllers"
	"github.com/nodeaccess/nodeaccess-operator/internal/agentdaemonset"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// operatorCondition is the OperatorCondition OLM would create for the CSV.
const operatorCondition = "nodeaccess-operator.v0.1.0"

// upgradeableIs waits for the manager's Upgradeable condition in the
// OperatorCondition's spec, where OLM reads it.
func upgradeableIs(status metav1.ConditionStatus, reason string) func() error {
	return func() error {
		oc := &operatorsv2.OperatorCondition{}
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: operatorCondition}, oc); err != nil {
			return err
		}
		c := meta.FindStatusCondition(oc.Spec.Conditions, operatorsv2.Upgradeable)
		if c == nil || c.Status != status || c.Reason != reason {
			return fmt.Errorf("Upgradeable is %+v, want %s/%s", c, status, reason)
		}
		return nil
	}
}

// setAgentRollout plays the DaemonSet controller (envtest runs none): updated
// of desired nodes run the current template.
func setAgentRollout(t *testing.T, updated, desired int32) {
	t.Helper()
	ctx := context.Background()
	testenv.Eventually(t, timeout, "DaemonSet status written", func() error {
		ds := &appsv1.DaemonSet{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: namespace, Name: agentdaemonset.Name}, ds); err != nil {
			return err
		}
		ds.Status.ObservedGeneration = ds.Generation
		ds.Status.DesiredNumberScheduled, ds.Status.CurrentNumberScheduled = desired, desired
		ds.Status.UpdatedNumberScheduled, ds.Status.NumberReady, ds.Status.NumberAvailable = updated, desired, desired
		return k8sClient.Status().Update(ctx, ds)
	})
}

// OLM must not replace the operator while it is revoking keys or rolling out
// agents: the manager says so in its OperatorCondition, and says when it is over.
func TestUpgradeableWhileNothingIsInFlight(t *testing.T) {
	ctx := context.Background()
	setAgentRollout(t, 3, 3)
	testenv.Eventually(t, timeout, "Upgradeable", upgradeableIs(metav1.ConditionTrue, controllers.UpgradeableReason))

	// Mid-rollout: held.
	setAgentRollout(t, 1, 3)
	testenv.Eventually(t, timeout, "held during rollout", upgradeableIs(metav1.ConditionFalse, controllers.AgentRolloutInProgressReason))
	setAgentRollout(t, 3, 3)
	testenv.Eventually(t, timeout, "Upgradeable after rollout", upgradeableIs(metav1.ConditionTrue, controllers.UpgradeableReason))

	// A revocation that a node has not confirmed yet: held until it has.
	nodes := startNodes(t, "upg", "upg")
	k := newKey(t, "k")
	create(t, nodeAccess("upg", "upg", k.line))
	testenv.Eventually(t, timeout, "key on node", holds(nodes[0], k.blob))
	testenv.Eventually(t, timeout, "node reported", statusIs("upg", 1, 1, 1, nav1.AllNodesInSyncReason))
	nodes[0].agent.Stop(t)
	must(t, k8sClient.Delete(ctx, &nav1.NodeAccess{ObjectMeta: metav1.ObjectMeta{Name: "upg"}}))
	testenv.Eventually(t, timeout, "held during revocation", upgradeableIs(metav1.ConditionFalse, controllers.RevocationInProgressReason))
	time.Sleep(time.Second)
	must(t, upgradeableIs(metav1.ConditionFalse, controllers.RevocationInProgressReason)())

	nodes[0].agent = env.StartAgent(t, nodes[0].name, namespace, nodes[0].host, 2*time.Second)
	testenv.Eventually(t, timeout, "revoked", holds(nodes[0]))
	testenv.Eventually(t, timeout, "NodeAccess gone", func() error {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: "upg"}, &nav1.NodeAccess{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
	testenv.Eventually(t, timeout, "Upgradeable after revocation", upgradeableIs(metav1.ConditionTrue, controllers.UpgradeableReason))
}

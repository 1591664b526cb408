package realnode

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
)

// The node registered with its kubelet's own identity, is Ready and
// schedulable, and the API server knows it at its InternalIP.
func TestNodeIsReady(t *testing.T) {
	n, err := clientset.CoreV1().Nodes().Get(context.Background(), nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready := false
	for _, c := range n.Status.Conditions {
		ready = ready || (c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue)
	}
	if !ready {
		t.Errorf("node conditions %v", n.Status.Conditions)
	}
	for _, taint := range n.Spec.Taints {
		t.Errorf("node still tainted %v", taint)
	}
	internal := ""
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			internal = a.Address
		}
	}
	if internal != localcluster.DefaultNodeIP {
		t.Errorf("InternalIP %q, want %s", internal, localcluster.DefaultNodeIP)
	}
	if v := n.Status.NodeInfo.KubeletVersion; v != localcluster.Version {
		t.Errorf("kubelet version %s, want %s", v, localcluster.Version)
	}
	if !strings.HasPrefix(n.Status.NodeInfo.ContainerRuntimeVersion, "containerd://") {
		t.Errorf("runtime %s", n.Status.NodeInfo.ContainerRuntimeVersion)
	}
	if n.Labels["pool"] != "real" || n.Labels[corev1.LabelOSStable] != "linux" {
		t.Errorf("labels %v", n.Labels)
	}
}

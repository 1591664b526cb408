package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// TestLocalClusterRunsDaemonSetsOnFakeNodes proves the local cluster the
// e2e suite and the demo use: the DaemonSet controller, the scheduler and
// kwok together put a Ready pod on every fake node.
func TestLocalClusterRunsDaemonSetsOnFakeNodes(t *testing.T) {
	ctx := context.Background()
	clientset, err := kubernetes.NewForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "probe"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: "default"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.com/probe"}}},
			},
		},
	}
	if _, err := clientset.AppsV1().DaemonSets("default").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, "a Ready pod on every node", func() error {
		got, err := clientset.AppsV1().DaemonSets("default").Get(ctx, "probe", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got.Status.NumberReady != int32(len(nodes)) {
			return fmt.Errorf("%d of %d ready", got.Status.NumberReady, len(nodes))
		}
		return nil
	})
}

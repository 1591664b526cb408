package realnode

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// containerd and the kubelet restart as on a real node: a running pod
// keeps its container (same ID, no restart), and once both are back a new
// pod starts.
func TestRestartingContainerdAndTheKubeletKeepsPodsRunning(t *testing.T) {
	ctx := context.Background()
	steady := startPausePod(t, "steady")
	node.StopContainerd()
	if err := node.StartContainerd(ctx); err != nil {
		t.Fatal(err)
	}
	node.StopKubelet()
	if err := node.StartKubelet(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, "the kubelet healthy again", func() error {
		resp, err := http.Get("http://127.0.0.1:10248/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
	startPausePod(t, "after-restart")
	got, err := clientset.CoreV1().Pods("default").Get(ctx, "steady", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before, after := steady.Status.ContainerStatuses[0], got.Status.ContainerStatuses[0]
	if after.ContainerID != before.ContainerID || after.RestartCount != 0 || after.State.Running == nil {
		t.Errorf("the running pod's container changed: %s (restarts %d, %+v), was %s", after.ContainerID, after.RestartCount, after.State, before.ContainerID)
	}
}

// startPausePod runs a pod of the pause image on the node, waits until it
// runs, and deletes it when the test ends.
func startPausePod(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "pause", Image: pauseRef, ImagePullPolicy: corev1.PullNever}}},
	}
	if _, err := clientset.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = clientset.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{}) })
	var got *corev1.Pod
	testenv.Eventually(t, 60*time.Second, "pod "+name+" running", func() error {
		var err error
		if got, err = clientset.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{}); err != nil {
			return err
		}
		if got.Status.Phase != corev1.PodRunning || len(got.Status.ContainerStatuses) == 0 || !got.Status.ContainerStatuses[0].Ready {
			return fmt.Errorf("phase %s", got.Status.Phase)
		}
		return nil
	})
	return got
}

package realnode

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/agentdaemonset"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
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

// A pod from an image archive reaches the API server as any pod does: at
// the kubernetes Service's ClusterIP (kube-proxy's rules take it to the API
// server on the node IP), and its service-account token authenticates it.
// Its logs come back through the kubelet, as `kubectl logs` reads them.
func TestPodReachesTheAPIServerThroughTheKubernetesService(t *testing.T) {
	ctx := context.Background()
	testenv.Eventually(t, 60*time.Second, "the default service account", func() error {
		_, err := clientset.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: "default"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "probe", Image: probeRef, ImagePullPolicy: corev1.PullNever,
				SecurityContext: &corev1.SecurityContext{
					RunAsNonRoot: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
	if _, err := clientset.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got *corev1.Pod
	testenv.Eventually(t, 90*time.Second, "the probe pod to finish", func() error {
		var err error
		if got, err = clientset.CoreV1().Pods("default").Get(ctx, "probe", metav1.GetOptions{}); err != nil {
			return err
		}
		if got.Status.Phase != corev1.PodSucceeded && got.Status.Phase != corev1.PodFailed {
			return fmt.Errorf("phase %s", got.Status.Phase)
		}
		return nil
	})
	logs, err := clientset.CoreV1().Pods("default").GetLogs("probe", &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		t.Fatalf("reading the pod's logs through the kubelet: %v", err)
	}
	if got.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("probe %s: %s", got.Status.Phase, logs)
	}
	want := "service=" + localcluster.KubernetesServiceIP + ":443 user=system:serviceaccount:default:default"
	if strings.TrimSpace(string(logs)) != want {
		t.Errorf("probe said %q, want %q", logs, want)
	}
	if got.Spec.NodeName != nodeName || got.Status.PodIP == "" || !strings.HasPrefix(got.Status.PodIP, "198.18.0.") {
		t.Errorf("pod on %q at %q", got.Spec.NodeName, got.Status.PodIP)
	}
	if err := clientset.CoreV1().Pods("default").Delete(ctx, "probe", metav1.DeleteOptions{}); err != nil {
		t.Error(err)
	}
}

// The agent DaemonSet, exactly as the manager renders it, runs on the real
// node from the operator's image archive: it becomes Ready (its informers
// synced through the kubernetes Service), writes its node's report with its
// pod-bound token, and its process has only the capabilities the pod spec
// grants, no privilege escalation and the runtime's default seccomp filter.
func TestAgentDaemonSetRunsOnTheRealNode(t *testing.T) {
	ctx := context.Background()
	ds := agentdaemonset.DaemonSet(agentdaemonset.Options{Namespace: namespace, Image: operatorRef, MaxUnavailable: intstr.FromInt32(1)})
	if err := k8s.Create(ctx, ds); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, ds) })
	testenv.Eventually(t, 120*time.Second, "the agent pod Ready on the real node", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(ds), ds); err != nil {
			return err
		}
		if ds.Status.NumberReady != 1 {
			pods, _ := clientset.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
			var states []string
			for _, p := range pods.Items {
				for _, cs := range p.Status.ContainerStatuses {
					states = append(states, fmt.Sprintf("%s %+v", p.Name, cs.State))
				}
			}
			return fmt.Errorf("%d of %d ready; %v", ds.Status.NumberReady, ds.Status.DesiredNumberScheduled, states)
		}
		return nil
	})
	testenv.Eventually(t, 60*time.Second, "the node's report", func() error {
		return k8s.Get(ctx, client.ObjectKey{Name: nodeName}, &nav1.NodeAccessReport{})
	})
	status := agentProcessStatus(t)
	for field, want := range map[string]string{
		// CHOWN (0), DAC_OVERRIDE (1), FOWNER (3).
		"CapEff": "000000000000000b", "CapPrm": "000000000000000b", "CapBnd": "000000000000000b",
		"NoNewPrivs": "1", "Seccomp": "2", "Uid": "0\t0\t0\t0",
	} {
		if status[field] != want {
			t.Errorf("agent process %s = %q, want %q", field, status[field], want)
		}
	}
}

// agentProcessStatus finds the agent's process (the namespaces' PID
// namespace holds the containers') and returns its /proc status fields.
func agentProcessStatus(t *testing.T) map[string]string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.HasPrefix(cmdline, []byte("/agent\x00--host-root=")) {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		fields := map[string]string{}
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				fields[k] = strings.TrimSpace(v)
			}
		}
		return fields
	}
	t.Fatal("no agent process on the node")
	return nil
}

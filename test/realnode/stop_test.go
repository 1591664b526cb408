package realnode

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// Stopping the node, with a pod still running on it, deletes that pod
// through the API and leaves nothing of the node inside the namespaces: no
// process, no mount, no link, no cgroup. (That nothing reached the
// machine's mount table and cgroups is checked outside the namespaces
// after the run, by TestMain.) It runs last: it stops the node.
func TestStopLeavesNothingBehind(t *testing.T) {
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "sleeper", Namespace: "default"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "sleeper", Image: pauseRef, ImagePullPolicy: corev1.PullNever,
				VolumeMounts: []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}}},
			Volumes: []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}}},
		},
	}
	if _, err := clientset.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, "the sleeper running", func() error {
		got, err := clientset.CoreV1().Pods("default").Get(ctx, "sleeper", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s", got.Status.Phase)
		}
		return nil
	})
	procs := node.Processes()
	for pid, name := range sshd.Processes() {
		procs[pid] = name
	}
	var rss []string
	for pid, name := range procs {
		rss = append(rss, fmt.Sprintf("%s %d MiB", name, residentMiB(pid)))
	}
	slices.Sort(rss)
	t.Logf("resident memory of the node's processes: %s", strings.Join(rss, ", "))
	if len(procs) < 6 { // kubelet, containerd, kube-proxy, a shim, sshd, rsyslogd
		t.Fatalf("expected the node's programs and a shim, found %v", procs)
	}

	sshd.Stop()
	nodeIsDown = true
	start := time.Now()
	if err := node.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("node stopped in %s", time.Since(start).Round(100*time.Millisecond))
	if left := node.Leftovers(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if _, err := clientset.CoreV1().Pods("default").Get(ctx, "sleeper", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the sleeper pod was not deleted through the API: %v", err)
	}
	for pid, name := range procs {
		if alive(pid) {
			t.Errorf("%s (%d) still runs", name, pid)
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		for _, dir := range []string{"/var/lib/kubelet/", "/run/containerd", "/run/netns", "/var/lib/containerd/"} {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir) {
				t.Errorf("mount left: %s", line)
			}
		}
	}
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/nodeaccess-*")
	if len(cgroups) > 0 {
		t.Errorf("cgroups left: %v", cgroups)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	if slices.Sort(names); !slices.Equal(names, []string{"lo", "na-node0"}) {
		t.Errorf("links %v, want only lo and the node network's bridge", names)
	}
	if err := node.Stop(ctx); err != nil {
		t.Errorf("a second Stop: %v", err)
	}
}

// alive says whether pid runs (a zombie, dead but not yet reaped, does not).
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, ok := strings.Cut(string(data), ") ")
	return ok && !strings.HasPrefix(rest, "Z")
}

func residentMiB(pid int) int {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb / 1024
		}
	}
	return 0
}

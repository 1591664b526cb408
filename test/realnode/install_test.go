package realnode

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodeaccess/nodeaccess-operator/internal/agentdaemonset"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
)

// OLM installed the operator from the committed catalog, and its CSV's
// Deployment runs the manager as a real pod on the real node, from the
// image archive tagged as the CSV names it (the API server's default pull
// policy, IfNotPresent, lets the kubelet use the imported image without a
// registry). The manager reaches the API server through the kubernetes
// Service, as any pod does, and created the agent DaemonSet, owned by its
// Deployment. Its logs come back through the kubelet.
func TestOperatorInstalledThroughOLMRunsOnTheRealNode(t *testing.T) {
	ctx := context.Background()
	t.Logf("%s installed through OLM in %s (Subscription to its manager and agent running), then upgraded to this version", releasedCSV, installed.Round(100e6))
	csv, err := installedCSV(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if csv.Status.Phase != operatorsv1alpha1.CSVPhaseSucceeded {
		t.Fatalf("CSV %s is %s", csv.Name, csv.Status.Phase)
	}
	sub := &operatorsv1alpha1.Subscription{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: packageName}, sub); err != nil {
		t.Fatal(err)
	}
	if sub.Status.State != operatorsv1alpha1.SubscriptionStateAtLatest {
		t.Errorf("Subscription state %s", sub.Status.State)
	}
	pod, err := managerPod(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := pod.Spec.Containers[0]
	if pod.Spec.NodeName != nodeName || c.Image != imageRef || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("manager pod on %q, image %q, pull policy %s; want %s, %s, IfNotPresent", pod.Spec.NodeName, c.Image, c.ImagePullPolicy, nodeName, imageRef)
	}
	if !ownedByDeployment(ctx, t, pod) {
		t.Errorf("the manager pod does not come from the CSV's Deployment: owners %v", pod.OwnerReferences)
	}
	dep := &appsv1.Deployment{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: managerDeployment}, dep); err != nil {
		t.Fatal(err)
	}
	if dep.Labels["olm.owner"] != csv.Name {
		t.Errorf("the manager's Deployment belongs to %q, want the CSV %s", dep.Labels["olm.owner"], csv.Name)
	}
	// The process the kubelet runs: /manager, as 65532, with the Service's
	// address that the kubelet gives every pod.
	env := processEnv(t, "/manager")
	if env["KUBERNETES_SERVICE_HOST"] != localcluster.KubernetesServiceIP || env["KUBERNETES_SERVICE_PORT"] != "443" {
		t.Errorf("the manager's API server address %s:%s, want the kubernetes Service %s:443", env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"], localcluster.KubernetesServiceIP)
	}
	if status := processStatus(t, "/manager"); status["Uid"] != "65532\t65532\t65532\t65532" || status["CapEff"] != "0000000000000000" || status["NoNewPrivs"] != "1" {
		t.Errorf("manager process Uid %q CapEff %q NoNewPrivs %q", status["Uid"], status["CapEff"], status["NoNewPrivs"])
	}
	logs, err := clientset.CoreV1().Pods(namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: "manager"}).DoRaw(ctx)
	if err != nil {
		t.Fatalf("reading the manager's logs through the kubelet: %v", err)
	}
	if !bytes.Contains(logs, []byte("Starting manager")) || !bytes.Contains(logs, []byte("Successfully acquired lease")) {
		t.Errorf("the manager's logs do not show it started and leading:\n%s", logs)
	}
	ds := &appsv1.DaemonSet{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: agentdaemonset.Name}, ds); err != nil {
		t.Fatal(err)
	}
	if len(ds.OwnerReferences) != 1 || ds.OwnerReferences[0].Kind != "Deployment" || ds.OwnerReferences[0].Name != managerDeployment {
		t.Errorf("agent DaemonSet owners %+v, want the operator's Deployment", ds.OwnerReferences)
	}
	n, err := clientset.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Spec.Unschedulable || len(n.Spec.Taints) > 0 {
		t.Errorf("the node is not plainly schedulable: unschedulable %v, taints %v", n.Spec.Unschedulable, n.Spec.Taints)
	}
}

func ownedByDeployment(ctx context.Context, t *testing.T, pod *corev1.Pod) bool {
	t.Helper()
	for _, o := range pod.OwnerReferences {
		if o.Kind != "ReplicaSet" {
			continue
		}
		rs := &appsv1.ReplicaSet{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: o.Name}, rs); err != nil {
			t.Fatal(err)
		}
		for _, ro := range rs.OwnerReferences {
			if ro.Kind == "Deployment" && ro.Name == managerDeployment {
				return true
			}
		}
	}
	return false
}

// The manager's pod, as the API server holds it (after defaulting and
// admission, not as the CSV writes it), passes the restricted Pod Security
// Standard at the latest version, checked with Kubernetes' own
// pod-security-admission policy. The same check refuses the pod made
// privileged, and refuses the agent's pod even at baseline (host paths):
// which is why the install namespace enforces privileged.
func TestManagerPodPassesRestrictedPodSecurity(t *testing.T) {
	ctx := context.Background()
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	check := func(level api.Level, pod *corev1.Pod) policy.AggregateCheckResult {
		return policy.AggregateCheckResults(evaluator.EvaluatePod(api.LevelVersion{Level: level, Version: api.LatestVersion()}, &pod.ObjectMeta, &pod.Spec))
	}
	pod, err := managerPod(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res := check(api.LevelRestricted, pod); !res.Allowed {
		t.Errorf("the manager pod fails restricted: %s: %s", res.ForbiddenReason(), res.ForbiddenDetail())
	}
	privileged := pod.DeepCopy()
	privileged.Spec.Containers[0].SecurityContext.Privileged = ptr.To(true)
	if res := check(api.LevelRestricted, privileged); res.Allowed || !slices.Contains(res.ForbiddenReasons, "privileged") {
		t.Errorf("the manager pod made privileged passes restricted (%v): the check proves nothing", res.ForbiddenReasons)
	}
	agent := agentPod(t)
	if res := check(api.LevelBaseline, agent); res.Allowed || !slices.Contains(res.ForbiddenReasons, "hostPath volumes") {
		t.Errorf("the agent pod at baseline: allowed %v, reasons %v; want refused for its host paths", res.Allowed, res.ForbiddenReasons)
	}
	ns, err := clientset.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range podSecurityLabels {
		if ns.Labels[k] != v {
			t.Errorf("namespace %s label %s=%q, want %q", namespace, k, ns.Labels[k], v)
		}
	}
}

// The agent pod running on the node is exactly what internal/agentdaemonset
// renders for the install's settings: the same container securityContext, the
// same host paths (path and type) mounted at the same places with the same
// access, no host namespace; the service-account token volume that
// admission adds is the only other volume. Its process holds only the
// capabilities the spec grants (CHOWN, DAC_OVERRIDE, FOWNER), cannot gain
// privileges, runs under the runtime's default seccomp filter, and wrote
// its node's report with its pod-bound token.
func TestAgentPodRunsAsRendered(t *testing.T) {
	pod := agentPod(t)
	compareAgentPod(t, pod, renderedAgent(nil, false))
	status := processStatus(t, "/agent")
	for field, v := range map[string]string{
		// CHOWN (0), DAC_OVERRIDE (1), FOWNER (3).
		"CapEff": "000000000000000b", "CapPrm": "000000000000000b", "CapBnd": "000000000000000b",
		"NoNewPrivs": "1", "Seccomp": "2", "Uid": "0\t0\t0\t0",
	} {
		if status[field] != v {
			t.Errorf("agent process %s = %q, want %q", field, status[field], v)
		}
	}
	rep, err := report(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.OwnerReferences) != 1 || rep.OwnerReferences[0].Kind != "Node" {
		t.Errorf("report owners %+v", rep.OwnerReferences)
	}
}

// compareAgentPod fails the test where the running pod differs from the
// rendered pod spec in what the security model relies on.
func compareAgentPod(t *testing.T, pod *corev1.Pod, want corev1.PodSpec) {
	t.Helper()
	got := pod.Spec
	if got.NodeName != nodeName || got.HostPID != want.HostPID || got.HostNetwork || got.HostIPC || got.HostNetwork != want.HostNetwork {
		t.Errorf("agent pod on %q, hostPID %v, hostNetwork %v, hostIPC %v", got.NodeName, got.HostPID, got.HostNetwork, got.HostIPC)
	}
	gc, wc := got.Containers[0], want.Containers[0]
	if len(got.Containers) != 1 || len(got.InitContainers) != 0 || gc.Image != wc.Image {
		t.Errorf("agent pod containers %d (+%d init), image %q", len(got.Containers), len(got.InitContainers), gc.Image)
	}
	if !equality.Semantic.DeepEqual(gc.SecurityContext, wc.SecurityContext) {
		t.Errorf("agent securityContext %+v, rendered %+v", gc.SecurityContext, wc.SecurityContext)
	}
	if !equality.Semantic.DeepEqual(got.SecurityContext, want.SecurityContext) {
		t.Errorf("agent pod securityContext %+v, rendered %+v", got.SecurityContext, want.SecurityContext)
	}
	if !slices.Equal(gc.Args, wc.Args) {
		t.Errorf("agent args %v, rendered %v", gc.Args, wc.Args)
	}
	if !equality.Semantic.DeepEqual(gc.RestartPolicy, wc.RestartPolicy) || !equality.Semantic.DeepEqual(gc.RestartPolicyRules, wc.RestartPolicyRules) {
		t.Errorf("agent restart policy %v, rules %+v; rendered %v, %+v", gc.RestartPolicy, gc.RestartPolicyRules, wc.RestartPolicy, wc.RestartPolicyRules)
	}
	// The token volume the ServiceAccount admission plugin adds.
	token := ""
	var volumes []corev1.Volume
	for _, v := range got.Volumes {
		if v.Projected != nil && strings.HasPrefix(v.Name, "kube-api-access-") && token == "" {
			token = v.Name
			continue
		}
		volumes = append(volumes, v)
	}
	hostPaths := func(vs []corev1.Volume) []string {
		var out []string
		for _, v := range vs {
			if v.HostPath == nil {
				out = append(out, v.Name+" not a host path")
				continue
			}
			out = append(out, fmt.Sprintf("%s=%s (%s)", v.Name, v.HostPath.Path, ptr.Deref(v.HostPath.Type, "")))
		}
		return out
	}
	if g, w := hostPaths(volumes), hostPaths(want.Volumes); !slices.Equal(g, w) {
		t.Errorf("agent volumes %v (besides the token %q), rendered %v", g, token, w)
	}
	var mounts []corev1.VolumeMount
	for _, m := range gc.VolumeMounts {
		if m.Name != token {
			mounts = append(mounts, m)
		} else if !m.ReadOnly {
			t.Errorf("token mounted writable")
		}
	}
	if !equality.Semantic.DeepEqual(mounts, wc.VolumeMounts) {
		t.Errorf("agent mounts %+v, rendered %+v", mounts, wc.VolumeMounts)
	}
}

// process finds the one process of the namespaces' PID namespace (which
// holds the containers') whose command line starts with name, and reads
// one of its /proc files.
func process(t *testing.T, name, file string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(processPID(t, name)), file))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// processPID is the PID of the one process of the namespaces' PID
// namespace whose command line starts with name.
func processPID(t *testing.T, name string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.HasPrefix(cmdline, []byte(name+"\x00")) {
			continue
		}
		if found != 0 {
			t.Fatalf("more than one %s process", name)
		}
		found = pid
	}
	if found == 0 {
		t.Fatalf("no %s process on the node", name)
	}
	return found
}

func processStatus(t *testing.T, name string) map[string]string {
	t.Helper()
	fields := map[string]string{}
	for _, line := range strings.Split(string(process(t, name, "status")), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	return fields
}

func processEnv(t *testing.T, name string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, kv := range strings.Split(string(process(t, name, "environ")), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

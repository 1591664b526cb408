package realnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/agentdaemonset"
	"github.com/nodeaccess/nodeaccess-operator/internal/authorizedkeys"
	"github.com/nodeaccess/nodeaccess-operator/internal/localcluster"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// timeout bounds every wait on the cluster; the figures a user relies on
// (time to login, time to refusal) are asserted separately.
const timeout = 3 * time.Minute

// installEnv is the manager's environment the Subscription sets at
// install: agents restart in place when they stop to read a replaced
// /etc/passwd, since the node's kubelet (1.37) declares the feature.
var installEnv = []corev1.EnvVar{{Name: "NODEACCESS_AGENT_RESTART_IN_PLACE", Value: "true"}}

// renderedAgent is the agent pod spec the manager renders for the
// install's settings, with these home roots and root setting.
func renderedAgent(roots []string, allowRoot bool) corev1.PodSpec {
	return agentdaemonset.DaemonSet(agentOptions(roots, allowRoot)).Spec.Template.Spec
}

// agentOptions are the manager's agent settings for the install's
// environment, with these home roots and root setting.
func agentOptions(roots []string, allowRoot bool) agentdaemonset.Options {
	return agentdaemonset.Options{
		Namespace: namespace, Image: imageRef, MaxUnavailable: intstr.FromString("10%"), SSHDPort: 22,
		HomeRoots: roots, AllowRoot: allowRoot, RestartInPlace: true,
	}
}

// subscribe subscribes to the operator from the catalog served at
// address, as a user would: a CatalogSource by address and a Subscription
// with the install's environment.
func subscribe(ctx context.Context, address string) error {
	if err := k8s.Create(ctx, &operatorsv1alpha1.CatalogSource{
		ObjectMeta: metav1.ObjectMeta{Name: catalogName, Namespace: localcluster.OLMNamespace},
		Spec: operatorsv1alpha1.CatalogSourceSpec{
			SourceType: operatorsv1alpha1.SourceTypeGrpc, Address: address,
			DisplayName: "nodeaccess-operator", Publisher: "nodeaccess",
		},
	}); err != nil {
		return fmt.Errorf("creating the CatalogSource: %w", err)
	}
	if err := k8s.Create(ctx, &operatorsv1alpha1.Subscription{
		ObjectMeta: metav1.ObjectMeta{Name: packageName, Namespace: namespace},
		Spec: &operatorsv1alpha1.SubscriptionSpec{
			CatalogSource: catalogName, CatalogSourceNamespace: localcluster.OLMNamespace,
			Package: packageName, Channel: channel, InstallPlanApproval: operatorsv1alpha1.ApprovalAutomatic,
			Config: &operatorsv1alpha1.SubscriptionConfig{Env: installEnv},
		},
	}); err != nil {
		return fmt.Errorf("creating the Subscription: %w", err)
	}
	return nil
}

// installedCSV is the CSV the Subscription installed.
func installedCSV(ctx context.Context) (*operatorsv1alpha1.ClusterServiceVersion, error) {
	sub := &operatorsv1alpha1.Subscription{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: packageName}, sub); err != nil {
		return nil, err
	}
	if sub.Status.InstalledCSV == "" {
		return nil, fmt.Errorf("the Subscription installed nothing yet (state %q)", sub.Status.State)
	}
	csv := &operatorsv1alpha1.ClusterServiceVersion{}
	return csv, k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: sub.Status.InstalledCSV}, csv)
}

func csvSucceeded() error {
	csv, err := installedCSV(context.Background())
	if err != nil {
		return err
	}
	if csv.Status.Phase != operatorsv1alpha1.CSVPhaseSucceeded {
		return fmt.Errorf("CSV %s phase %s (%s): %s", csv.Name, csv.Status.Phase, csv.Status.Reason, csv.Status.Message)
	}
	return nil
}

// agentRolledOut says the agent DaemonSet is rolled out on the node: its
// current template's pod is ready and no other agent pod is left; when
// check is set, the DaemonSet must also pass it.
func agentRolledOut(check func(*appsv1.DaemonSet) error) error {
	ctx := context.Background()
	ds := &appsv1.DaemonSet{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: agentdaemonset.Name}, ds); err != nil {
		return err
	}
	if check != nil {
		if err := check(ds); err != nil {
			return err
		}
	}
	s := ds.Status
	if s.ObservedGeneration != ds.Generation || s.UpdatedNumberScheduled != 1 || s.NumberReady != 1 || s.NumberAvailable != 1 || s.DesiredNumberScheduled != 1 {
		return fmt.Errorf("agent DaemonSet generation %d observed %d, %d updated, %d ready of %d; pods %s",
			ds.Generation, s.ObservedGeneration, s.UpdatedNumberScheduled, s.NumberReady, s.DesiredNumberScheduled, agentPodStates())
	}
	pods, err := agentPods(ctx)
	if err != nil {
		return err
	}
	if len(pods) != 1 {
		return fmt.Errorf("%d agent pods: %s", len(pods), agentPodStates())
	}
	return nil
}

// agentPods lists the agent pods, terminating ones too.
func agentPods(ctx context.Context) ([]corev1.Pod, error) {
	var pods corev1.PodList
	if err := k8s.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabels(agentdaemonset.Labels())); err != nil {
		return nil, err
	}
	return pods.Items, nil
}

// agentPod is the one running agent pod.
func agentPod(t testing.TB) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	testenv.Eventually(t, timeout, "one running agent pod", func() error {
		if err := agentRolledOut(nil); err != nil {
			return err
		}
		pods, err := agentPods(context.Background())
		if err != nil {
			return err
		}
		pod = &pods[0]
		return nil
	})
	return pod
}

func agentPodStates() string {
	pods, err := agentPods(context.Background())
	if err != nil {
		return err.Error()
	}
	var states []string
	for _, p := range pods {
		s := p.Name + " " + string(p.Status.Phase)
		if p.DeletionTimestamp != nil {
			s += " terminating"
		}
		for _, cs := range p.Status.ContainerStatuses {
			s += fmt.Sprintf(" ready=%v restarts=%d %+v", cs.Ready, cs.RestartCount, cs.State)
		}
		states = append(states, s)
	}
	return strings.Join(states, "; ")
}

// managerPod is the running manager pod of the CSV's Deployment.
func managerPod(ctx context.Context) (*corev1.Pod, error) {
	var pods corev1.PodList
	if err := k8s.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabels{"app.kubernetes.io/component": "manager"}); err != nil {
		return nil, err
	}
	var running []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && podReady(&p) {
			running = append(running, p)
		}
	}
	if len(running) != 1 || len(pods.Items) != 1 {
		return nil, fmt.Errorf("%d manager pods, %d running and ready", len(pods.Items), len(running))
	}
	return &running[0], nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// report is the node's NodeAccessReport.
func report(ctx context.Context) (*nav1.NodeAccessReport, error) {
	rep := &nav1.NodeAccessReport{}
	return rep, k8s.Get(ctx, client.ObjectKey{Name: nodeName}, rep)
}

// writeSSHConfig writes the known_hosts and ssh_config the plugin makes
// from the cluster, as a user would, and returns the ssh_config's path.
func writeSSHConfig(ctx context.Context) (string, error) {
	dir := filepath.Join(workDir, "ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	knownHosts, config := filepath.Join(dir, "known_hosts"), filepath.Join(dir, "config")
	if out, err := exec.CommandContext(ctx, pluginBin, "known-hosts", "--kubeconfig", cluster.Kubeconfig, "--file", knownHosts).CombinedOutput(); err != nil {
		return "", fmt.Errorf("kubectl nodeaccess known-hosts: %w: %s", err, out)
	}
	out, err := exec.CommandContext(ctx, pluginBin, "ssh-config", "--kubeconfig", cluster.Kubeconfig, "--known-hosts-file", knownHosts).Output()
	if err != nil {
		return "", fmt.Errorf("kubectl nodeaccess ssh-config: %w", err)
	}
	return config, os.WriteFile(config, out, 0o600)
}

// sshRun runs ssh to the node as user with the private key identity,
// configured only by what the plugin wrote (host key checked by the node's
// name, never trusted on first use), in batch mode.
func sshRun(ctx context.Context, user, identity string, extra []string, command ...string) ([]byte, error) {
	args := append([]string{"-F", sshConfig, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5",
		"-o", "LogLevel=ERROR", "-i", identity, "-l", user}, extra...)
	args = append(append(args, nodeName, "--"), command...)
	cmd := exec.CommandContext(ctx, "ssh", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &out, &out, nil
	err := cmd.Run()
	return out.Bytes(), err
}

// login says whether `ssh ... true` as user with the key succeeds: nil when
// it exits 0, errRefused when sshd refused the key, another error for any
// other failure (which no test may take for a refusal).
func login(user, identity string) error {
	out, err := sshRun(context.Background(), user, identity, nil, "true")
	return loginResult(out, err)
}

var errRefused = errors.New("sshd refused the key")

func loginResult(out []byte, err error) error {
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit) && exit.ExitCode() == 255 && bytes.Contains(out, []byte("Permission denied (publickey)")):
		return errRefused
	default:
		return fmt.Errorf("ssh: %w: %s", err, bytes.TrimSpace(out))
	}
}

// waitLogin tries the login back to back until it works, and returns how
// long that took from start.
func waitLogin(t testing.TB, user, identity string, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	for {
		err := login(user, identity)
		if err == nil {
			return time.Since(start)
		}
		if !errors.Is(err, errRefused) {
			t.Fatalf("logging in as %s: %v", user, err)
		}
		if time.Since(start) > within {
			t.Fatalf("%s still refused %s after the change", user, within)
		}
	}
}

// waitRefused tries the login back to back until sshd refuses it, and
// returns how long that took from start.
func waitRefused(t testing.TB, user, identity string, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	for {
		err := login(user, identity)
		if errors.Is(err, errRefused) {
			return time.Since(start)
		}
		if err != nil {
			t.Fatalf("logging in as %s: %v", user, err)
		}
		if time.Since(start) > within {
			t.Fatalf("%s still logs in %s after the change", user, within)
		}
	}
}

// newKey writes a new ed25519 key pair for the test and returns the private
// key's path and the public key line.
func newKey(t testing.TB, comment string) (string, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "id")
	pub, err := localcluster.WriteKeyPair(path, comment)
	if err != nil {
		t.Fatal(err)
	}
	return path, pub
}

// blobOf is a public key line's base64 blob.
func blobOf(pub string) string { return strings.Fields(pub)[1] }

// grant is a NodeAccess for the node's pool.
func grant(name string, users ...nav1.UserAccess) *nav1.NodeAccess {
	return &nav1.NodeAccess{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: nav1.NodeAccessSpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pool": "real"}},
			Users:        users,
		},
	}
}

// create creates the NodeAccess and deletes it when the test ends, waiting
// until its revocation is done.
func create(t testing.TB, na *nav1.NodeAccess) {
	t.Helper()
	if err := k8s.Create(context.Background(), na); err != nil {
		t.Fatal(err)
	}
	name := na.Name
	t.Cleanup(func() { remove(t, name) })
}

// remove deletes a NodeAccess (if it still exists) and waits until the
// manager let it go, every node having proven its keys gone.
func remove(t testing.TB, name string) {
	t.Helper()
	ctx := context.Background()
	if err := k8s.Delete(ctx, &nav1.NodeAccess{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil && !apierrors.IsNotFound(err) {
		t.Error(err)
		return
	}
	testenv.Eventually(t, timeout, name+" revoked and gone", func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Name: name}, &nav1.NodeAccess{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
}

// inSync says the NodeAccess is Ready at its current generation, every
// selected node in sync.
func inSync(name string) func() error {
	return func() error {
		na := &nav1.NodeAccess{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, na); err != nil {
			return err
		}
		c := meta.FindStatusCondition(na.Status.Conditions, nav1.ReadyCondition)
		if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != na.Generation || na.Status.NodesInSync != 1 {
			return fmt.Errorf("not in sync: %+v, %d nodes in sync", c, na.Status.NodesInSync)
		}
		return nil
	}
}

// failingWith says the node reports the NodeAccess failing with reason.
func failingWith(name, reason string) func() error {
	return func() error {
		na := &nav1.NodeAccess{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, na); err != nil {
			return err
		}
		for _, f := range na.Status.FailingNodes {
			if f.Node == nodeName && f.Reason == reason {
				return nil
			}
		}
		return fmt.Errorf("failing nodes %+v, want %s on %s", na.Status.FailingNodes, reason, nodeName)
	}
}

// keysFile is an account's authorized_keys on the node.
func keysFile(home string) string { return filepath.Join(home, ".ssh", "authorized_keys") }

// aliceFile is alice's authorized_keys.
var aliceFile = keysFile("/home/" + alice.Name)

// checkHandWritten fails the test unless alice's file holds her own lines
// byte for byte, after the managed block if there is one, and her own key
// still logs in.
func checkHandWritten(t testing.TB) {
	t.Helper()
	data, err := os.ReadFile(aliceFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := splitManaged(data); err != nil {
		t.Fatalf("alice's authorized_keys: %v\n%s", err, data)
	}
	if err := login(alice.Name, handKey); err != nil {
		t.Fatalf("alice's own key: %v", err)
	}
}

// splitManaged reads a whole authorized_keys of alice as the agent must
// leave it at every instant: either exactly her own lines, or one managed
// block at the top (BEGIN marker, grant headers and key lines, END marker,
// each a whole line) followed by exactly her own lines. It returns the key
// blobs of the block, sorted. A torn write (a truncated or half-replaced
// file) fails it.
func splitManaged(data []byte) ([]string, error) {
	begin := []byte(authorizedkeys.BeginMarker + "\n")
	if !bytes.HasPrefix(data, begin) {
		if !bytes.Equal(data, handLines) {
			return nil, fmt.Errorf("no managed block, and the rest is not alice's own lines")
		}
		return nil, nil
	}
	end := []byte("\n" + authorizedkeys.EndMarker + "\n")
	i := bytes.Index(data, end)
	if i < 0 {
		return nil, fmt.Errorf("a managed block without its END line")
	}
	block, rest := data[len(begin):i+1], data[i+len(end):]
	if !bytes.Equal(rest, handLines) {
		return nil, fmt.Errorf("after the managed block: %q, want alice's own lines", rest)
	}
	var blobs []string
	for _, line := range strings.Split(strings.TrimSuffix(string(block), "\n"), "\n") {
		if strings.HasPrefix(line, authorizedkeys.HeaderPrefix) {
			continue
		}
		fields := strings.Fields(line)
		found := false
		for j, f := range fields {
			if (strings.HasPrefix(f, "ssh-") || strings.HasPrefix(f, "ecdsa-")) && j+1 < len(fields) {
				blobs = append(blobs, fields[j+1])
				found = true
				break
			}
		}
		if !found || !strings.Contains(fields[len(fields)-1], authorizedkeys.AttributionPrefix) {
			return nil, fmt.Errorf("not a managed line: %q", line)
		}
	}
	slices.Sort(blobs)
	return blobs, nil
}

// poll waits for cond outside a test (the suite's setup).
func poll(ctx context.Context, within time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// freeze stops the process (SIGSTOP) and returns what resumes it, once
// however often it is called (a deferred call and an explicit one).
func freeze(t *testing.T, pid int) (resume func()) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		})
	}
}

// procStat is the fields of /proc/PID/stat after the command's name: the
// state letter first (R, S, T, ...), the start time at index 19.
func procStat(t *testing.T, pid int) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.LastIndexByte(data, ')')
	fields := strings.Fields(string(data[i+1:]))
	if i < 0 || len(fields) < 20 {
		t.Fatalf("/proc/%d/stat: %q", pid, data)
	}
	return fields
}

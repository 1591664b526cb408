package plugin_test

// Every command runs against a real kube-apiserver and etcd, with the
// objects a test creates (NodeAccess, Nodes, rendered grants and node
// reports as the manager and agents would write them), or with the real
// manager and agent where the test says so.

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
	"github.com/nodeaccess/nodeaccess-operator/internal/plugin"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

const namespace = "nodeaccess-system"

var (
	env        *testenv.Env
	k8sClient  client.Client
	kubeconfig string
	scheme     = runtime.NewScheme()
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	_ = clientgoscheme.AddToScheme(scheme)
	_ = nav1.AddToScheme(scheme)
	var err error
	if env, err = testenv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	if k8sClient, err = client.New(env.Config, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "kubectl-nodeaccess-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if kubeconfig, err = env.KubeconfigFile(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// result is one run of the plugin.
type result struct {
	stdout, stderr string
	code           int
}

// run runs kubectl nodeaccess with args against the test API server.
func run(t *testing.T, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := plugin.Run(context.Background(), append(args, "--kubeconfig", kubeconfig),
		genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	return result{stdout: out.String(), stderr: errOut.String(), code: code}
}

// mustRun runs the plugin and fails the test unless it exits 0.
func mustRun(t *testing.T, args ...string) result {
	t.Helper()
	r := run(t, args...)
	if r.code != 0 {
		t.Fatalf("kubectl nodeaccess %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// syncBuffer is a buffer written by one goroutine and read by another.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// createNode creates a Node with labels and an InternalIP.
func createNode(t *testing.T, name string, lbls map[string]string, ip string) *corev1.Node {
	t.Helper()
	ctx := context.Background()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
	must(t, k8sClient.Create(ctx, n))
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), n) })
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}}
		must(t, k8sClient.Status().Update(ctx, n))
	}
	return n
}

// createGrant creates a NodeAccess and its rendered grant as the manager
// would write it, and returns both.
func createGrant(t *testing.T, name string, sel map[string]string, users ...nav1.RenderedUser) (*nav1.NodeAccess, *nav1.RenderedNodeAccess) {
	t.Helper()
	ctx := context.Background()
	na := &nav1.NodeAccess{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       nav1.NodeAccessSpec{NodeSelector: metav1.LabelSelector{MatchLabels: sel}, Users: []nav1.UserAccess{}},
	}
	for _, u := range users {
		ua := nav1.UserAccess{Name: u.Name}
		for _, k := range u.Keys {
			ua.Keys = append(ua.Keys, nav1.AuthorizedKey{Key: k.Type + " " + k.Data, Comment: k.Comment, ExpiresAt: k.ExpiresAt})
		}
		na.Spec.Users = append(na.Spec.Users, ua)
	}
	must(t, k8sClient.Create(ctx, na))
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), na) })
	r := &nav1.RenderedNodeAccess{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: nav1.GroupVersion.String(), Kind: "NodeAccess", Name: name, UID: na.UID, Controller: ptrTo(true),
		}}},
		Spec: nav1.RenderedNodeAccessSpec{
			NodeAccessName: name, NodeAccessUID: string(na.UID), Generation: na.Generation,
			NodeSelector: na.Spec.NodeSelector, Users: users,
		},
	}
	hash, err := desiredstate.Hash(&r.Spec)
	must(t, err)
	r.Spec.Hash = hash
	must(t, k8sClient.Create(ctx, r))
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), r) })
	return na, r
}

// writeReport writes a node's report as its agent would.
func writeReport(t *testing.T, node *corev1.Node, grants ...nav1.GrantReport) *nav1.NodeAccessReport {
	t.Helper()
	ctx := context.Background()
	rep := &nav1.NodeAccessReport{}
	err := k8sClient.Get(ctx, client.ObjectKey{Name: node.Name}, rep)
	if err != nil {
		rep = &nav1.NodeAccessReport{
			ObjectMeta: metav1.ObjectMeta{Name: node.Name, OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
			}}},
			Spec: nav1.NodeAccessReportSpec{NodeName: node.Name},
		}
		must(t, k8sClient.Create(ctx, rep))
		t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), rep) })
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	rep.Status.Grants = grants
	rep.Status.HeartbeatTime = &now
	rep.Status.Conditions = []metav1.Condition{{Type: nav1.ReadyCondition, Status: metav1.ConditionTrue, Reason: nav1.AllGrantsAppliedReason, Message: "ok", LastTransitionTime: now}}
	must(t, k8sClient.Status().Update(ctx, rep))
	return rep
}

func applied(r *nav1.RenderedNodeAccess) nav1.GrantReport {
	return nav1.GrantReport{Name: r.Spec.NodeAccessName, UID: r.Spec.NodeAccessUID, Generation: r.Spec.Generation, Hash: r.Spec.Hash, Applied: true, Keys: 1}
}

func ptrTo[T any](v T) *T { return &v }

// Two ed25519 public keys.
const (
	aliceData = "AAAAC3NzaC1lZDI1NTE5AAAAIHQcKBUJvZCUI4cabRgJQrFMYA/uPYHs+vLi/MryWsmq"
	bobData   = "AAAAC3NzaC1lZDI1NTE5AAAAILx8BlVk0iQ8dc2TlIotZ8phKS+nHaE6FNvJayhFxslz"
)

// key is a rendered key with its real fingerprint.
func key(t *testing.T, data, comment string, expires *metav1.Time) nav1.RenderedKey {
	t.Helper()
	blob, err := base64.StdEncoding.DecodeString(data)
	must(t, err)
	pk, err := ssh.ParsePublicKey(blob)
	must(t, err)
	return nav1.RenderedKey{Type: pk.Type(), Data: data, Comment: comment, Fingerprint: ssh.FingerprintSHA256(pk), ExpiresAt: expires}
}

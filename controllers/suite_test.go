package controllers_test

// The manager runs in-process against a real kube-apiserver and etcd; agents
// run as simulated nodes, each with its own client, cache and temp host root.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	operatorsv2 "github.com/operator-framework/api/pkg/operators/v2"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/controllers"
	"github.com/nodeaccess/nodeaccess-operator/internal/keypolicy"
	"github.com/nodeaccess/nodeaccess-operator/internal/render"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

const (
	namespace  = "nodeaccess-system"
	agentImage = "example.com/nodeaccess-operator:test"
	// statusDelay is the manager's StatusDelay in these tests.
	statusDelay = 200 * time.Millisecond
	// filterSwitchGrace is the manager's wait before it labels grants an earlier manager wrote.
	filterSwitchGrace = 2 * time.Second
	// revocationTimeout is the manager's RevocationTimeout in these tests.
	revocationTimeout = 12 * time.Second
	// reportStaleAfter is the manager's ReportStaleAfter in these tests.
	reportStaleAfter = 20 * time.Second
	// managerAccount is the manager's service account, as the bundle names it.
	managerAccount = "nodeaccess-controller-manager"
	// keySourceReaderRole is the shipped ClusterRole a namespace binds to let
	// the manager read its Secrets.
	keySourceReaderRole = "nodeaccess-key-source-reader"
)

// limits are the manager's cluster-wide bounds in these tests: small
// enough for a test to reach.
var limits = render.ClusterLimits{MaxGrants: 200, MaxBytes: 4 << 20, MaxNodeGrants: 100, MaxNodeBytes: 2 << 20, MaxAccountBytes: 256 << 10}

// grantManagerRBAC creates the manager's service account and binds to it
// the generated roles of config/rbac/role.yaml, and the access OLM gives an
// operator to its OperatorCondition.
func grantManagerRBAC(ctx context.Context) error {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "role.yaml"))
	if err != nil {
		return err
	}
	objs := []client.Object{&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: managerAccount}}}
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: namespace, Name: managerAccount}}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var role rbacv1.ClusterRole
		if err := yaml.Unmarshal([]byte(doc), &role); err != nil {
			return err
		}
		switch role.Kind {
		case "ClusterRole":
			role.Name = "test-" + role.Name
			objs = append(objs, &role, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: role.Name}, Subjects: subject,
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
			})
		case "Role":
			r := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "test-" + role.Name}, Rules: role.Rules}
			objs = append(objs, r, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: r.Name}, Subjects: subject,
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: r.Name},
			})
		}
	}
	// The ClusterRole a namespace binds to let the manager read its Secrets.
	reader, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "key_source_reader_role.yaml"))
	if err != nil {
		return err
	}
	keySourceReader := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(reader, keySourceReader); err != nil {
		return err
	}
	keySourceReader.Name = keySourceReaderRole
	objs = append(objs, keySourceReader)
	olm := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "test-olm-operatorcondition"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"operators.coreos.com"}, Resources: []string{"operatorconditions"},
			ResourceNames: []string{operatorCondition}, Verbs: []string{"get", "update", "patch"}}}}
	objs = append(objs, olm, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: olm.Name}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: olm.Name},
	})
	for _, o := range objs {
		if err := k8sClient.Create(ctx, o); err != nil {
			return fmt.Errorf("creating %T %s: %w", o, o.GetName(), err)
		}
	}
	return nil
}

var (
	env       *testenv.Env
	k8sClient client.Client
	// writes counts the manager's write requests by "VERB path".
	writes = &requestCounter{counts: map[string]int{}}
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Getenv("TEST_LOGS") != "" {
		ctrl.SetLogger(zap.New(zap.UseDevMode(true)))
	} else {
		ctrl.SetLogger(logr.Discard())
	}
	var err error
	if env, err = testenv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = nav1.AddToScheme(scheme)
	_ = operatorsv2.AddToScheme(scheme)
	if k8sClient, err = client.New(env.Config, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// OLM creates the OperatorCondition before it starts the operator.
	if err := k8sClient.Create(context.Background(), &operatorsv2.OperatorCondition{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: operatorCondition},
	}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	// The manager, as main.go builds it, with short delays for tests and a
	// transport that counts its writes. It runs as its own service account
	// with exactly the permissions the project ships (config/rbac/role.yaml)
	// and those OLM grants on its OperatorCondition: no test passes thanks to
	// the test's administrator rights.
	if err := grantManagerRBAC(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "granting the manager its RBAC:", err)
		return 1
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + namespace + ":" + managerAccount,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
	}
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return writes.wrap(rt) }
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:   controllers.CacheOptions(namespace),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := controllers.Setup(mgr, controllers.Options{
		Namespace: namespace, AgentImage: agentImage, AgentMaxUnavailable: intstr.FromString("10%"),
		OperatorDeployment: "nodeaccess-controller-manager",
		Render:             render.Options{Policy: keypolicy.DefaultPolicy()},
		RevocationTimeout:  revocationTimeout,
		ForbiddenRecheck:   time.Second,
		Limits:             limits,
		StatusDelay:        statusDelay,
		OperatorCondition:  operatorCondition,
		ReportStaleAfter:   reportStaleAfter,
		FilterSwitchGrace:  filterSwitchGrace,
		FilterSettleDelay:  500 * time.Millisecond,
	}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	return m.Run()
}

// allowSecrets lets the manager read the Secrets of namespace, as a team
// opts in: a RoleBinding of the shipped ClusterRole to the manager's account.
func allowSecrets(t *testing.T, ns string) {
	t.Helper()
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "nodeaccess-key-source-reader"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: namespace, Name: managerAccount}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: keySourceReaderRole},
	}
	if err := client.IgnoreAlreadyExists(k8sClient.Create(context.Background(), rb)); err != nil {
		t.Fatal(err)
	}
}

// requestCounter counts non-read requests, and lets a test act just
// before one of them reaches the API server.
type requestCounter struct {
	mu     sync.Mutex
	counts map[string]int
	// before, when set, runs before each non-read request is sent.
	before func(*http.Request)
}

// beforeWrites sets (or, with nil, clears) the function run before each of
// the manager's writes.
func (c *requestCounter) beforeWrites(f func(*http.Request)) {
	c.mu.Lock()
	c.before = f
	c.mu.Unlock()
}

type countingTransport struct {
	c  *requestCounter
	rt http.RoundTripper
}

func (c *requestCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return &countingTransport{c: c, rt: rt}
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		t.c.mu.Lock()
		t.c.counts[req.Method+" "+req.URL.Path]++
		before := t.c.before
		t.c.mu.Unlock()
		if before != nil {
			before(req)
		}
	}
	return t.rt.RoundTrip(req)
}

// matching sums the writes whose path contains every part.
func (c *requestCounter) matching(parts ...string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
next:
	for k, v := range c.counts {
		for _, p := range parts {
			if !strings.Contains(k, p) {
				continue next
			}
		}
		n += v
	}
	return n
}

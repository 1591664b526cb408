package controllers_test

// The manager runs in-process against a real kube-apiserver and etcd; agents
// run as simulated nodes, each with its own client, cache and temp host root.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

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
)

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
	// transport that counts its writes.
	cfg := rest.CopyConfig(env.Config)
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
		RevocationTimeout:  20 * time.Second,
		StatusDelay:        statusDelay,
		OperatorCondition:  operatorCondition,
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

// requestCounter counts non-read requests.
type requestCounter struct {
	mu     sync.Mutex
	counts map[string]int
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
		t.c.mu.Unlock()
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

package controllers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/controllers"
	"github.com/nodeaccess/nodeaccess-operator/internal/agentdaemonset"
	"github.com/nodeaccess/nodeaccess-operator/internal/monitoring"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// sample is one series of a metric family: its labels and value.
type sample struct {
	labels map[string]string
	value  float64
}

// samples reads the series of a gauge from controller-runtime's registry
// whose labels include match.
func samples(t *testing.T, name string, match map[string]string) []sample {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []sample
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			s := sample{labels: map[string]string{}, value: m.GetGauge().GetValue()}
			for _, l := range m.GetLabel() {
				s.labels[l.GetName()] = l.GetValue()
			}
			for k, v := range match {
				if s.labels[k] != v {
					continue next
				}
			}
			out = append(out, s)
		}
	}
	return out
}

// seriesAre waits until the gauge's series matching match are exactly want
// (labels beyond match compared too).
func seriesAre(t *testing.T, name string, match map[string]string, want ...sample) func() error {
	return func() error {
		got := samples(t, name, match)
		if len(got) != len(want) {
			return fmt.Errorf("%s%v: %d series %v, want %v", name, match, len(got), got, want)
		}
		for _, w := range want {
			found := false
			for _, g := range got {
				same := g.value == w.value
				for k, v := range w.labels {
					same = same && g.labels[k] == v
				}
				found = found || same
			}
			if !found {
				return fmt.Errorf("%s%v: %v, want %v", name, match, got, want)
			}
		}
		return nil
	}
}

func cond(name, typ, reason string, value float64) sample {
	return sample{labels: map[string]string{"nodeaccess": name, "type": typ, "reason": reason}, value: value}
}

// The alerts read each NodeAccess's conditions and expiries from the
// manager's metrics: one series per condition, following its reason, and
// none left once the NodeAccess is gone.
func TestStatusMetricsFollowConditionsAndExpiries(t *testing.T) {
	nodes := startNodes(t, "metrics", "metrics")
	k := newKey(t, "k")
	na := nodeAccess("metrics", "metrics", k.line)
	grantExpiry := metav1.NewTime(time.Now().Add(48 * time.Hour).Truncate(time.Second))
	keyExpiry := metav1.NewTime(time.Now().Add(2 * time.Hour).Truncate(time.Second))
	na.Spec.ExpiresAt = &grantExpiry
	na.Spec.Users[0].Keys[0].ExpiresAt = &keyExpiry
	create(t, na)
	testenv.Eventually(t, timeout, "key on node", holds(nodes[0], k.blob))
	testenv.Eventually(t, timeout, "Ready", statusIs("metrics", 1, 1, 1, nav1.AllNodesInSyncReason))

	only := map[string]string{"nodeaccess": "metrics"}
	testenv.Eventually(t, timeout, "conditions exported", seriesAre(t, "nodeaccess_condition", only,
		cond("metrics", nav1.ReadyCondition, nav1.AllNodesInSyncReason, 1),
		cond("metrics", nav1.ProgressingCondition, nav1.AsExpectedReason, 0),
		cond("metrics", nav1.DegradedCondition, nav1.AsExpectedReason, 0)))
	must(t, seriesAre(t, "nodeaccess_expiry_timestamp_seconds", only, sample{labels: only, value: float64(grantExpiry.Unix())})())
	must(t, seriesAre(t, "nodeaccess_next_expiry_timestamp_seconds", only, sample{labels: only, value: float64(keyExpiry.Unix())})())

	// Suspended: Ready follows with its new reason, and the old reason's
	// series is gone.
	update(t, "metrics", func(na *nav1.NodeAccess) { na.Spec.Suspend = true })
	testenv.Eventually(t, timeout, "keys removed", holds(nodes[0]))
	testenv.Eventually(t, timeout, "Ready=False Suspended exported", seriesAre(t, "nodeaccess_condition",
		map[string]string{"nodeaccess": "metrics", "type": nav1.ReadyCondition}, cond("metrics", nav1.ReadyCondition, nav1.SuspendedReason, 0)))

	// No grant expiry any more: its series goes.
	update(t, "metrics", func(na *nav1.NodeAccess) { na.Spec.ExpiresAt = nil })
	testenv.Eventually(t, timeout, "grant expiry series removed", seriesAre(t, "nodeaccess_expiry_timestamp_seconds", only))

	must(t, k8sClient.Delete(context.Background(), &nav1.NodeAccess{ObjectMeta: metav1.ObjectMeta{Name: "metrics"}}))
	testenv.Eventually(t, timeout, "NodeAccess gone", gone("metrics"))
	for _, name := range []string{"nodeaccess_condition", "nodeaccess_next_expiry_timestamp_seconds", "nodeaccess_nodes_selected"} {
		testenv.Eventually(t, timeout, name+" removed", seriesAre(t, name, only))
	}
}

// linuxNode creates a Node the agent DaemonSet would select.
func linuxNode(t *testing.T, name string) *corev1.Node {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelOSStable: "linux"}}}
	must(t, k8sClient.Create(context.Background(), n))
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), n) })
	return n
}

// reportFor writes a node's report as its agent would, owned by owner
// (a Node's UID), with the heartbeat at heartbeat.
func reportFor(t *testing.T, node string, owner *corev1.Node, heartbeat time.Time) {
	t.Helper()
	ctx := context.Background()
	report := &nav1.NodeAccessReport{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: node}, report); apierrors.IsNotFound(err) {
		report = &nav1.NodeAccessReport{
			ObjectMeta: metav1.ObjectMeta{Name: node, OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: owner.Name, UID: owner.UID}}},
			Spec: nav1.NodeAccessReportSpec{NodeName: node},
		}
		must(t, k8sClient.Create(ctx, report))
		t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), report) })
	} else {
		must(t, err)
	}
	stamp := metav1.NewTime(heartbeat.Truncate(time.Second))
	report.Status.HeartbeatTime = &stamp
	must(t, k8sClient.Status().Update(ctx, report))
}

func without(reason string, value float64) sample {
	return sample{labels: map[string]string{"reason": reason}, value: value}
}

// The manager says how many agents run and which nodes do not report:
// from the DaemonSet's status, and from the reports of the Linux nodes,
// including one that turns stale while nothing happens.
func TestAgentMetricsCountMissingAgentsAndSilentNodes(t *testing.T) {
	ctx := context.Background()
	testenv.Eventually(t, timeout, "DaemonSet status written", func() error {
		ds := &appsv1.DaemonSet{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: namespace, Name: agentdaemonset.Name}, ds); err != nil {
			return err
		}
		ds.Status.ObservedGeneration = ds.Generation
		ds.Status.DesiredNumberScheduled, ds.Status.CurrentNumberScheduled, ds.Status.UpdatedNumberScheduled = 4, 4, 4
		ds.Status.NumberReady, ds.Status.NumberAvailable = 3, 3
		return k8sClient.Status().Update(ctx, ds)
	})
	t.Cleanup(func() { setAgentRollout(t, 3, 3) })
	testenv.Eventually(t, timeout, "agents desired", seriesAre(t, "nodeaccess_agents_desired", nil, sample{value: 4}))
	testenv.Eventually(t, timeout, "agents ready", seriesAre(t, "nodeaccess_agents_ready", nil, sample{value: 3}))

	fresh := linuxNode(t, "silent-fresh")
	linuxNode(t, "silent-none")
	stale := linuxNode(t, "silent-stale")
	recreated := linuxNode(t, "silent-recreated")
	reportFor(t, fresh.Name, fresh, time.Now())
	reportFor(t, stale.Name, stale, time.Now().Add(-time.Hour))
	// A report left by an earlier Node of that name.
	reportFor(t, recreated.Name, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: recreated.Name, UID: "0c6b7e0e-0000-4000-8000-000000000000"}}, time.Now())
	testenv.Eventually(t, timeout, "silent nodes counted", seriesAre(t, "nodeaccess_nodes_without_report", nil,
		without("NoReport", 2), without("StaleReport", 1)))

	// The stale node's agent comes back.
	reportFor(t, stale.Name, stale, time.Now())
	testenv.Eventually(t, timeout, "heartbeat seen", seriesAre(t, "nodeaccess_nodes_without_report", nil,
		without("NoReport", 2), without("StaleReport", 0)))

	// Nothing happens for longer than the bound: the reports turn stale by
	// the clock alone.
	testenv.Eventually(t, 3*reportStaleAfter, "reports turned stale", seriesAre(t, "nodeaccess_nodes_without_report", nil,
		without("NoReport", 2), without("StaleReport", 2)))
}

// monitoringLog records what the monitoring controller logs.
type monitoringLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *monitoringLog) has(msg string) func() error {
	return func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, line := range l.lines {
			if strings.Contains(line, msg) {
				return nil
			}
		}
		return fmt.Errorf("not logged %q; logged %q", msg, l.lines)
	}
}

// The manager installs the alerts and the ServiceMonitor only once the
// Prometheus operator's CRDs are served: without them it starts, says so
// and writes nothing; when they appear it creates both objects, owned by
// the operator's Deployment, and repairs them when edited or deleted. It
// runs here as the manager's own service account, with the shipped RBAC.
func TestMonitoringObjectsFollowTheCRDs(t *testing.T) {
	ctx := context.Background()
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "nodeaccess-controller-manager"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "manager"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "manager"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "manager", Image: agentImage}}},
			},
		},
	}
	must(t, k8sClient.Create(ctx, dep))
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), dep) })

	// CRDs are cluster-wide: removed again at the end, after this
	// manager stopped (cleanups run last in, first out).
	crdDir := t.TempDir()
	var installed []*apiextensionsv1.CustomResourceDefinition
	t.Cleanup(func() {
		if len(installed) > 0 {
			if err := envtest.UninstallCRDs(env.Config, envtest.CRDInstallOptions{CRDs: installed}); err != nil {
				t.Error(err)
			}
		}
	})

	// A manager with the monitoring controller only (the suite's manager runs the rest).
	log := &monitoringLog{}
	logger := funcr.New(func(prefix, args string) {
		log.mu.Lock()
		log.lines = append(log.lines, prefix+" "+args)
		log.mu.Unlock()
	}, funcr.Options{})
	requests := &allRequests{counts: map[string]int{}}
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range log.snapshot() {
				t.Log(l)
			}
			t.Logf("the manager's requests: %v", requests.snapshot())
		}
	})
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + namespace + ":" + managerAccount,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
	}
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return &allRequestsTransport{c: requests, rt: rt} }
	scheme := runtime.NewScheme()
	must(t, clientgoscheme.AddToScheme(scheme))
	must(t, nav1.AddToScheme(scheme))
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme, Logger: logger, Metrics: metricsserver.Options{BindAddress: "0"},
		Cache: controllers.CacheOptions(namespace),
	})
	must(t, err)
	must(t, controllers.SetupMonitoring(mgr, controllers.Options{
		Namespace: namespace, OperatorDeployment: dep.Name,
		MonitoringLabels: map[string]string{"release": "monitoring"}, MonitoringRecheck: 300 * time.Millisecond,
	}))
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})

	// Without the CRDs: said, and nothing but discovery asked, across
	// several rechecks.
	testenv.Eventually(t, timeout, "said it does not install", log.has("Not installing the alerts and the ServiceMonitor"))
	discovery := "GET /apis/monitoring.coreos.com/v1"
	testenv.Eventually(t, timeout, "discovery asked again", func() error {
		if n := requests.count(discovery); n < 3 {
			return fmt.Errorf("asked %d times", n)
		}
		return nil
	})
	if n := requests.count("monitoring.coreos.com"); n != requests.count(discovery) {
		t.Fatalf("requests to monitoring.coreos.com other than discovery without its CRDs: %v", requests.snapshot())
	}
	if n := strings.Count(strings.Join(log.snapshot(), "\n"), "Not installing"); n != 1 {
		t.Errorf("said %d times that it does not install, want once", n)
	}

	// The Prometheus operator is installed: both objects appear.
	paths, err := testenv.MonitoringCRDs(crdDir)
	must(t, err)
	installed, err = envtest.InstallCRDs(env.Config, envtest.CRDInstallOptions{Paths: paths, ErrorIfPathMissing: true})
	must(t, err)
	mon := monitoringClient(t)
	rule := &monitoringv1.PrometheusRule{}
	sm := &monitoringv1.ServiceMonitor{}
	ruleKey := client.ObjectKey{Namespace: namespace, Name: monitoring.RuleName}
	smKey := client.ObjectKey{Namespace: namespace, Name: monitoring.ServiceMonitorName}
	testenv.Eventually(t, timeout, "PrometheusRule created", func() error { return mon.Get(ctx, ruleKey, rule) })
	testenv.Eventually(t, timeout, "ServiceMonitor created", func() error { return mon.Get(ctx, smKey, sm) })
	testenv.Eventually(t, timeout, "said it installed them", log.has("Installed the alerts and the ServiceMonitor"))
	for _, o := range []client.Object{rule, sm} {
		refs := o.GetOwnerReferences()
		if len(refs) != 1 || refs[0].Kind != "Deployment" || refs[0].UID != dep.UID {
			t.Errorf("%s owners %+v, want the operator Deployment %s", o.GetName(), refs, dep.UID)
		}
		if o.GetLabels()["release"] != "monitoring" {
			t.Errorf("%s labels %v, want release=monitoring", o.GetName(), o.GetLabels())
		}
	}
	if !sameJSON(t, rule.Spec.Groups, monitoring.Groups()) {
		t.Fatalf("the PrometheusRule holds other rules than internal/monitoring's")
	}
	if sm.Spec.Endpoints[0].Port != "https" || sm.Spec.Endpoints[0].BearerTokenFile != monitoring.TokenFile {
		t.Fatalf("ServiceMonitor endpoints %+v", sm.Spec.Endpoints)
	}

	// An edit of an alert is undone.
	testenv.Eventually(t, timeout, "rule edited", func() error {
		r := &monitoringv1.PrometheusRule{}
		if err := mon.Get(ctx, ruleKey, r); err != nil {
			return err
		}
		r.Spec.Groups[0].Rules[0].Expr.StrVal = "vector(0) > 1"
		return mon.Update(ctx, r)
	})
	testenv.Eventually(t, timeout, "edit undone", func() error {
		r := &monitoringv1.PrometheusRule{}
		if err := mon.Get(ctx, ruleKey, r); err != nil {
			return err
		}
		if !sameJSON(t, r.Spec.Groups, monitoring.Groups()) {
			return fmt.Errorf("still edited: %s", r.Spec.Groups[0].Rules[0].Expr.String())
		}
		return nil
	})

	// A deleted ServiceMonitor comes back.
	must(t, mon.Delete(ctx, sm))
	testenv.Eventually(t, timeout, "ServiceMonitor recreated", func() error {
		got := &monitoringv1.ServiceMonitor{}
		if err := mon.Get(ctx, smKey, got); err != nil {
			return err
		}
		if got.UID == sm.UID {
			return fmt.Errorf("not yet recreated")
		}
		return nil
	})
}

func (l *monitoringLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// allRequests counts every request by "VERB path".
type allRequests struct {
	mu     sync.Mutex
	counts map[string]int
}

type allRequestsTransport struct {
	c  *allRequests
	rt http.RoundTripper
}

func (t *allRequestsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.c.mu.Lock()
	t.c.counts[req.Method+" "+req.URL.Path]++
	t.c.mu.Unlock()
	return t.rt.RoundTrip(req)
}

// count sums the requests whose "VERB path" contains part.
func (c *allRequests) count(part string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, v := range c.counts {
		if strings.Contains(k, part) {
			n += v
		}
	}
	return n
}

func (c *allRequests) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

func monitoringClient(t *testing.T) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	must(t, monitoringv1.AddToScheme(scheme))
	c, err := client.New(env.Config, client.Options{Scheme: scheme})
	must(t, err)
	return c
}

func sameJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	must(t, err)
	jb, err := json.Marshal(b)
	must(t, err)
	return bytes.Equal(ja, jb)
}

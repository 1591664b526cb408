// Command manager runs the nodeaccess-operator controller manager: it
// validates NodeAccess objects, renders their desired state for the node
// agents, owns the agent DaemonSet and reports status.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	operatorsv2 "github.com/operator-framework/api/pkg/operators/v2"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/controllers"
	"github.com/nodeaccess/nodeaccess-operator/internal/agentdaemonset"
	"github.com/nodeaccess/nodeaccess-operator/internal/flagenv"
	"github.com/nodeaccess/nodeaccess-operator/internal/keypolicy"
	"github.com/nodeaccess/nodeaccess-operator/internal/nodewriter"
	"github.com/nodeaccess/nodeaccess-operator/internal/render"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

// options are the manager's command-line flags.
type options struct {
	metricsAddr   string
	metricsSecure bool
	probeAddr     string
	pprofAddr     string
	leaderElect   bool
	enableHTTP2   bool

	namespace          string
	agentImage         string
	agentMaxUnavail    string
	operatorDeployment string
	nodeSSHDPort       int
	homeRoots          string
	trackLogins        bool
	endSessions        bool
	sshdLogs           string
	restartInPlace     bool
	allowRoot          bool
	maxGrants          int
	maxRenderedBytes   int
	maxNodeGrants      int
	maxNodeBytes       int
	maxAccountBytes    int
	minRSABits         int
	allowCertificates  bool
	revocationTimeout  time.Duration
	statusDelay        time.Duration
	reportStaleAfter   time.Duration
	reportWrites       float64
	statusWrites       float64
	monitoring         bool
	monitoringLabels   string
	monitoringRecheck  time.Duration
	apiQPS             float64
	apiBurst           int
}

// envPrefix starts the environment variables that set the manager's
// flags (OLM's Subscription spec.config.env sets them on its Deployment).
const envPrefix = "NODEACCESS"

func run() error {
	var opts options
	flag.StringVar(&opts.metricsAddr, "metrics-bind-address", ":8443",
		"Address the metrics endpoint binds to (:8443 for HTTPS, :8080 for HTTP, 0 to disable).")
	flag.BoolVar(&opts.metricsSecure, "metrics-secure", true,
		"Serve metrics over HTTPS, allowing only callers authorised by the API server to read them.")
	flag.StringVar(&opts.probeAddr, "health-probe-bind-address", ":8081",
		"Address the liveness and readiness probes bind to.")
	flag.StringVar(&opts.pprofAddr, "pprof-bind-address", "0",
		"Address of the Go profiler's /debug/pprof endpoints, for diagnosis (0 disables it; bind it to 127.0.0.1).")
	flag.BoolVar(&opts.leaderElect, "leader-elect", false,
		"Elect a leader, so that only one manager replica is active at a time.")
	flag.BoolVar(&opts.enableHTTP2, "enable-http2", false,
		"Serve metrics over HTTP/2 as well (off by default: HTTP/2 Rapid Reset and Stream Cancellation).")
	flag.StringVar(&opts.namespace, "namespace", os.Getenv("POD_NAMESPACE"),
		"The operator's namespace: rendered grants and the agent DaemonSet live there (default: $POD_NAMESPACE).")
	flag.StringVar(&opts.agentImage, "agent-image", os.Getenv("RELATED_IMAGE_AGENT"),
		"Image of the agent DaemonSet (default: $RELATED_IMAGE_AGENT). Empty: the manager does not manage the DaemonSet.")
	flag.StringVar(&opts.agentMaxUnavail, "agent-max-unavailable", "10%",
		"How many agents a rolling update of the DaemonSet stops at once (a number or a percentage).")
	flag.StringVar(&opts.operatorDeployment, "operator-deployment", "nodeaccess-controller-manager",
		"Name of the operator's Deployment, which owns the agent DaemonSet.")
	flag.IntVar(&opts.nodeSSHDPort, "node-sshd-port", 22,
		"Port of the nodes' sshd: each agent probes it on its node's IP and publishes the host keys in the node's report (0: not probed).")
	flag.StringVar(&opts.homeRoots, "home-roots", "/home",
		"Comma-separated host directories under which the agents write accounts' homes, each mounted into the agent pods (for example /home,/var/home); an account whose home is elsewhere is reported HomeNotMounted.")
	flag.BoolVar(&opts.trackLogins, "track-logins", false,
		"Have the agents report the key logins their node's sshd logs (who logged in with which key, from where): in node reports, NodeAccess status, LoginAccepted Events and nodeaccess_logins_total. Mounts the directories of --sshd-logs read-only into the agent pods.")
	flag.BoolVar(&opts.endSessions, "end-sessions-on-revoke", false,
		"Have the agents end the sshd sessions that logged in with a key once no grant gives it to the account (delete, suspend, expiry). Implies --track-logins; the agent pods then share the host's PID namespace (docs/security.md).")
	flag.StringVar(&opts.sshdLogs, "sshd-logs", strings.Join(agentdaemonset.DefaultSSHDLogs, ","),
		"Comma-separated syslog files, under /var/log, where the nodes' sshd logs; their directories are mounted read-only into the agent pods when logins are tracked.")
	flag.BoolVar(&opts.restartInPlace, "agent-restart-in-place", false,
		"Restart an agent pod's containers in place when the agent stops to read a replaced /etc/passwd (a new account), so the kubelet's crash-loop back-off never delays it. Needs every node's kubelet to declare RestartAllContainersOnContainerExits (Kubernetes 1.36 and later): the scheduler keeps agent pods off other nodes.")
	flag.IntVar(&opts.maxGrants, "max-grants", render.DefaultClusterLimits.MaxGrants,
		"Most NodeAccess objects rendered for the agents; more are refused with ClusterLimitExceeded.")
	flag.IntVar(&opts.maxRenderedBytes, "max-rendered-bytes", render.DefaultClusterLimits.MaxBytes,
		"Bound on the encoded size of all rendered grants together, which the manager holds in memory.")
	flag.IntVar(&opts.maxNodeGrants, "max-node-grants", render.DefaultClusterLimits.MaxNodeGrants,
		"Most rendered grants one node's agent receives (those that may select the node); a grant that would take a node past it is refused with ClusterLimitExceeded.")
	flag.IntVar(&opts.maxNodeBytes, "max-node-rendered-bytes", render.DefaultClusterLimits.MaxNodeBytes,
		"Bound on the encoded size of the rendered grants one node's agent receives and holds in memory.")
	flag.IntVar(&opts.maxAccountBytes, "max-account-key-bytes", render.DefaultClusterLimits.MaxAccountBytes,
		"Bound on the key-line bytes the grants selecting one node give one account name, which that node writes into one file (the agent writes at most 8 MiB per file).")
	flag.BoolVar(&opts.allowRoot, "allow-root-user", false,
		"Allow NodeAccess objects to grant keys to the root account.")
	flag.IntVar(&opts.minRSABits, "min-rsa-bits", keypolicy.DefaultMinRSABits,
		"Smallest RSA key size accepted, in bits.")
	flag.BoolVar(&opts.allowCertificates, "allow-certificates", false,
		"Accept OpenSSH certificates as keys.")
	flag.DurationVar(&opts.revocationTimeout, "revocation-timeout", 5*time.Minute,
		"How long a deleted NodeAccess waits for every live node to confirm its keys are gone.")
	flag.Float64Var(&opts.apiQPS, "kube-api-qps", 100,
		"Requests per second the manager may send to the API server (its writes grow with changes, never with nodes).")
	flag.IntVar(&opts.apiBurst, "kube-api-burst", 200, "Burst above --kube-api-qps.")
	flag.DurationVar(&opts.statusDelay, "status-delay", time.Second,
		"Node reports within this window are folded into one status update.")
	flag.Float64Var(&opts.statusWrites, "status-writes-per-second", controllers.DefaultStatusWritesPerSecond,
		"Budget of the status writes that node reports cause, over all NodeAccess: with more NodeAccess than budget × --status-delay, each one's reports are folded over NodeAccess/budget seconds (at most 40 s) instead. 0: --status-delay alone.")
	flag.DurationVar(&opts.reportStaleAfter, "report-stale-after", controllers.DefaultReportStaleAfter,
		"A node report whose heartbeat is older counts in nodeaccess_nodes_without_report (agents renew it every 10 minutes).")
	flag.Float64Var(&opts.reportWrites, "report-writes-per-second", controllers.DefaultReportWritesPerSecond,
		"Budget of the nodes' report writes under sustained churn: the manager asks every agent to write a changed report at most once per nodes/budget seconds, in 5 s steps, at most 2 minutes; an interval longer than 5 s also spreads the nodes' first reports after a change over it. 0: agents keep their own --report-interval.")
	// With OLM, a Subscription's spec.config sets environment variables, not arguments.
	flag.BoolVar(&opts.monitoring, "install-monitoring", true,
		"Install the alerts (PrometheusRule) and the ServiceMonitor in the operator's namespace while the Prometheus operator's CRDs are served.")
	flag.StringVar(&opts.monitoringLabels, "monitoring-labels", "",
		"Labels added to the PrometheusRule and ServiceMonitor, for a Prometheus that selects them by label, for example release=monitoring.")
	flag.DurationVar(&opts.monitoringRecheck, "monitoring-recheck", controllers.DefaultMonitoringRecheck,
		"How often the manager looks again for the Prometheus operator's CRDs while they are not served.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.CommandLine.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage of %s:\n", os.Args[0])
		flag.PrintDefaults()
		fmt.Fprintln(flag.CommandLine.Output(), flagenv.Usage(envPrefix))
	}
	flag.Parse()
	if err := flagenv.Apply(flag.CommandLine, envPrefix, nil); err != nil {
		return err
	}

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(nav1.AddToScheme(scheme))
	utilruntime.Must(operatorsv2.AddToScheme(scheme))

	var tlsOpts []func(*tls.Config)
	if !opts.enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{
		BindAddress:   opts.metricsAddr,
		SecureServing: opts.metricsSecure,
		TLSOpts:       tlsOpts,
	}
	if opts.metricsSecure {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}

	if opts.namespace == "" {
		return fmt.Errorf("--namespace (or $POD_NAMESPACE) is required")
	}
	if opts.nodeSSHDPort < 0 || opts.nodeSSHDPort > 65535 {
		return fmt.Errorf("--node-sshd-port %d is not between 0 and 65535", opts.nodeSSHDPort)
	}
	var homeRoots []string
	for _, r := range strings.Split(opts.homeRoots, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		if err := nodewriter.CheckHomeRoot(r); err != nil {
			return fmt.Errorf("--home-roots: %w", err)
		}
		homeRoots = append(homeRoots, r)
	}
	if opts.reportStaleAfter <= 0 || opts.monitoringRecheck <= 0 {
		return fmt.Errorf("--report-stale-after and --monitoring-recheck must be positive")
	}
	if opts.reportWrites < 0 || math.IsNaN(opts.reportWrites) || math.IsInf(opts.reportWrites, 0) {
		return fmt.Errorf("--report-writes-per-second must be zero or a positive number")
	}
	if opts.statusWrites < 0 || math.IsNaN(opts.statusWrites) || math.IsInf(opts.statusWrites, 0) {
		return fmt.Errorf("--status-writes-per-second must be zero or a positive number")
	}
	if opts.statusWrites == 0 {
		opts.statusWrites = -1 // not paced
	}
	if opts.reportWrites == 0 {
		opts.reportWrites = -1 // none published
	}
	monitoringLabels, err := labels.ConvertSelectorToLabelsMap(opts.monitoringLabels)
	if err != nil {
		return fmt.Errorf("--monitoring-labels: %w", err)
	}
	var sshdLogs []string
	for _, p := range strings.Split(opts.sshdLogs, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if err := agentdaemonset.CheckSSHDLog(p); err != nil {
			return fmt.Errorf("--sshd-logs: %w", err)
		}
		sshdLogs = append(sshdLogs, p)
	}
	if (opts.trackLogins || opts.endSessions) && len(sshdLogs) == 0 {
		return fmt.Errorf("--track-logins and --end-sessions-on-revoke need --sshd-logs")
	}
	limits := render.ClusterLimits{
		MaxGrants: opts.maxGrants, MaxBytes: opts.maxRenderedBytes,
		MaxNodeGrants: opts.maxNodeGrants, MaxNodeBytes: opts.maxNodeBytes, MaxAccountBytes: opts.maxAccountBytes,
	}
	if limits.MaxGrants <= 0 || limits.MaxBytes <= 0 || limits.MaxNodeGrants <= 0 || limits.MaxNodeBytes <= 0 || limits.MaxAccountBytes <= 0 {
		return fmt.Errorf("--max-grants, --max-rendered-bytes, --max-node-grants, --max-node-rendered-bytes and --max-account-key-bytes must be positive")
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(opts.apiQPS), opts.apiBurst
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        opts.probeAddr,
		PprofBindAddress:              opts.pprofAddr,
		LeaderElection:                opts.leaderElect,
		LeaderElectionID:              "nodeaccess-operator.nodeaccess.io",
		LeaderElectionNamespace:       opts.namespace,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(opts.namespace),
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}

	if opts.agentImage == "" {
		log.Info("Not managing the agent DaemonSet: no agent image (set RELATED_IMAGE_AGENT or --agent-image)")
	}
	if err := controllers.Setup(mgr, controllers.Options{
		Namespace:           opts.namespace,
		AgentImage:          opts.agentImage,
		AgentMaxUnavailable: intstr.Parse(opts.agentMaxUnavail),
		OperatorDeployment:  opts.operatorDeployment,
		NodeSSHDPort:        int32(opts.nodeSSHDPort),
		HomeRoots:           homeRoots,
		TrackLogins:         opts.trackLogins || opts.endSessions,
		SSHDLogs:            sshdLogs,
		EndSessionsOnRevoke: opts.endSessions,
		AgentRestartInPlace: opts.restartInPlace,
		Limits:              limits,
		Render: render.Options{
			Policy:    keypolicy.Policy{MinRSABits: opts.minRSABits, AllowCertificates: opts.allowCertificates},
			AllowRoot: opts.allowRoot,
		},
		RevocationTimeout:     opts.revocationTimeout,
		StatusDelay:           opts.statusDelay,
		StatusWritesPerSecond: opts.statusWrites,
		ReportStaleAfter:      opts.reportStaleAfter,
		ReportWritesPerSecond: opts.reportWrites,
		Monitoring:            opts.monitoring,
		MonitoringLabels:      monitoringLabels,
		MonitoringRecheck:     opts.monitoringRecheck,
		// OLM sets this; the manager then tells OLM when an upgrade must wait.
		OperatorCondition: os.Getenv("OPERATOR_CONDITION_NAME"),
	}); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("adding health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("adding readiness check: %w", err)
	}

	log.Info("Starting manager")
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		return fmt.Errorf("running manager: %w", err)
	}
	return nil
}

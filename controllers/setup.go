package controllers

import (
	"fmt"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"

	"github.com/nodeaccess/nodeaccess-operator/internal/agentdaemonset"
	"github.com/nodeaccess/nodeaccess-operator/internal/render"
)

// Options configure the manager's controllers.
type Options struct {
	// Namespace is the operator's namespace.
	Namespace string
	// AgentImage is the agent DaemonSet's image; empty disables the DaemonSet controller.
	AgentImage string
	// AgentMaxUnavailable bounds the DaemonSet's rolling updates.
	AgentMaxUnavailable intstr.IntOrString
	// OperatorDeployment owns the DaemonSet.
	OperatorDeployment string
	// NodeSSHDPort is the port of the nodes' sshd, which agents probe for
	// host keys (0: they do not).
	NodeSSHDPort int32
	// HomeRoots are the host directories under which agents write homes;
	// empty means /home.
	HomeRoots []string
	// TrackLogins makes the agents report the key logins their node's sshd
	// logs in SSHDLogs (empty: agentdaemonset.DefaultSSHDLogs).
	TrackLogins bool
	SSHDLogs    []string
	// EndSessionsOnRevoke makes the agents end the sessions whose key was
	// revoked; it implies TrackLogins.
	EndSessionsOnRevoke bool
	// AgentRestartInPlace makes an agent's clean exit restart its pod's
	// containers in place (see agentdaemonset.Options.RestartInPlace).
	AgentRestartInPlace bool
	// Render holds the key policy.
	Render render.Options
	// RevocationTimeout bounds the wait for nodes to confirm a revocation.
	RevocationTimeout time.Duration
	// StatusDelay folds bursts of node reports into one status write.
	StatusDelay time.Duration
	// StatusWritesPerSecond is the budget of report-driven status writes
	// over all NodeAccess (NodeAccessReconciler.statusDelay); zero means
	// DefaultStatusWritesPerSecond, and a negative budget none.
	StatusWritesPerSecond float64
	// ForbiddenRecheck is how often a NodeAccess naming a Secret the manager
	// may not read checks again; zero means 30 s.
	ForbiddenRecheck time.Duration
	// Limits bound what the agents hold over all grants; zero means
	// render.DefaultClusterLimits.
	Limits render.ClusterLimits
	// OperatorCondition names the OperatorCondition OLM created for this
	// operator ($OPERATOR_CONDITION_NAME); empty when not installed by OLM.
	OperatorCondition string
	// ReportStaleAfter is how old a node report's heartbeat may be before
	// the node counts as not reporting; zero means DefaultReportStaleAfter.
	ReportStaleAfter time.Duration
	// Monitoring installs the PrometheusRule and ServiceMonitor while the
	// Prometheus operator's CRDs are served.
	Monitoring bool
	// MonitoringLabels are added to both objects.
	MonitoringLabels map[string]string
	// FilterSwitchGrace is how long agents are given to stop filtering
	// before rendered grants written by an earlier manager are labelled;
	// zero means DefaultFilterSwitchGrace.
	FilterSwitchGrace time.Duration
	// FilterSettleDelay is how long new keys of the filter vocabulary wait
	// before they are published; zero means DefaultFilterSettleDelay.
	FilterSettleDelay time.Duration
	// ReportWritesPerSecond is the budget of the nodes' report writes under
	// churn, which sets the report interval published to the agents
	// (ReportPacingReconciler); zero means DefaultReportWritesPerSecond, and
	// a negative budget publishes none.
	ReportWritesPerSecond float64
	// MonitoringRecheck is how often the CRDs are looked for while missing;
	// zero means DefaultMonitoringRecheck.
	MonitoringRecheck time.Duration
}

// Setup registers every controller of the manager.
func Setup(mgr ctrl.Manager, opts Options) error {
	na := &NodeAccessReconciler{
		Client:                mgr.GetClient(),
		APIReader:             mgr.GetAPIReader(),
		Recorder:              mgr.GetEventRecorder("nodeaccess-manager"),
		Namespace:             opts.Namespace,
		Render:                opts.Render,
		RevocationTimeout:     opts.RevocationTimeout,
		StatusDelay:           opts.StatusDelay,
		ForbiddenRecheck:      opts.ForbiddenRecheck,
		StatusWritesPerSecond: opts.StatusWritesPerSecond,
		Limits:                opts.Limits,
		filter:                &nodeFilter{reader: mgr.GetAPIReader(), namespace: opts.Namespace},
	}
	if na.StatusWritesPerSecond == 0 {
		na.StatusWritesPerSecond = DefaultStatusWritesPerSecond
	}
	if err := na.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the NodeAccess controller: %w", err)
	}
	// The vocabulary of the agents' watch filter, shared with the writes of the rendered grants.
	nf := &NodeFilterReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Namespace: opts.Namespace,
		SwitchGrace: opts.FilterSwitchGrace, SettleDelay: opts.FilterSettleDelay, filter: na.filter,
	}
	if err := nf.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the node filter controller: %w", err)
	}
	pacing := &ReportPacingReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Namespace: opts.Namespace,
		WritesPerSecond: opts.ReportWritesPerSecond,
	}
	if pacing.WritesPerSecond == 0 {
		pacing.WritesPerSecond = DefaultReportWritesPerSecond
	}
	if err := pacing.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the report pacing controller: %w", err)
	}
	policy := &ReportPolicyReconciler{Client: mgr.GetClient(), Namespace: opts.Namespace}
	if err := policy.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the report policy controller: %w", err)
	}
	if opts.OperatorCondition != "" {
		up := &UpgradeableReconciler{
			Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
			Namespace: opts.Namespace, ConditionName: opts.OperatorCondition,
		}
		if err := up.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up the Upgradeable controller: %w", err)
		}
	}
	am := &AgentMetricsReconciler{Client: mgr.GetClient(), Namespace: opts.Namespace, StaleAfter: opts.ReportStaleAfter, Delay: opts.StatusDelay}
	if err := am.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the agent metrics controller: %w", err)
	}
	if opts.Monitoring {
		if err := SetupMonitoring(mgr, opts); err != nil {
			return err
		}
	}
	if opts.AgentImage == "" {
		return nil
	}
	ds := &AgentDaemonSetReconciler{
		Client: mgr.GetClient(),
		Options: agentdaemonset.Options{
			Namespace: opts.Namespace, Image: opts.AgentImage, MaxUnavailable: opts.AgentMaxUnavailable,
			SSHDPort: opts.NodeSSHDPort, HomeRoots: opts.HomeRoots, AllowRoot: opts.Render.AllowRoot,
			TrackLogins: opts.TrackLogins, SSHDLogs: opts.SSHDLogs, EndSessions: opts.EndSessionsOnRevoke,
			RestartInPlace: opts.AgentRestartInPlace,
		},
		OwnerDeployment: opts.OperatorDeployment,
	}
	if err := ds.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the agent DaemonSet controller: %w", err)
	}
	return nil
}

// CacheOptions limit the manager's cache to what it needs: the operator
// namespace's own objects. Secret and ConfigMap data is never cached: only
// their metadata is watched, and their content read when a grant names them.
func CacheOptions(namespace string) cache.Options {
	inNamespace := cache.ByObject{Namespaces: map[string]cache.Config{namespace: {}}}
	ownPolicy := cache.ByObject{Field: fields.OneTermEqualSelector("metadata.name", agentdaemonset.ReportPolicyName)}
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&nav1.RenderedNodeAccess{}:                                  inNamespace,
		&appsv1.DaemonSet{}:                                         inNamespace,
		&appsv1.Deployment{}:                                        inNamespace,
		&admissionregistrationv1.ValidatingAdmissionPolicy{}:        ownPolicy,
		&admissionregistrationv1.ValidatingAdmissionPolicyBinding{}: ownPolicy,
	}}
}

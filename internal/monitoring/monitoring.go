// Package monitoring holds what the manager installs for a Prometheus run
// by the Prometheus operator: the alerting rules over the manager's metrics
// (a PrometheusRule) and the ServiceMonitor that scrapes them. It is pure:
// objects from options. The manager applies them (controllers/monitoring.go)
// and the tests run promtool on the very same rules.
package monitoring

import (
	"fmt"
	"maps"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const (
	// RuleName names the PrometheusRule.
	RuleName = "nodeaccess-alerts"
	// ServiceMonitorName names the ServiceMonitor.
	ServiceMonitorName = "nodeaccess-controller-manager-metrics"
	// TokenFile is where Prometheus finds its own service account token,
	// which it presents to the manager's metrics endpoint.
	TokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	// RunbookBase is the page documenting every alert; each alert's
	// runbook_url is this with the alert's name, in lower case, as anchor.
	RunbookBase = "https://github.com/nodeaccess/nodeaccess-operator/blob/main/docs/usage.md"
)

// MetricsServiceLabels select the manager's metrics Service
// (config/install/metrics_service.yaml) and nothing else in a namespace
// that OLM may share with other operators.
var MetricsServiceLabels = map[string]string{
	"app.kubernetes.io/name":      "nodeaccess-operator",
	"app.kubernetes.io/component": "metrics",
}

// Options say where the objects go.
type Options struct {
	// Namespace is the operator's namespace.
	Namespace string
	// Labels are added to both objects, for the label selectors of a
	// Prometheus that selects rules and monitors by label (for example
	// release=<name>).
	Labels map[string]string
}

func (o Options) labels() map[string]string {
	l := maps.Clone(o.Labels)
	if l == nil {
		l = map[string]string{}
	}
	l["app.kubernetes.io/name"] = "nodeaccess-operator"
	l["app.kubernetes.io/managed-by"] = "nodeaccess-operator"
	return l
}

// PrometheusRule is the alerting rules, as the manager applies them.
func PrometheusRule(o Options) *monitoringv1.PrometheusRule {
	return &monitoringv1.PrometheusRule{
		TypeMeta:   metav1.TypeMeta{APIVersion: monitoringv1.SchemeGroupVersion.String(), Kind: monitoringv1.PrometheusRuleKind},
		ObjectMeta: metav1.ObjectMeta{Name: RuleName, Namespace: o.Namespace, Labels: o.labels()},
		Spec:       monitoringv1.PrometheusRuleSpec{Groups: Groups()},
	}
}

// ServiceMonitor scrapes the manager's metrics Service over HTTPS with
// Prometheus's own service account token, which the manager has the API
// server check (TokenReview, then SubjectAccessReview on /metrics: the
// account needs the nodeaccess-metrics-reader ClusterRole). The manager's
// certificate is self-signed at start, so it cannot be verified.
func ServiceMonitor(o Options) *monitoringv1.ServiceMonitor {
	https := monitoringv1.SchemeHTTPS
	return &monitoringv1.ServiceMonitor{
		TypeMeta:   metav1.TypeMeta{APIVersion: monitoringv1.SchemeGroupVersion.String(), Kind: monitoringv1.ServiceMonitorsKind},
		ObjectMeta: metav1.ObjectMeta{Name: ServiceMonitorName, Namespace: o.Namespace, Labels: o.labels()},
		Spec: monitoringv1.ServiceMonitorSpec{
			Selector: metav1.LabelSelector{MatchLabels: maps.Clone(MetricsServiceLabels)},
			Endpoints: []monitoringv1.Endpoint{{
				Port:            "https",
				Scheme:          &https,
				Path:            "/metrics",
				BearerTokenFile: TokenFile,
				HTTPConfigWithProxyAndTLSFiles: monitoringv1.HTTPConfigWithProxyAndTLSFiles{
					HTTPConfigWithTLSFiles: monitoringv1.HTTPConfigWithTLSFiles{
						TLSConfig: &monitoringv1.TLSConfig{SafeTLSConfig: monitoringv1.SafeTLSConfig{InsecureSkipVerify: ptr(true)}},
					},
				},
			}},
		},
	}
}

// RuleFile is Groups as a Prometheus rule file, for promtool.
func RuleFile() ([]byte, error) {
	data, err := yaml.Marshal(map[string]any{"groups": Groups()})
	if err != nil {
		return nil, fmt.Errorf("encoding the rule file: %w", err)
	}
	return data, nil
}

// Severities of the alerts.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// alert is one alerting rule, before its runbook link is added.
type alert struct {
	name, expr, forDuration, severity, summary, description string
}

// reasonOf is a template printing the current reason of a NodeAccess's
// condition, read at evaluation time, so that a change of reason does not
// make a new alert (and restart its "for").
func reasonOf(condType string) string {
	return `{{ with printf "nodeaccess_condition{nodeaccess=%q,type='` + condType +
		`'}" $labels.nodeaccess | query }}{{ . | first | label "reason" }}{{ else }}unknown{{ end }}`
}

// deliberate are the reasons of Ready=False that someone chose: the
// grant is suspended, expired, being deleted (its own alert watches the
// revocation), or selects no node (a pool scaled to zero).
const deliberate = `Suspended|Expired|Revoking|NoNodesSelected`

// notSuspended drops the grants that are suspended on purpose.
const notSuspended = ` unless on (nodeaccess) nodeaccess_condition{type="Ready",reason="Suspended"}`

func grantAlerts() []alert {
	return []alert{{
		name:        "NodeAccessDegraded",
		expr:        `max by (nodeaccess) (nodeaccess_condition{type="Degraded"}) == 1`,
		forDuration: "10m",
		severity:    SeverityWarning,
		summary:     "NodeAccess {{ $labels.nodeaccess }} is Degraded (" + reasonOf("Degraded") + ").",
		description: "Part of NodeAccess {{ $labels.nodeaccess }} cannot be served for 10 minutes. " +
			"kubectl describe nodeaccess {{ $labels.nodeaccess }} says why (status.refusedKeys, status.failingNodes).",
	}, {
		name:        "NodeAccessNotReady",
		expr:        `max by (nodeaccess) (nodeaccess_condition{type="Ready",reason!~"` + deliberate + `"}) == 0`,
		forDuration: "30m",
		severity:    SeverityWarning,
		summary:     "NodeAccess {{ $labels.nodeaccess }} is not Ready (" + reasonOf("Ready") + ").",
		description: "NodeAccess {{ $labels.nodeaccess }} has not been Ready for 30 minutes, though not suspended, expired or deleted: " +
			"its keys are not in force on every node it selects. kubectl nodeaccess status {{ $labels.nodeaccess }} shows each node.",
	}, {
		name:        "NodeAccessNodesOutOfSync",
		expr:        `max by (nodeaccess) (nodeaccess_nodes_selected - nodeaccess_nodes_in_sync) > 0`,
		forDuration: "15m",
		severity:    SeverityWarning,
		summary:     "{{ $value }} nodes have not applied NodeAccess {{ $labels.nodeaccess }}.",
		description: "{{ $value }} nodes selected by NodeAccess {{ $labels.nodeaccess }} have not applied its current version " +
			"(for a suspended or expired grant: not proven its keys removed) for 15 minutes. kubectl nodeaccess status {{ $labels.nodeaccess }} names them.",
	}, {
		name:        "NodeAccessGrantExpiringSoon",
		expr:        `(min by (nodeaccess) (nodeaccess_expiry_timestamp_seconds) - time() < 86400 > 0)` + notSuspended,
		severity:    SeverityInfo,
		summary:     "NodeAccess {{ $labels.nodeaccess }} expires in {{ $value | humanizeDuration }}.",
		description: "At spec.expiresAt every node removes the keys of NodeAccess {{ $labels.nodeaccess }}; extend it if the access is still needed.",
	}, {
		name: "NodeAccessKeyExpiringSoon",
		expr: `(min by (nodeaccess) (nodeaccess_next_expiry_timestamp_seconds) - time() < 86400 > 0)` +
			` unless on (nodeaccess) (min by (nodeaccess) (nodeaccess_next_expiry_timestamp_seconds) >= on (nodeaccess) min by (nodeaccess) (nodeaccess_expiry_timestamp_seconds))` +
			notSuspended,
		severity:    SeverityInfo,
		summary:     "A key of NodeAccess {{ $labels.nodeaccess }} expires in {{ $value | humanizeDuration }}.",
		description: "A key of NodeAccess {{ $labels.nodeaccess }} expires before the grant (status.nextExpiry); then every node removes it. Replace it, or extend its expiresAt.",
	}}
}

func operatorAlerts() []alert {
	return []alert{{
		name:        "NodeAccessAgentsMissing",
		expr:        `max(nodeaccess_agents_desired - nodeaccess_agents_ready) > 0`,
		forDuration: "15m",
		severity:    SeverityWarning,
		summary:     "{{ $value }} nodes have no ready nodeaccess agent.",
		description: "For 15 minutes the agent DaemonSet has had {{ $value }} fewer pods ready than nodes to run on: there, keys are not added, removed or repaired. " +
			"See the nodeaccess-agent DaemonSet and its pods in the operator's namespace.",
	}, {
		name:        "NodeAccessNodesNotReporting",
		expr:        `max by (reason) (nodeaccess_nodes_without_report) > 0`,
		forDuration: "15m",
		severity:    SeverityWarning,
		summary:     "{{ $value }} Linux nodes have no fresh NodeAccessReport ({{ $labels.reason }}).",
		description: "For 15 minutes {{ $value }} Linux nodes have had no report from their agent ({{ $labels.reason }}): what they hold is unknown. " +
			"kubectl get nodeaccessreports shows each node's heartbeat.",
	}, {
		name:     "NodeAccessRevocationUnconfirmed",
		expr:     `sum(increase(nodeaccess_revocations_unconfirmed_total[1h])) > 0`,
		severity: SeverityCritical,
		summary:  "A deleted NodeAccess was released before every node proved its keys gone.",
		description: "In the last hour a deleted NodeAccess was released at --revocation-timeout with nodes that had not proven its keys removed: they may still grant access. " +
			"kubectl get events -A --field-selector reason=RevocationUnconfirmed names the nodes.",
	}, {
		name:        "NodeAccessManagerDown",
		expr:        `absent(nodeaccess_grants)`,
		forDuration: "10m",
		severity:    SeverityCritical,
		summary:     "No metrics from the nodeaccess-operator manager for 10 minutes.",
		description: "The manager is not running or cannot be scraped: no grant is rendered, and deleting one revokes nothing (agents still enforce expiry). " +
			"Check its Deployment, and that Prometheus may read its metrics (nodeaccess-metrics-reader).",
	}}
}

// Groups are the rule groups of the PrometheusRule.
func Groups() []monitoringv1.RuleGroup {
	return []monitoringv1.RuleGroup{
		{Name: "nodeaccess.grants", Rules: rules(grantAlerts())},
		{Name: "nodeaccess.operator", Rules: rules(operatorAlerts())},
	}
}

func rules(alerts []alert) []monitoringv1.Rule {
	out := make([]monitoringv1.Rule, 0, len(alerts))
	for _, a := range alerts {
		r := monitoringv1.Rule{
			Alert:  a.name,
			Expr:   intstr.FromString(a.expr),
			Labels: map[string]string{"severity": a.severity},
			Annotations: map[string]string{
				"summary":     a.summary,
				"description": a.description,
				"runbook_url": RunbookURL(a.name),
			},
		}
		if a.forDuration != "" {
			d := monitoringv1.Duration(a.forDuration)
			r.For = &d
		}
		out = append(out, r)
	}
	return out
}

// RunbookURL is where an alert's runbook is: its section of docs/usage.md.
func RunbookURL(alert string) string {
	return RunbookBase + "#" + anchor(alert)
}

// anchor is the heading anchor a Markdown renderer gives a heading that is
// the alert's name: its lower case.
func anchor(name string) string {
	b := []byte(name)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func ptr[T any](v T) *T { return &v }

package controllers

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// Metrics on controller-runtime's registry. Per-grant series are labelled by
// the NodeAccess name only: one series per team, removed with the object.
var (
	grantsTotal = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "nodeaccess_grants",
		Help: "NodeAccess objects known to the manager.",
	})
	keysGranted = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodeaccess_keys_granted",
		Help: "Keys in force per NodeAccess: accepted, resolved and not expired.",
	}, []string{"nodeaccess"})
	nodesSelected = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodeaccess_nodes_selected",
		Help: "Nodes selected per NodeAccess.",
	}, []string{"nodeaccess"})
	nodesInSync = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodeaccess_nodes_in_sync",
		Help: "Selected nodes that applied the current state of each NodeAccess.",
	}, []string{"nodeaccess"})
	keysRefused = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodeaccess_keys_refused",
		Help: "Keys and accounts refused per NodeAccess.",
	}, []string{"nodeaccess"})
	revocationsUnconfirmed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nodeaccess_revocations_unconfirmed_total",
		Help: "Deleted NodeAccess objects released after --revocation-timeout with nodes that had not proven their keys gone.",
	})
	loginsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodeaccess_logins_total",
		Help: "Key logins the nodes' sshd logged with keys of each NodeAccess, by account and by whether the node's agent proved the line came from sshd.",
	}, []string{"nodeaccess", "account", "trusted"})
	propagationSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "nodeaccess_propagation_seconds",
		Help:    "Time from the manager rendering a NodeAccess change to the last selected node reporting it applied.",
		Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300},
	})
	// The alerts read these (internal/monitoring). Labels stay bounded: a
	// NodeAccess name, a condition type and one of the reasons of
	// api/v1alpha1; never a node name.
	condition = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodeaccess_condition",
		Help: "Conditions of each NodeAccess (Ready, Progressing, Degraded): 1 when True, 0 when False, labelled with the current reason.",
	}, []string{"nodeaccess", "type", "reason"})
	expiryTimestamp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodeaccess_expiry_timestamp_seconds",
		Help: "When the whole grant expires (spec.expiresAt), in seconds since the epoch; absent for a grant without expiry.",
	}, []string{"nodeaccess"})
	nextExpiryTimestamp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodeaccess_next_expiry_timestamp_seconds",
		Help: "The earliest expiry still to come, of a key or of the grant (status.nextExpiry), in seconds since the epoch; absent when none.",
	}, []string{"nodeaccess"})
	agentsDesired = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "nodeaccess_agents_desired",
		Help: "Nodes that should run an agent: the agent DaemonSet's desiredNumberScheduled (0 without the DaemonSet).",
	})
	agentsReady = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "nodeaccess_agents_ready",
		Help: "Agent pods ready: the agent DaemonSet's numberReady.",
	})
	nodesWithoutReport = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodeaccess_nodes_without_report",
		Help: "Linux nodes whose agent is not reporting: no NodeAccessReport of the current Node (reason NoReport), or a heartbeat older than --report-stale-after (StaleReport).",
	}, []string{"reason"})
)

// Reasons of nodeaccess_nodes_without_report.
const (
	noReportReason    = "NoReport"
	staleReportReason = "StaleReport"
)

func init() {
	metrics.Registry.MustRegister(grantsTotal, keysGranted, nodesSelected, nodesInSync, keysRefused, revocationsUnconfirmed, loginsTotal, propagationSeconds,
		condition, expiryTimestamp, nextExpiryTimestamp, agentsDesired, agentsReady, nodesWithoutReport)
}

// propagation remembers when each rendering was written, until every
// selected node reports it.
type propagation struct {
	mu      sync.Mutex
	pending map[string]pendingRender // by NodeAccess UID
}

type pendingRender struct {
	hash string
	at   time.Time
}

func (p *propagation) rendered(uid, hash string, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending == nil {
		p.pending = map[string]pendingRender{}
	}
	p.pending[uid] = pendingRender{hash, at}
}

// synced observes the propagation time of hash once every selected node holds it.
func (p *propagation) synced(uid, hash string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r, ok := p.pending[uid]; ok && r.hash == hash {
		propagationSeconds.Observe(now.Sub(r.at).Seconds())
		delete(p.pending, uid)
	}
}

func (p *propagation) forget(uid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.pending, uid)
}

// recordMetrics sets the per-grant gauges from a computed status.
func (r *NodeAccessReconciler) recordMetrics(name, uid, hash string, selected, inSync, keys int32, refused int, now time.Time) {
	keysGranted.WithLabelValues(name).Set(float64(keys))
	nodesSelected.WithLabelValues(name).Set(float64(selected))
	nodesInSync.WithLabelValues(name).Set(float64(inSync))
	keysRefused.WithLabelValues(name).Set(float64(refused))
	if inSync == selected {
		r.propagation.synced(uid, hash, now)
	}
}

// forgetMetrics removes a deleted grant's series.
func (r *NodeAccessReconciler) forgetMetrics(name, uid string) {
	for _, v := range []*prometheus.GaugeVec{keysGranted, nodesSelected, nodesInSync, keysRefused, expiryTimestamp, nextExpiryTimestamp} {
		v.DeleteLabelValues(name)
	}
	conditions.forget(name)
	loginsTotal.DeletePartialMatch(prometheus.Labels{"nodeaccess": name})
	r.logins.forget(uid)
	r.propagation.forget(uid)
}

// recordStatus sets the gauges the alerts read from the status about to be
// written: its conditions and expiries.
func recordStatus(na *nav1.NodeAccess, st *nav1.NodeAccessStatus) {
	for _, c := range st.Conditions {
		conditions.set(na.Name, c)
	}
	setTimestamp(expiryTimestamp, na.Name, na.Spec.ExpiresAt)
	setTimestamp(nextExpiryTimestamp, na.Name, st.NextExpiry)
}

func setTimestamp(v *prometheus.GaugeVec, name string, t *metav1.Time) {
	if t == nil {
		v.DeleteLabelValues(name)
		return
	}
	v.WithLabelValues(name).Set(float64(t.Unix()))
}

// conditions keeps one nodeaccess_condition series per NodeAccess and
// condition type. When the reason changes, the new series is set before
// the old one is deleted, so a scrape never finds the condition missing
// (which would restart the alerts' "for").
var conditions = conditionSeries{reasons: map[string]map[string]string{}}

type conditionSeries struct {
	mu sync.Mutex
	// reasons maps a NodeAccess name and a condition type to the reason of its series.
	reasons map[string]map[string]string
}

func (c *conditionSeries) set(name string, cond metav1.Condition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	value := 0.0
	if cond.Status == metav1.ConditionTrue {
		value = 1
	}
	condition.WithLabelValues(name, cond.Type, cond.Reason).Set(value)
	byType := c.reasons[name]
	if byType == nil {
		byType = map[string]string{}
		c.reasons[name] = byType
	}
	if old, ok := byType[cond.Type]; ok && old != cond.Reason {
		condition.DeleteLabelValues(name, cond.Type, old)
	}
	byType[cond.Type] = cond.Reason
}

func (c *conditionSeries) forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	condition.DeletePartialMatch(prometheus.Labels{"nodeaccess": name})
	delete(c.reasons, name)
}

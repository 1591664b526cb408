package controllers

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
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
)

func init() {
	metrics.Registry.MustRegister(grantsTotal, keysGranted, nodesSelected, nodesInSync, keysRefused, revocationsUnconfirmed, loginsTotal, propagationSeconds)
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
	for _, v := range []*prometheus.GaugeVec{keysGranted, nodesSelected, nodesInSync, keysRefused} {
		v.DeleteLabelValues(name)
	}
	loginsTotal.DeletePartialMatch(prometheus.Labels{"nodeaccess": name})
	r.logins.forget(uid)
	r.propagation.forget(uid)
}

package nodefilter

import (
	"math"
	"time"
)

// Report pacing. Every node's report write costs the API server the same
// whatever it says (a custom resource's decoding, validation and managed
// fields: about 12 ms of CPU on the bench's machine), and under sustained
// churn every node changes and writes once per agent --report-interval. So
// the manager asks for a longer interval as the cluster grows, in the same
// ConfigMap as the vocabulary, which every agent already watches: with N
// nodes and a budget of B report writes per second, N/B, in whole
// ReportIntervalSteps, at most MaxReportInterval. An agent uses the longer
// of its own interval and the published one; when the published one is
// longer than one ReportIntervalStep (and than its own), it also spreads
// its first report after a change over it, so one change reaching every
// node does not make them all write at once.
const (
	// ReportIntervalField is the ConfigMap's data key of the published
	// report interval, a Go duration ("20s").
	ReportIntervalField = "reportInterval"
	// ReportIntervalStep is the unit of the published interval: node
	// counts between two steps publish the same value.
	ReportIntervalStep = 5 * time.Second
	// MaxReportInterval is the longest interval published, and the longest
	// an agent accepts: the lag of a churning node's report behind its
	// files stays bounded whatever the ConfigMap says.
	MaxReportInterval = 2 * time.Minute
)

// ReportInterval is the interval that keeps the nodes' report writes within
// writesPerSecond when every node changes continuously: nodes/writesPerSecond
// rounded up to a whole step (one step for no node at all), at most
// MaxReportInterval; 0 when the budget is not positive, which publishes
// nothing.
func ReportInterval(nodes int, writesPerSecond float64) time.Duration {
	if writesPerSecond <= 0 {
		return 0
	}
	steps := math.Ceil(float64(max(nodes, 1)) / writesPerSecond / ReportIntervalStep.Seconds())
	return min(time.Duration(steps)*ReportIntervalStep, MaxReportInterval)
}

// NextReportInterval is what to publish after published, for nodes: longer
// at once when the cluster grows past it; shorter only when a step's worth
// of nodes more would still ask for less than published, so that a node
// count going up and down across a step does not rewrite the ConfigMap (and
// wake every agent) each time.
func NextReportInterval(published time.Duration, nodes int, writesPerSecond float64) time.Duration {
	want := ReportInterval(nodes, writesPerSecond)
	if want >= published {
		return want
	}
	margin := int(math.Ceil(max(writesPerSecond, 0) * ReportIntervalStep.Seconds()))
	if ReportInterval(nodes+margin, writesPerSecond) < published {
		return want
	}
	return published
}

// ParseReportInterval reads the published interval: a non-negative Go
// duration of at most MaxReportInterval. Anything else is not used (ok is
// false) and the agent keeps its own interval.
func ParseReportInterval(field string) (d time.Duration, ok bool) {
	if field == "" {
		return 0, false
	}
	d, err := time.ParseDuration(field)
	if err != nil || d < 0 || d > MaxReportInterval {
		return 0, false
	}
	return d, true
}

// FormatReportInterval is the ReportIntervalField of an interval.
func FormatReportInterval(d time.Duration) string { return d.String() }

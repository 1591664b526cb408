package main

import "time"

// ChurnSplit is where the churn's latency goes, per change, p50 and p99
// over the changes: from its schedule to its API call being sent (the
// driver's own lateness), the call itself, from the call to the manager's
// next write of the NodeAccess's rendered grant completing (the manager's
// part, from the audit log), and from that write to the last node of the
// pool showing the change in its file (delivery to the agents and their
// passes).
type ChurnSplit struct {
	IssueP50ms    float64 `json:"issue_p50_ms"`
	IssueP99ms    float64 `json:"issue_p99_ms"`
	CallP50ms     float64 `json:"call_p50_ms"`
	CallP99ms     float64 `json:"call_p99_ms"`
	ManagerP50ms  float64 `json:"manager_p50_ms"`
	ManagerP99ms  float64 `json:"manager_p99_ms"`
	DeliveryP50ms float64 `json:"delivery_p50_ms"`
	DeliveryP99ms float64 `json:"delivery_p99_ms"`
	// Unmatched counts changes with no rendered write after their call in
	// the audit log (a later change's write covered them, say).
	Unmatched int `json:"unmatched,omitempty"`
}

func splitChurn(changes []statusChange, waits []*wait, counts requestCounts) *ChurnSplit {
	var issue, call, manager, delivery []time.Duration
	s := &ChurnSplit{}
	for i, c := range changes {
		if c.sent.IsZero() {
			continue
		}
		issue = append(issue, c.sent.Sub(waits[i].from))
		call = append(call, c.returned.Sub(c.sent))
		written := counts.renderedAfter(c.name, c.sent)
		if written.IsZero() {
			s.Unmatched++
			continue
		}
		manager = append(manager, written.Sub(c.sent))
		delivery = append(delivery, c.filesAt.Sub(written))
	}
	s.IssueP50ms, _, s.IssueP99ms, _ = percentiles(issue)
	s.CallP50ms, _, s.CallP99ms, _ = percentiles(call)
	s.ManagerP50ms, _, s.ManagerP99ms, _ = percentiles(manager)
	s.DeliveryP50ms, _, s.DeliveryP99ms, _ = percentiles(delivery)
	return s
}

package controllers

import (
	"testing"
	"time"
)

// The reports of many NodeAccess are folded over a longer window, so that
// the status writes they cause stay within the budget.
func TestStatusDelayKeepsReportDrivenWritesWithinTheBudget(t *testing.T) {
	r := &NodeAccessReconciler{StatusDelay: time.Second, StatusWritesPerSecond: 25}
	for _, c := range []struct {
		grants int64
		want   time.Duration
	}{
		{0, time.Second},
		{25, time.Second}, // 25 writes a second at most already
		{100, 4 * time.Second},
		{500, 20 * time.Second},
		{5000, maxStatusDelay},
	} {
		r.grants.Store(c.grants)
		if got := r.statusDelay(); got != c.want {
			t.Errorf("%d NodeAccess: status delay %s, want %s", c.grants, got, c.want)
		}
		if w := float64(c.grants) / r.statusDelay().Seconds(); c.grants <= 1000 && w > r.StatusWritesPerSecond {
			t.Errorf("%d NodeAccess: up to %.0f status writes a second, past the budget", c.grants, w)
		}
	}
	r.StatusWritesPerSecond = -1
	r.grants.Store(500)
	if got := r.statusDelay(); got != time.Second {
		t.Errorf("not paced: status delay %s, want --status-delay", got)
	}
}

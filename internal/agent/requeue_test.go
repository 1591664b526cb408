package agent

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/desiredstate"
)

// An overdue heartbeat does not bring the next pass forward while its
// write is in flight (the write's end starts a pass) or while a failed one
// waits for its retry: otherwise the agent would run a pass every
// millisecond for as long as the API server held or refused the write.
func TestAnOverdueHeartbeatWaitsForTheWriteInFlightOrItsRetry(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	written := metav1.NewTime(now.Add(-3 * time.Second))
	a := &Agent{cfg: Config{Resync: time.Minute, Heartbeat: 2 * time.Second},
		report: &nav1.NodeAccessReportStatus{HeartbeatTime: &written}}
	if got := a.requeueAfter(desiredstate.Plan{}, nil, now); got != time.Millisecond {
		t.Fatalf("heartbeat overdue, no write in flight: next pass in %s, want at once (1ms)", got)
	}
	a.reporting = true
	if got := a.requeueAfter(desiredstate.Plan{}, nil, now); got != time.Minute {
		t.Errorf("heartbeat write in flight: next pass in %s, want the resync (1m0s)", got)
	}
	a.reporting, a.reportRetry = false, now.Add(800*time.Millisecond)
	if got := a.requeueAfter(desiredstate.Plan{}, nil, now); got != 800*time.Millisecond {
		t.Errorf("heartbeat write failed, retry in 800ms: next pass in %s", got)
	}
}

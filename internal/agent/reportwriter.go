package agent

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/types"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// firstBackoff is the wait after a failed pass or report write; it
// doubles at each failure in a row, up to the resync interval.
const firstBackoff = 50 * time.Millisecond

// nextBackoff is the wait after one more failure than the one that waited prev.
func nextBackoff(prev, resync time.Duration) time.Duration {
	return min(max(2*prev, firstBackoff), resync)
}

// reportJob is one write of the node's report: the status a pass built,
// and whether the object must be (re)created first, for the Node of
// nodeUID.
type reportJob struct {
	st      nav1.NodeAccessReportStatus
	create  bool
	nodeUID types.UID
	// at is the pass's time: the write's time for the report interval.
	at time.Time
}

// reportOutcome is a finished job: created is set when the object was
// (re)created, whatever became of the status write.
type reportOutcome struct {
	job     reportJob
	created bool
	err     error
}

// reportWriter writes the node's report in a goroutine of its own, one
// job at a time: a pass hands it a job and goes on, so the time a report
// write takes on a busy API server (seconds, under churn on a large
// cluster) never holds the next pass, and a grant or a revocation that
// arrives meanwhile reaches the files at once. The pass that handed the
// job over hands over no other until the outcome is back (see
// Agent.collectReport); then a pass runs again.
type reportWriter struct {
	jobs chan reportJob
	done chan reportOutcome
}

func newReportWriter() *reportWriter {
	return &reportWriter{jobs: make(chan reportJob, 1), done: make(chan reportOutcome, 1)}
}

// run writes each job with write until ctx ends, calling kick after each.
func (w *reportWriter) run(ctx context.Context, write func(context.Context, reportJob) (bool, error), kick func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-w.jobs:
			created, err := write(ctx, job)
			w.done <- reportOutcome{job: job, created: created, err: err}
			kick()
		}
	}
}

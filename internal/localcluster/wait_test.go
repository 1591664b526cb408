package localcluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// A condition that waits on a process that has exited fails at once; any
// other error is retried until the condition holds.
func TestWaitForStopsAtAnExitedProcess(t *testing.T) {
	ctx := context.Background()
	calls := 0
	start := time.Now()
	err := waitFor(ctx, time.Minute, "the kubelet", func() error { calls++; return fmt.Errorf("kubelet %w", errExited) })
	if !errors.Is(err, errExited) || calls != 1 || time.Since(start) > 10*time.Second {
		t.Errorf("waitFor = %v after %d calls and %s, want errExited after 1", err, calls, time.Since(start))
	}
	calls = 0
	err = waitFor(ctx, time.Minute, "the node", func() error {
		if calls++; calls < 3 {
			return errors.New("not Ready")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("waitFor = %v after %d calls, want nil after 3", err, calls)
	}
}

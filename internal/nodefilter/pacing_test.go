package nodefilter

import (
	"testing"
	"time"
)

func TestReportIntervalKeepsTheWritesWithinTheBudget(t *testing.T) {
	for _, tc := range []struct {
		nodes  int
		budget float64
		want   time.Duration
	}{
		{0, 50, 5 * time.Second},
		{1000, 0, 0},
		{1, 50, 5 * time.Second},
		{250, 50, 5 * time.Second},
		{251, 50, 10 * time.Second},
		{1000, 50, 20 * time.Second},
		{5000, 50, 100 * time.Second},
		{100000, 50, MaxReportInterval},
		{1000, 0.5, MaxReportInterval},
	} {
		got := ReportInterval(tc.nodes, tc.budget)
		if got != tc.want {
			t.Errorf("ReportInterval(%d, %v) = %s, want %s", tc.nodes, tc.budget, got, tc.want)
		}
		// Every node writing once per interval stays within the budget,
		// unless the interval is at its bound.
		if got > 0 && got < MaxReportInterval && float64(tc.nodes)/got.Seconds() > tc.budget {
			t.Errorf("%d nodes every %s write %.1f/s, over the budget of %v", tc.nodes, got, float64(tc.nodes)/got.Seconds(), tc.budget)
		}
	}
}

func TestNextReportIntervalDoesNotFlapAcrossAStep(t *testing.T) {
	const budget = 50
	published := NextReportInterval(0, 1000, budget)
	if published != 20*time.Second {
		t.Fatalf("1000 nodes publish %s, want 20s", published)
	}
	// Up and down by one across the 15 s / 20 s step: no change.
	for _, nodes := range []int{750, 751, 749, 751, 600, 501} {
		if got := NextReportInterval(published, nodes, budget); got != published {
			t.Fatalf("%d nodes after %s: %s, want it kept", nodes, published, got)
		}
	}
	// A step's worth of nodes fewer: shorter.
	if got := NextReportInterval(published, 500, budget); got != 10*time.Second {
		t.Fatalf("500 nodes after 20s: %s, want 10s", got)
	}
	// Growth is followed at once.
	if got := NextReportInterval(10*time.Second, 501, budget); got != 15*time.Second {
		t.Fatalf("501 nodes after 10s: %s, want 15s", got)
	}
	// No budget: nothing published.
	if got := NextReportInterval(published, 1000, 0); got != 0 {
		t.Fatalf("no budget after %s: %s, want 0", published, got)
	}
}

func TestParseReportIntervalRefusesWhatIsNotABoundedDuration(t *testing.T) {
	for field, want := range map[string]time.Duration{"20s": 20 * time.Second, "0s": 0, "2m": MaxReportInterval, "1m30s": 90 * time.Second} {
		if got, ok := ParseReportInterval(field); !ok || got != want {
			t.Errorf("ParseReportInterval(%q) = %s, %v; want %s", field, got, ok, want)
		}
	}
	for _, field := range []string{"", "-5s", "2m1s", "1000h", "20", "soon", " 20s", "9223372036854775807ns", "1e9s"} {
		if got, ok := ParseReportInterval(field); ok {
			t.Errorf("ParseReportInterval(%q) = %s, accepted", field, got)
		}
	}
}

package realnode

import (
	"context"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// benchRepsEnv sets how many grants and revocations BenchmarkTimeToLogin
// measures per iteration (20 when unset).
const benchRepsEnv = "REALNODE_BENCH_REPS"

// BenchmarkTimeToLogin measures what a user waits for on the real node,
// with the operator installed through OLM: from the Create call of a
// NodeAccess returning to the first successful ssh login with its key,
// and from the Delete call returning to the first refused login, ssh
// attempted back to back. It reports the medians and 99th percentiles.
// Run it alone (make bench-realnode): TestStopLeavesNothingBehind stops
// the node.
func BenchmarkTimeToLogin(b *testing.B) {
	if nodeIsDown {
		b.Fatal("the node was stopped by TestStopLeavesNothingBehind: run the benchmark with -run '^$'")
	}
	reps := 20
	if v := os.Getenv(benchRepsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("%s=%q is not a positive count", benchRepsEnv, v)
		}
		reps = n
	}
	ctx := context.Background()
	key, pub := newKey(b, "alice@bench")
	var grants, revokes []time.Duration
	b.ResetTimer()
	for range b.N {
		for range reps {
			na := grant("bench", nav1.UserAccess{Name: alice.Name, Keys: []nav1.AuthorizedKey{{Key: pub}}})
			if err := k8s.Create(ctx, na); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			grants = append(grants, waitLogin(b, alice.Name, key, start, loginWithin))
			if err := k8s.Delete(ctx, &nav1.NodeAccess{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}); err != nil {
				b.Fatal(err)
			}
			start = time.Now()
			revokes = append(revokes, waitRefused(b, alice.Name, key, start, loginWithin))
			// The next round starts once this grant is gone for good.
			b.StopTimer()
			remove(b, "bench")
			b.StartTimer()
		}
	}
	b.StopTimer()
	for _, m := range []struct {
		name string
		d    []time.Duration
	}{{"login", grants}, {"refusal", revokes}} {
		b.ReportMetric(ms(percentile(m.d, 50)), m.name+"-p50-ms")
		b.ReportMetric(ms(percentile(m.d, 99)), m.name+"-p99-ms")
		b.ReportMetric(ms(slices.Max(m.d)), m.name+"-max-ms")
	}
	b.Logf("%d grants and %d revocations; create to login %v; delete to refusal %v", len(grants), len(revokes), rounded(grants), rounded(revokes))
}

// percentile is the nearest-rank p-th percentile.
func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100
	return s[max(rank-1, 0)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func rounded(d []time.Duration) []time.Duration {
	out := make([]time.Duration, len(d))
	for i, x := range d {
		out[i] = x.Round(time.Millisecond)
	}
	return out
}

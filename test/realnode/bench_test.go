package realnode

import (
	"bytes"
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
	// What one login costs by itself, with a key in place.
	var logins []time.Duration
	for range 10 {
		start := time.Now()
		if err := login(alice.Name, handKey); err != nil {
			b.Fatal(err)
		}
		logins = append(logins, time.Since(start))
	}
	var grants, revokes, written, removed []time.Duration
	loadBefore, _ := os.ReadFile("/proc/loadavg")
	b.ResetTimer()
	for range b.N {
		for range reps {
			na := grant("bench", nav1.UserAccess{Name: alice.Name, Keys: []nav1.AuthorizedKey{{Key: pub}}})
			if err := k8s.Create(ctx, na); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			file := watchFile(blobOf(pub), true, start)
			grants = append(grants, waitLogin(b, alice.Name, key, start, loginWithin))
			written = append(written, <-file)
			if err := k8s.Delete(ctx, &nav1.NodeAccess{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}); err != nil {
				b.Fatal(err)
			}
			start = time.Now()
			file = watchFile(blobOf(pub), false, start)
			revokes = append(revokes, waitRefused(b, alice.Name, key, start, loginWithin))
			removed = append(removed, <-file)
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
	}{{"login", grants}, {"refusal", revokes}, {"written", written}, {"removed", removed}, {"ssh", logins}} {
		b.ReportMetric(ms(percentile(m.d, 50)), m.name+"-p50-ms")
		b.ReportMetric(ms(percentile(m.d, 99)), m.name+"-p99-ms")
		b.ReportMetric(ms(slices.Max(m.d)), m.name+"-max-ms")
	}
	b.Logf("%d grants and %d revocations; create to login %v; delete to refusal %v", len(grants), len(revokes), rounded(grants), rounded(revokes))
	b.Logf("create to the key in alice's file %v; delete to the key gone %v; one login with a key in place %v", rounded(written), rounded(removed), rounded(logins))
	loadAfter, _ := os.ReadFile("/proc/loadavg")
	b.Logf("load average before %s, after %s", bytes.TrimSpace(loadBefore), bytes.TrimSpace(loadAfter))
}

// watchFile reads alice's authorized_keys back to back until the blob is
// in it (present) or gone from it, and sends the time since start; it
// gives up after loginWithin and sends that.
func watchFile(blob string, present bool, start time.Time) <-chan time.Duration {
	c := make(chan time.Duration, 1)
	go func() {
		for time.Since(start) < loginWithin {
			data, err := os.ReadFile(aliceFile)
			if err == nil && bytes.Contains(data, []byte(blob)) == present {
				c <- time.Since(start)
				return
			}
			time.Sleep(time.Millisecond)
		}
		c <- loginWithin
	}()
	return c
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

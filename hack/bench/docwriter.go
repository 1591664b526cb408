package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

const (
	beginMarker = "<!-- bench results: begin (written by make bench) -->"
	endMarker   = "<!-- bench results: end -->"
)

// writeDoc rewrites the results section of the benchmarks document.
func writeDoc(o options, results []Result) error {
	doc, err := os.ReadFile(o.doc)
	if err != nil {
		return err
	}
	begin, end := bytes.Index(doc, []byte(beginMarker)), bytes.Index(doc, []byte(endMarker))
	if begin < 0 || end < begin {
		return fmt.Errorf("%s has no results markers", o.doc)
	}
	var t strings.Builder
	fmt.Fprintf(&t, "%s\n\nMeasured %s on %s, with `make bench` (`go run ./hack/bench -nodes=%s`).\n\n",
		beginMarker, time.Now().UTC().Format("2006-01-02 15:04 MST"), machine(), joinInts(o.nodes))
	t.WriteString("| scenario | nodes | changes | p50 ms | p95 ms | p99 ms | max ms | manager writes / change | agent requests / change | manager peak RSS MiB | agent peak RSS MiB (private) | manager CPU s |\n")
	t.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range results {
		if r.Scenario == "idle" {
			continue
		}
		fmt.Fprintf(&t, "| %s | %d | %d | %.0f | %.0f | %.0f | %.0f | %.1f | %.1f | %.0f | %.0f (%.0f) | %.1f |\n",
			r.Scenario, r.Nodes, r.Changes, r.P50ms, r.P95ms, r.P99ms, r.MaxMs, r.ManagerWrites, r.AgentRequests,
			r.ManagerRSSMiB, r.AgentRSSMiB, r.AgentPrivateMiB, r.ManagerCPUs)
	}
	t.WriteString("\nSteady state (nothing changing, watch requests excluded):\n\n")
	for _, r := range results {
		if r.Scenario == "idle" {
			fmt.Fprintf(&t, "- %d nodes: %d agent requests and %d manager writes in %s.\n", r.Nodes, int(r.AgentRequests), int(r.ManagerWrites), o.idle)
		}
	}
	t.WriteString("\n" + endMarker)
	out := append(append(append([]byte{}, doc[:begin]...), t.String()...), doc[end+len(endMarker):]...)
	return os.WriteFile(o.doc, out, 0o644)
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

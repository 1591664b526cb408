package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
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
	fmt.Fprintf(&t, "%s\n\nMeasured %s on %s, host roots on %s, with `go run ./hack/bench %s`.\n\n",
		beginMarker, time.Now().UTC().Format("2006-01-02 15:04 MST"), machine(), fsKind(o.hostsDir), strings.Join(os.Args[1:], " "))
	t.WriteString("| scenario | nodes | changes | p50 ms | p95 ms | p99 ms | max ms | p99 / floor p99 | agent KiB / change | agent bytes / change / concerned node | manager writes / change | agent requests / change | manager peak RSS MiB | agent peak RSS MiB (private) | manager CPU s |\n")
	t.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	dash := func(v float64, format string) string {
		if v == 0 {
			return "–"
		}
		return fmt.Sprintf(format, v)
	}
	for _, r := range results {
		if r.Scenario == "idle" {
			continue
		}
		changes := strconv.Itoa(r.Changes)
		if r.Scenario == "churn" {
			changes += fmt.Sprintf(" (%d late)", r.Late)
		}
		writes, requests := fmt.Sprintf("%.1f", r.ManagerWrites), fmt.Sprintf("%.1f", r.AgentRequests)
		if r.Watchers > 0 {
			writes, requests = "–", "–" // the floor: no grant changed
		}
		fmt.Fprintf(&t, "| %s | %d | %s | %.0f | %.0f | %.0f | %.0f | %.1f | %s | %s | %s | %s | %.0f | %.0f (%.0f) | %.1f |\n",
			r.Scenario, r.Nodes, changes, r.P50ms, r.P95ms, r.P99ms, r.MaxMs, r.FloorRatio,
			dash(r.BytesPerChange/1024, "%.1f"), dash(r.BytesPerConcernedNode, "%.0f"), writes, requests,
			r.ManagerRSSMiB, r.AgentRSSMiB, r.AgentPrivateMiB, r.ManagerCPUs)
	}
	t.WriteString("\nFloor rows: `floor` is one ConfigMap update reaching one watcher per node, `floor-pool` reaching one pool's watchers while the others stay connected; changes are updates, one at a time.\n")
	t.WriteString("\nChurn, the status behind the files (from the last node's file to the NodeAccess status counting every selected node in sync at that generation or a later one):\n\n")
	for _, r := range results {
		if r.Scenario == "churn" {
			fmt.Fprintf(&t, "- %d nodes: p50 %.0f ms, p99 %.0f ms; %d of %d changes never seen in sync.\n", r.Nodes, r.ReportLagP50ms, r.ReportLagP99ms, r.ReportLagMissing, r.Changes)
		}
	}
	t.WriteString("\nSteady state (nothing changing; watch requests excluded from the request counts, not from the bytes):\n\n")
	for _, r := range results {
		if r.Scenario == "idle" {
			fmt.Fprintf(&t, "- %d nodes: %d agent requests, %d manager writes and %.0f bytes read by the agents (%.0f of them on watches) in %s; the bench process (the in-process agents) peaked at %.0f MiB.\n",
				r.Nodes, int(r.AgentRequests), int(r.ManagerWrites), r.BytesPerChange, r.WatchBytesPerChange, o.idle, r.BenchRSSMiB)
		}
	}
	t.WriteString("\n" + endMarker)
	out := append(append(append([]byte{}, doc[:begin]...), t.String()...), doc[end+len(endMarker):]...)
	return os.WriteFile(o.doc, out, 0o644)
}

// fsKind says whether dir is on a tmpfs or on a disk.
func fsKind(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "an unknown file system"
	}
	const tmpfsMagic = 0x01021994
	if st.Type == tmpfsMagic {
		return "tmpfs"
	}
	return "disk"
}

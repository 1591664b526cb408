package main

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"slices"
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
		agentRSS, agentPrivate := r.AgentRSSMiB, r.AgentPrivateMiB
		if r.Bounds != nil {
			// The bounds node's own agent, not the three process agents.
			agentRSS, agentPrivate = r.Bounds.AgentRSSMiB, r.Bounds.AgentPrivateMiB
		}
		fmt.Fprintf(&t, "| %s | %d | %s | %.0f | %.0f | %.0f | %.0f | %.1f | %s | %s | %s | %s | %.0f | %.0f (%.0f) | %.1f |\n",
			r.Scenario, r.Nodes, changes, r.P50ms, r.P95ms, r.P99ms, r.MaxMs, r.FloorRatio,
			dash(r.BytesPerChange/1024, "%.1f"), dash(r.BytesPerConcernedNode, "%.0f"), writes, requests,
			r.ManagerRSSMiB, agentRSS, agentPrivate, r.ManagerCPUs)
	}
	t.WriteString("\nFloor rows: `floor` is one ConfigMap update reaching one watcher per node, `floor-pool` reaching one pool's watchers while the others stay connected; changes are updates, one at a time.\n")
	t.WriteString("\nWhere a single change's time goes (the manager's part: from the API call to its write of the rendered grant completing, from the audit log, the median over the step's changes; the rest is the delivery to the agents and their passes):\n\n")
	for _, r := range results {
		if r.RenderedMs > 0 {
			fmt.Fprintf(&t, "- %s, %d nodes: rendered grant written after %.0f ms; then %.0f ms to the median node's file, %.0f ms to the p99 node's.\n",
				r.Scenario, r.Nodes, r.RenderedMs, r.P50ms-r.RenderedMs, r.P99ms-r.RenderedMs)
		}
	}
	t.WriteString("\nWhere each node's time goes (per change and in-process node: from the change to its agent's client reading it from the API server, then from that read to its file, the agent's decode and pass queued on the bench's shared cores; p50 / p99):\n\n")
	for _, r := range results {
		if (r.ArrivalP99ms > 0 || r.Unarrived > 0) && r.Scenario != "bounds" {
			fmt.Fprintf(&t, "- %s, %d nodes: read %.0f / %.0f ms (p99 %.1f× the floor's), then the file %.0f / %.0f ms later",
				r.Scenario, r.Nodes, r.ArrivalP50ms, r.ArrivalP99ms, r.ArrivalFloorRatio, r.PassP50ms, r.PassP99ms)
			if r.Unarrived > 0 {
				fmt.Fprintf(&t, " (%d files changed without their agent seen reading the change)", r.Unarrived)
			}
			t.WriteString(".\n")
		}
	}
	t.WriteString("\nThe agents that run as separate processes, each with its own Go runtime as on a real node (the cores still shared), timed apart from the in-process ones (p50 / p99 / max over their samples):\n\n")
	for _, r := range results {
		if r.ProcessSamples > 0 {
			fmt.Fprintf(&t, "- %s, %d nodes: %.0f / %.0f / %.0f ms over %d samples (max %.1f× the floor's p99).\n",
				r.Scenario, r.Nodes, r.ProcessP50ms, r.ProcessP99ms, r.ProcessMaxMs, r.ProcessSamples, r.ProcessFloorRatio)
		}
	}
	t.WriteString("\nCPU per change (milliseconds of CPU each process used during the scenario, divided by its changes; the bench process is the in-process agents, the file tracker and the driver):\n\n")
	for _, r := range results {
		if c := r.CPU; c != nil && r.Watchers == 0 && r.Scenario != "idle" {
			fmt.Fprintf(&t, "- %s, %d nodes: API server %.0f, etcd %.0f, manager %.0f, bench process %.0f.\n", r.Scenario, r.Nodes, c.APIServerMs, c.EtcdMs, c.ManagerMs, c.BenchMs)
		}
	}
	t.WriteString("\nChurn, the status behind the files (from the last node's file to the NodeAccess status counting every selected node in sync at that generation or a later one):\n\n")
	for _, r := range results {
		if r.Scenario == "churn" {
			fmt.Fprintf(&t, "- %d nodes: p50 %.0f ms, p99 %.0f ms; %d of %d changes never seen in sync.\n", r.Nodes, r.ReportLagP50ms, r.ReportLagP99ms, r.ReportLagMissing, r.Changes)
		}
	}
	t.WriteString("\nChurn, where each change's time goes (p50 / p99 over the changes: from its schedule to its API call, the call, from the call to the manager's write of the rendered grant completing, from that write to the last node's file):\n\n")
	for _, r := range results {
		if c := r.Churn; c != nil {
			fmt.Fprintf(&t, "- %d nodes: issued %.0f / %.0f ms late, the call %.0f / %.0f ms, the manager %.0f / %.0f ms, the delivery %.0f / %.0f ms",
				r.Nodes, c.IssueP50ms, c.IssueP99ms, c.CallP50ms, c.CallP99ms, c.ManagerP50ms, c.ManagerP99ms, c.DeliveryP50ms, c.DeliveryP99ms)
			if c.Unmatched > 0 {
				fmt.Fprintf(&t, " (%d changes had no rendered write of their own)", c.Unmatched)
			}
			t.WriteString(".\n")
		}
	}
	for _, r := range results {
		if br := r.Bounds; br != nil {
			fmt.Fprintf(&t, "\nBounds, %d nodes (one more node, its agent a process with every feature): the manager admitted %d NodeAccess and refused %d (ClusterLimitExceeded); "+
				"%d keys were in the node's files %.0f ms after the first create (p50 over grants and accounts %.0f ms), and none %.0f ms after the first deletion. "+
				"The node received %.2f MiB of rendered grants (specs, as the bound counts them; %.2f MiB as objects with their metadata), with key lines of %s on the node. "+
				"Its agent peaked at %.0f MiB RSS (%.0f MiB private with its files full): %s the agent container's %.0f MiB memory limit. "+
				"The in-process agents, none concerned, read %.0f bytes each during the scenario.\n",
				r.Nodes, br.Admitted, br.Refused, br.Keys, r.MaxMs, r.P50ms, br.EmptiedMs, float64(br.SpecBytes)/(1<<20), float64(br.ObjectBytes)/(1<<20),
				accountBytes(br.AccountBytes), br.AgentRSSMiB, br.AgentPrivateMiB, headroom(br.HeadroomMiB), br.LimitMiB, br.OtherNodeBytes)
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

// headroom says how far a peak is below (or over) a limit.
func headroom(mib float64) string {
	if mib < 0 {
		return fmt.Sprintf("%.0f MiB over", -mib)
	}
	return fmt.Sprintf("%.0f MiB below", mib)
}

// accountBytes lists key-line bytes by account, in MiB.
func accountBytes(m map[string]int) string {
	names := slices.Sorted(maps.Keys(m))
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%.2f MiB for %s", float64(m[n])/(1<<20), n))
	}
	return strings.Join(parts, " and ")
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

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// micro is the audit log's time format.
const micro = "2006-01-02T15:04:05.000000Z07:00"

// auditLine is one ResponseComplete event as the API server logs it.
func auditLine(ua, verb, resource, name string, received, done time.Time) string {
	return fmt.Sprintf(`{"kind":"Event","stage":"ResponseComplete","verb":%q,"userAgent":%q,"objectRef":{"resource":%q,"name":%q},"requestReceivedTimestamp":%q,"stageTimestamp":%q}`,
		verb, ua, resource, name, received.Format(micro), done.Format(micro))
}

func TestChurnIsSplitAtTheManagersWriteOfEachChange(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	lines := []string{
		// team-a's rendered grant: a write before the change, then two after
		// it, logged out of their order of completion.
		auditLine("manager/v0.2.0", "patch", "renderednodeaccesses", "team-a", ms(0), ms(5)),
		auditLine("manager/v0.2.0", "patch", "renderednodeaccesses", "team-a", ms(150), ms(160)),
		auditLine("manager/v0.2.0", "patch", "renderednodeaccesses", "team-a", ms(30), ms(40)),
		// Another grant's write and a read of team-b's do not count for team-b.
		auditLine("manager/v0.2.0", "patch", "renderednodeaccesses", "team-c", ms(30), ms(35)),
		auditLine("manager/v0.2.0", "get", "renderednodeaccesses", "team-b", ms(30), ms(31)),
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	counts, err := countRequests(path, t0, ms(1000))
	if err != nil {
		t.Fatal(err)
	}
	due := func(n int) *wait { return &wait{from: ms(n)} }
	changes := []statusChange{
		{name: "team-a", sent: ms(12), returned: ms(20), filesAt: ms(100)},
		{name: "team-b", sent: ms(15), returned: ms(25), filesAt: ms(200)},
	}
	s := splitChurn(changes, []*wait{due(10), due(10)}, counts)
	if s.ManagerP99ms != 28 || s.DeliveryP99ms != 60 {
		t.Errorf("team-a: manager %v ms, delivery %v ms; want 28 (12 → 40) and 60 (40 → 100)", s.ManagerP99ms, s.DeliveryP99ms)
	}
	if s.Unmatched != 1 {
		t.Errorf("%d changes without a rendered write of their own; want 1 (team-b)", s.Unmatched)
	}
	if s.IssueP99ms != 5 || s.CallP99ms != 10 {
		t.Errorf("issued %v ms late, call %v ms; want 5 and 10 (the later of the two)", s.IssueP99ms, s.CallP99ms)
	}
}

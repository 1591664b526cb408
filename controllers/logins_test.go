package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
	"github.com/nodeaccess/nodeaccess-operator/internal/testenv"
)

// loginsCounted reads nodeaccess_logins_total for one NodeAccess, account
// and trust.
func loginsCounted(nodeAccess, account string, trusted bool) float64 {
	families, _ := metrics.Registry.Gather()
	for _, f := range families {
		if f.GetName() != "nodeaccess_logins_total" {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			want := map[string]string{"nodeaccess": nodeAccess, "account": account, "trusted": fmt.Sprint(trusted)}
			for _, l := range m.GetLabel() {
				if want[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func countEvents(name, reason string) int {
	n := 0
	for _, r := range eventsFor(name)() {
		if r == reason {
			n++
		}
	}
	return n
}

// The manager folds the logins node reports list into the NodeAccess's
// status (the newest per account and key), counts each once in
// nodeaccess_logins_total, and announces them with LoginAccepted Events,
// at most one per account and key a minute; a session an agent ended on
// revoke gets a SessionEnded Event. The reports are written as agents
// write them.
func TestLoginsReachStatusEventsAndMetrics(t *testing.T) {
	ctx := context.Background()
	bob, carol := newKey(t, "bob"), newKey(t, "carol")
	na := nodeAccess("logins", "logins-pool", bob.line, carol.line)
	na.Spec.Users[0].Keys[0].Comment = "bob@laptop"
	create(t, na)
	testenv.Eventually(t, timeout, "rendered", func() error {
		return k8sClient.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "logins"}, &nav1.RenderedNodeAccess{})
	})
	must(t, k8sClient.Get(ctx, client.ObjectKey{Name: "logins"}, na))
	rendered := &nav1.RenderedNodeAccess{}
	must(t, k8sClient.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "logins"}, rendered))
	bobFP, carolFP := rendered.Spec.Users[0].Keys[0].Fingerprint, rendered.Spec.Users[0].Keys[1].Fingerprint

	report := &nav1.NodeAccessReport{ObjectMeta: metav1.ObjectMeta{Name: "logins-node"}, Spec: nav1.NodeAccessReportSpec{NodeName: "logins-node"}}
	must(t, k8sClient.Create(ctx, report))
	// Gone before the NodeAccess is deleted, which would wait for its proof.
	t.Cleanup(func() { _ = k8sClient.Delete(ctx, report) })
	now := time.Now().Truncate(time.Second)
	login := func(fp, comment, from string, port int32, at time.Time, trusted bool) nav1.NodeLogin {
		l := nav1.NodeLogin{Time: metav1.NewTime(at), User: "alice", NodeAccess: "logins", NodeAccessUID: string(na.UID),
			Comment: comment, Fingerprint: fp, From: from, Port: port, Trusted: trusted}
		if !trusted {
			l.Reason = nav1.SenderUnverifiedReason
		}
		return l
	}
	write := func(logins ...nav1.NodeLogin) {
		t.Helper()
		testenv.Eventually(t, timeout, "writing the report", func() error {
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(report), report); err != nil {
				return err
			}
			report.Status = nav1.NodeAccessReportStatus{
				Grants: []nav1.GrantReport{{Name: "logins", UID: string(na.UID), Hash: rendered.Spec.Hash, Applied: true, Keys: 2, Accounts: []string{"alice"}}},
				Logins: logins, LoginTracking: &nav1.LoginTracking{Files: []string{"/var/log/auth.log"}},
			}
			return k8sClient.Status().Update(ctx, report)
		})
	}
	lastLoginsAre := func(want ...nav1.LastLogin) func() error {
		return func() error {
			got := &nav1.NodeAccess{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: "logins"}, got); err != nil {
				return err
			}
			if len(got.Status.LastLogins) != len(want) {
				return fmt.Errorf("lastLogins %+v", got.Status.LastLogins)
			}
			for i, w := range want {
				g := got.Status.LastLogins[i]
				if g.User != w.User || g.Fingerprint != w.Fingerprint || g.Comment != w.Comment || g.Node != w.Node ||
					!g.Time.Equal(&w.Time) || g.From != w.From || g.Trusted != w.Trusted {
					return fmt.Errorf("lastLogins[%d] %+v, want %+v", i, g, w)
				}
			}
			return nil
		}
	}
	counted := func(trusted, untrusted float64) func() error {
		return func() error {
			if a, b := loginsCounted("logins", "alice", true), loginsCounted("logins", "alice", false); a != trusted || b != untrusted {
				return fmt.Errorf("nodeaccess_logins_total trusted %v untrusted %v, want %v and %v", a, b, trusted, untrusted)
			}
			return nil
		}
	}

	first := login(bobFP, "bob@laptop", "198.18.0.7", 50000, now, true)
	write(first)
	testenv.Eventually(t, timeout, "the login in status", lastLoginsAre(nav1.LastLogin{User: "alice", Fingerprint: bobFP,
		Comment: "bob@laptop", Node: "logins-node", Time: first.Time, From: "198.18.0.7", Trusted: true}))
	testenv.Eventually(t, timeout, "counted", counted(1, 0))
	testenv.Eventually(t, timeout, "LoginAccepted", hasEvent("logins", nav1.LoginAcceptedEventReason))

	// Two more logins of bob's key (one untrusted) and one of carol's: the
	// first login is counted once, bob's key gets no second Event within
	// the minute, carol's gets one.
	second := login(bobFP, "bob@laptop", "198.18.0.9", 50001, now.Add(time.Second), false)
	third := login(carolFP, "carol", "198.18.0.8", 50002, now.Add(2*time.Second), true)
	write(third, second, first)
	testenv.Eventually(t, timeout, "the newest login per key", lastLoginsAre(
		nav1.LastLogin{User: "alice", Fingerprint: carolFP, Comment: "carol", Node: "logins-node", Time: third.Time, From: "198.18.0.8", Trusted: true},
		nav1.LastLogin{User: "alice", Fingerprint: bobFP, Comment: "bob@laptop", Node: "logins-node", Time: second.Time, From: "198.18.0.9"}))
	testenv.Eventually(t, timeout, "counted once each", counted(2, 1))
	testenv.Eventually(t, timeout, "an Event for carol's key", func() error {
		if n := countEvents("logins", nav1.LoginAcceptedEventReason); n != 2 {
			return fmt.Errorf("%d LoginAccepted Events, want 2 (bob's second login within the minute makes none)", n)
		}
		return nil
	})

	// The agent ended the first session on revoke; the report, rewritten
	// as usual, counts nothing again.
	// A login claimed for an account the grant does not name is ignored.
	ended := first
	ended.EndedAt = &metav1.Time{Time: now.Add(3 * time.Second)}
	stray := login(bobFP, "bob@laptop", "198.18.0.10", 50003, now.Add(4*time.Second), true)
	stray.User = "eve"
	write(stray, third, second, ended)
	testenv.Eventually(t, timeout, "SessionEnded", hasEvent("logins", nav1.SessionEndedEventReason))
	if err := counted(2, 1)(); err != nil {
		t.Fatal(err)
	}
	if n := loginsCounted("logins", "eve", true); n != 0 {
		t.Errorf("a login of an account the grant does not name was counted %v times", n)
	}
	if err := lastLoginsAre(
		nav1.LastLogin{User: "alice", Fingerprint: carolFP, Comment: "carol", Node: "logins-node", Time: third.Time, From: "198.18.0.8", Trusted: true},
		nav1.LastLogin{User: "alice", Fingerprint: bobFP, Comment: "bob@laptop", Node: "logins-node", Time: second.Time, From: "198.18.0.9"})(); err != nil {
		t.Fatal(err)
	}
}

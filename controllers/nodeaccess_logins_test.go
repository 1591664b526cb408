package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// status.lastLogins keeps the newest login of each account and key, from
// the reports now and the status before, newest first and bounded.
func TestLastLogins(t *testing.T) {
	at := func(s int) metav1.Time { return metav1.NewTime(time.Date(2026, 12, 1, 12, 0, s, 0, time.UTC)) }
	login := func(node, user, fp string, s int, trusted bool) nodeLogin {
		return nodeLogin{node: node, login: nav1.NodeLogin{Time: at(s), User: user, NodeAccess: "team-a", NodeAccessUID: "u",
			Comment: "c-" + fp, Fingerprint: "SHA256:" + fp, From: "198.18.0.7", Trusted: trusted}}
	}
	last := func(node, user, fp string, s int, trusted bool) nav1.LastLogin {
		return nav1.LastLogin{User: user, Comment: "c-" + fp, Fingerprint: "SHA256:" + fp, Node: node, Time: at(s), From: "198.18.0.7", Trusted: trusted}
	}
	many := func() ([]nodeLogin, []nav1.LastLogin) {
		var in []nodeLogin
		var out []nav1.LastLogin
		for i := range 20 {
			fp := string(rune('a' + i))
			in = append(in, login("n1", "alice", fp, i, true))
			if i >= 20-nav1.MaxLastLogins {
				out = append([]nav1.LastLogin{last("n1", "alice", fp, i, true)}, out...)
			}
		}
		return in, out
	}
	manyIn, manyOut := many()
	cases := []struct {
		name     string
		prev     []nav1.LastLogin
		reported []nodeLogin
		want     []nav1.LastLogin
	}{
		{name: "none"},
		{name: "newest per account and key, across nodes",
			reported: []nodeLogin{login("n1", "alice", "k1", 1, true), login("n2", "alice", "k1", 5, false), login("n1", "alice", "k2", 3, true), login("n1", "deploy", "k1", 2, true)},
			want:     []nav1.LastLogin{last("n2", "alice", "k1", 5, false), last("n1", "alice", "k2", 3, true), last("n1", "deploy", "k1", 2, true)}},
		{name: "kept from before when no node lists it any more",
			prev:     []nav1.LastLogin{last("n1", "alice", "k1", 9, true), last("n3", "alice", "k2", 1, true)},
			reported: []nodeLogin{login("n1", "alice", "k1", 4, true), login("n1", "alice", "k2", 7, false)},
			want:     []nav1.LastLogin{last("n1", "alice", "k1", 9, true), last("n1", "alice", "k2", 7, false)}},
		{name: "bounded, the oldest dropped", reported: manyIn, want: manyOut},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := lastLogins(tc.prev, tc.reported)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d: %+v\nwant %d: %+v", len(got), got, len(tc.want), tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("[%d] got %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

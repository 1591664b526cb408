package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

func TestCountNodesWithoutReport(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	const bound = 30 * time.Minute
	node := func(name string) metav1.PartialObjectMetadata {
		return metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)}}
	}
	report := func(name, ownerUID string, heartbeat, change time.Duration) nav1.NodeAccessReport {
		r := nav1.NodeAccessReport{ObjectMeta: metav1.ObjectMeta{Name: name,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: name, UID: types.UID(ownerUID)}}}}
		if heartbeat >= 0 {
			r.Status.HeartbeatTime = &metav1.Time{Time: now.Add(-heartbeat)}
		}
		if change >= 0 {
			r.Status.LastChangeTime = &metav1.Time{Time: now.Add(-change)}
		}
		return r
	}
	const none = -1
	for _, tc := range []struct {
		name           string
		nodes          []metav1.PartialObjectMetadata
		reports        []nav1.NodeAccessReport
		missing, stale int
		next           time.Duration
	}{{
		name: "no nodes", next: bound + time.Second,
	}, {
		name:    "every node reports",
		nodes:   []metav1.PartialObjectMetadata{node("a"), node("b")},
		reports: []nav1.NodeAccessReport{report("a", "uid-a", time.Minute, time.Hour), report("b", "uid-b", 10*time.Minute, none)},
		next:    20*time.Minute + time.Second,
	}, {
		name:    "no report",
		nodes:   []metav1.PartialObjectMetadata{node("a"), node("b")},
		reports: []nav1.NodeAccessReport{report("a", "uid-a", time.Minute, none)},
		missing: 1, next: 29*time.Minute + time.Second,
	}, {
		name:    "a report of an earlier Node of that name says nothing of this one",
		nodes:   []metav1.PartialObjectMetadata{node("a")},
		reports: []nav1.NodeAccessReport{report("a", "uid-old", time.Minute, none)},
		missing: 1, next: bound + time.Second,
	}, {
		name:    "a heartbeat older than the bound is stale",
		nodes:   []metav1.PartialObjectMetadata{node("a")},
		reports: []nav1.NodeAccessReport{report("a", "uid-a", 31*time.Minute, none)},
		stale:   1, next: bound + time.Second,
	}, {
		name:    "exactly at the bound is stale",
		nodes:   []metav1.PartialObjectMetadata{node("a")},
		reports: []nav1.NodeAccessReport{report("a", "uid-a", bound, none)},
		stale:   1, next: bound + time.Second,
	}, {
		name:    "a later change counts as fresh as a heartbeat",
		nodes:   []metav1.PartialObjectMetadata{node("a")},
		reports: []nav1.NodeAccessReport{report("a", "uid-a", 40*time.Minute, 5*time.Minute)},
		next:    25*time.Minute + time.Second,
	}, {
		name:    "a report without any time is stale",
		nodes:   []metav1.PartialObjectMetadata{node("a")},
		reports: []nav1.NodeAccessReport{report("a", "uid-a", none, none)},
		stale:   1, next: bound + time.Second,
	}, {
		name:    "reports of nodes that are gone are not counted",
		nodes:   []metav1.PartialObjectMetadata{node("a")},
		reports: []nav1.NodeAccessReport{report("a", "uid-a", time.Minute, none), report("gone", "uid-gone", 2*time.Hour, none)},
		next:    29*time.Minute + time.Second,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := countNodesWithoutReport(tc.nodes, tc.reports, now, bound)
			if got.missing != tc.missing || got.stale != tc.stale || got.nextStale != tc.next {
				t.Errorf("got missing=%d stale=%d next=%s, want missing=%d stale=%d next=%s",
					got.missing, got.stale, got.nextStale, tc.missing, tc.stale, tc.next)
			}
		})
	}
}

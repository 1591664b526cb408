package controllers

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// recordTransitions emits an Event for each change a user must see: a key
// newly refused, the grant becoming ready, degraded or expired.
func (r *NodeAccessReconciler) recordTransitions(na *nav1.NodeAccess, next nav1.NodeAccessStatus) {
	known := map[nav1.KeyRefusal]bool{}
	for _, k := range na.Status.RefusedKeys {
		known[k] = true
	}
	for _, k := range next.RefusedKeys {
		if !known[k] {
			r.Recorder.Eventf(na, nil, corev1.EventTypeWarning, k.Reason, "Refuse",
				"Refused a key for user %s from %s: %s", k.User, k.Source, k.Message)
		}
	}
	changed := func(condType string) (*metav1.Condition, bool) {
		c := meta.FindStatusCondition(next.Conditions, condType)
		old := meta.FindStatusCondition(na.Status.Conditions, condType)
		return c, c != nil && (old == nil || old.Status != c.Status || old.Reason != c.Reason)
	}
	if c, ok := changed(nav1.ReadyCondition); ok {
		switch {
		case c.Status == metav1.ConditionTrue:
			r.Recorder.Eventf(na, nil, corev1.EventTypeNormal, "Granted", "Grant", "%s", c.Message)
		case c.Reason == nav1.ExpiredReason:
			r.Recorder.Eventf(na, nil, corev1.EventTypeNormal, "Expired", "Revoke", "%s", c.Message)
		case c.Reason == nav1.SuspendedReason:
			r.Recorder.Eventf(na, nil, corev1.EventTypeNormal, "Suspended", "Revoke", "%s", c.Message)
		}
	}
	if c, ok := changed(nav1.DegradedCondition); ok && c.Status == metav1.ConditionTrue &&
		c.Reason != nav1.KeysRefusedReason && c.Reason != nav1.UserRefusedReason {
		r.Recorder.Eventf(na, nil, corev1.EventTypeWarning, c.Reason, "Degrade", "%s", c.Message)
	}
}

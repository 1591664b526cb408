package agentdaemonset

import (
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// ReportPolicyName names the ValidatingAdmissionPolicy, and its binding,
// that let an agent write only its own node's report.
const ReportPolicyName = "nodeaccess-agent-own-report"

// ReportPolicy returns the policy that binds each agent to its own node's
// NodeAccessReport, enforced by the API server, and its binding. An agent's
// token is bound to its pod, and a pod-bound token carries the name of the
// pod's node in the user's extra info, which must equal the report's name.
// RBAC alone cannot say this (it cannot compare a name with the caller).
// Only the agents' service account in the operator's namespace is
// constrained; a policy can only deny.
func ReportPolicy(namespace string) (*admissionregistrationv1.ValidatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicyBinding) {
	meta := metav1.ObjectMeta{Name: ReportPolicyName, Labels: map[string]string{
		"app.kubernetes.io/name":      "nodeaccess-operator",
		"app.kubernetes.io/component": "agent",
	}}
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicy"},
		ObjectMeta: meta,
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update, admissionregistrationv1.Delete},
					Rule: admissionregistrationv1.Rule{APIGroups: []string{"nodeaccess.io"}, APIVersions: []string{"*"},
						Resources: []string{"nodeaccessreports", "nodeaccessreports/status"}},
				},
			}}},
			MatchConditions: []admissionregistrationv1.MatchCondition{{
				Name:       "is-agent",
				Expression: "request.userInfo.username == 'system:serviceaccount:" + namespace + ":" + ServiceAccountName + "'",
			}},
			Variables: []admissionregistrationv1.Variable{{
				Name: "nodeName",
				Expression: "'authentication.kubernetes.io/node-name' in request.userInfo.extra && " +
					"size(request.userInfo.extra['authentication.kubernetes.io/node-name']) == 1 " +
					"? request.userInfo.extra['authentication.kubernetes.io/node-name'][0] : ''",
			}},
			Validations: []admissionregistrationv1.Validation{
				{
					Expression: "variables.nodeName != ''",
					Message:    "an agent must use a token bound to its pod, which names its node",
					Reason:     ptr.To(metav1.StatusReasonForbidden),
				},
				{
					Expression:        "(object != null ? object.metadata.name : oldObject.metadata.name) == variables.nodeName",
					MessageExpression: "'an agent may write only the report of its own node (' + variables.nodeName + ')'",
					Reason:            ptr.To(metav1.StatusReasonForbidden),
				},
			},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicyBinding"},
		ObjectMeta: *meta.DeepCopy(),
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        ReportPolicyName,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
		},
	}
	return policy, binding
}

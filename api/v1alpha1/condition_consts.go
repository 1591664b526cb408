package v1alpha1

// Condition types of NodeAccess.status.conditions.
const (
	// ReadyCondition is True when every selected node holds exactly the keys
	// of the current generation, and no key was refused.
	ReadyCondition = "Ready"

	// ProgressingCondition is True while selected nodes are being brought in
	// line with the current generation, or while keys are being revoked.
	ProgressingCondition = "Progressing"

	// DegradedCondition is True when part of the grant cannot be served: a key
	// was refused, a key source is missing, or a node failed to apply.
	DegradedCondition = "Degraded"
)

// Condition reasons. Reasons are CamelCase codes a user or alert can match on;
// the message carries the details.
const (
	// AllNodesInSyncReason: every selected node applied the current generation.
	AllNodesInSyncReason = "AllNodesInSync"

	// NoNodesSelectedReason: the nodeSelector selects no node.
	NoNodesSelectedReason = "NoNodesSelected"

	// WaitingForNodesReason: some selected nodes have not yet applied the
	// current generation.
	WaitingForNodesReason = "WaitingForNodes"

	// NodesFailingReason: some selected nodes reported an error applying the grant.
	NodesFailingReason = "NodesFailing"

	// KeysRefusedReason: some keys were refused by the key policy.
	KeysRefusedReason = "KeysRefused"

	// KeySourceMissingReason: a referenced Secret, ConfigMap or data key does not exist.
	KeySourceMissingReason = "KeySourceMissing"

	// UserRefusedReason: an account may not be granted, for example root
	// without the operator's permission.
	UserRefusedReason = "UserRefused"

	// InvalidSelectorReason: the nodeSelector cannot be parsed.
	InvalidSelectorReason = "InvalidSelector"

	// SuspendedReason: spec.suspend is true; the keys are removed from every node.
	SuspendedReason = "Suspended"

	// ExpiredReason: the grant's expiresAt has passed; the keys are removed
	// from every node.
	ExpiredReason = "Expired"

	// RevokingReason: the NodeAccess is being deleted and some nodes still hold its keys.
	RevokingReason = "Revoking"

	// AsExpectedReason: the condition is in its healthy state.
	AsExpectedReason = "AsExpected"
)

// Reasons of a NodeAccessReport's Ready condition.
const (
	// AllGrantsAppliedReason: every grant selecting the node is applied.
	AllGrantsAppliedReason = "AllGrantsApplied"

	// AccountsFailingReason: some accounts could not be written; see accountErrors.
	AccountsFailingReason = "AccountsFailing"
)

// Reasons of a NodeAccessReport's status.sshd: why no host key of the node's
// sshd is known.
const (
	// SSHDUnreachableReason: nothing accepted a connection at the address
	// (connection refused, no route).
	SSHDUnreachableReason = "SSHDUnreachable"

	// SSHDTimeoutReason: the connection or the handshake did not finish in time.
	SSHDTimeoutReason = "SSHDTimeout"

	// NotAnSSHServerReason: the server at the address did not answer with
	// an SSH version string.
	NotAnSSHServerReason = "NotAnSSHServer"

	// NoHostKeysReason: the server speaks SSH but offered no host key of a
	// supported type (Ed25519, ECDSA, RSA with SHA-2).
	NoHostKeysReason = "NoHostKeys"

	// SSHDHandshakeFailedReason: the SSH handshake failed for another reason;
	// the message says which.
	SSHDHandshakeFailedReason = "SSHDHandshakeFailed"
)

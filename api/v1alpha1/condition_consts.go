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
// the message carries the details. docs/usage.md lists every reason a user
// can read, where it appears and what to do about it.
const (
	// AllNodesInSyncReason: every selected node applied the current generation.
	AllNodesInSyncReason = "AllNodesInSync"

	// NoNodesSelectedReason: the nodeSelector selects no node.
	NoNodesSelectedReason = "NoNodesSelected"

	// WaitingForNodesReason: some selected nodes have not yet applied the
	// current generation.
	WaitingForNodesReason = "WaitingForNodes"

	// NodesFailingReason: some nodes reported an error applying the grant, or
	// cannot prove that its keys are gone.
	NodesFailingReason = "NodesFailing"

	// KeysRefusedReason: some keys were refused by the key policy.
	KeysRefusedReason = "KeysRefused"

	// KeySourceMissingReason: a referenced Secret, ConfigMap or data key does not exist.
	KeySourceMissingReason = "KeySourceMissing"

	// KeySourceForbiddenReason: a referenced Secret is in a namespace that has
	// not allowed the operator to read its Secrets (docs/usage.md, "Keys from
	// Secrets"); its keys are not granted.
	KeySourceForbiddenReason = "KeySourceForbidden"

	// UserRefusedReason: an account may not be granted, for example root
	// without the operator's permission.
	UserRefusedReason = "UserRefused"

	// InvalidSelectorReason: the nodeSelector cannot be parsed.
	InvalidSelectorReason = "InvalidSelector"

	// TooManyKeysReason: the grant is over the limits of one NodeAccess (keys
	// or rendered size). The nodes keep only the keys of the last accepted
	// version that the new version still grants: access is never widened by
	// a refused change, and always narrowed by it.
	TooManyKeysReason = "TooManyKeys"

	// ClusterLimitReason: accepting the grant would take the cluster over the
	// bounds of what every agent must hold (number of grants, total rendered
	// size, or key bytes for one account over all grants). As for
	// TooManyKeys, the nodes keep only what the last accepted version and
	// the new one both grant.
	ClusterLimitReason = "ClusterLimitExceeded"

	// SuspendedReason: spec.suspend is true; the keys are removed from every node.
	SuspendedReason = "Suspended"

	// ExpiredReason: the grant's expiresAt has passed; the keys are removed
	// from every node.
	ExpiredReason = "Expired"

	// RevokingReason: the NodeAccess is being deleted and some nodes have not
	// yet proven that its keys are gone.
	RevokingReason = "Revoking"

	// ReconcileFailedReason: the operator could not finish processing the
	// NodeAccess (an API error, say); the message says what failed. It retries
	// with a backoff.
	ReconcileFailedReason = "ReconcileFailed"

	// AsExpectedReason: the condition is in its healthy state.
	AsExpectedReason = "AsExpected"
)

// Reasons of status.refusedKeys (and their Warning Events): why one key or
// account was not granted. Messages never repeat the content of a key
// source; they name the source and line, and at most the type and
// fingerprint of a key that parsed.
const (
	// MalformedKeyReason: the line is not "<type> <base64> [comment]".
	MalformedKeyReason = "MalformedKey"
	// MultipleLinesReason: an inline key holds a line break.
	MultipleLinesReason = "MultipleLines"
	// ForbiddenCharacterReason: a control character, a look-alike space or invalid UTF-8.
	ForbiddenCharacterReason = "ForbiddenCharacter"
	// EmbeddedOptionsReason: the key carries an options prefix; options are typed fields.
	EmbeddedOptionsReason = "EmbeddedOptions"
	// MultipleKeysReason: a second key follows the first on the line.
	MultipleKeysReason = "MultipleKeys"
	// UnsupportedKeyTypeReason: DSA, or a type outside the accepted list.
	UnsupportedKeyTypeReason = "UnsupportedKeyType"
	// WeakKeyReason: RSA below the minimum size.
	WeakKeyReason = "WeakKey"
	// CertificateNotAllowedReason: an OpenSSH certificate, not accepted unless allowed.
	CertificateNotAllowedReason = "CertificateNotAllowed"
	// KeyTooLongReason: the line, or the whole key source, is over its length limit.
	KeyTooLongReason = "KeyTooLong"
	// A key source holding more keys than one source may is refused with
	// TooManyKeysReason.
)

// Reasons of a NodeAccessReport's Ready condition.
const (
	// AllGrantsAppliedReason: every grant selecting the node is applied, and
	// every revoked grant is proven gone.
	AllGrantsAppliedReason = "AllGrantsApplied"

	// AccountsFailingReason: some accounts could not be written or read; see accountErrors.
	AccountsFailingReason = "AccountsFailing"
)

// Reasons a node's agent gives, in its NodeAccessReport (grants[].reason,
// accountErrors[].reason) and so in NodeAccess status.failingNodes.
const (
	// InvalidGrantReason: the rendered grant cannot be applied (a bad selector or options).
	InvalidGrantReason = "InvalidGrant"
	// RevocationFailedReason: the grant's keys are still in an account's
	// file and could not be removed (the file could be read, not written).
	RevocationFailedReason = "RevocationFailed"
	// PossiblyHeldReason: an account's file cannot be read, so the agent
	// cannot prove that the grant's keys are gone from it; it keeps trying.
	PossiblyHeldReason = "PossiblyHeld"
	// InvalidUserNameReason: the account name is not a valid POSIX name.
	InvalidUserNameReason = "InvalidUserName"
	// UserNotFoundReason: the node's /etc/passwd has no such account.
	UserNotFoundReason = "UserNotFound"
	// RootNotAllowedReason: the account has uid 0 (root, or another name for
	// it) and the operator does not allow granting root.
	RootNotAllowedReason = "RootNotAllowed"
	// PasswdUnreadableReason: the node's /etc/passwd cannot be read.
	PasswdUnreadableReason = "PasswdUnreadable"
	// HomeNotFoundReason: the account's home directory does not exist.
	HomeNotFoundReason = "HomeNotFound"
	// HomeNotMountedReason: the account's home is not under a home root the
	// agent mounts (the manager's --home-roots); no key is written there.
	HomeNotMountedReason = "HomeNotMounted"
	// HomeUnsafeReason: the home is "/" or a system directory, or resolves to one.
	HomeUnsafeReason = "HomeUnsafe"
	// UnsafePathReason: a symbolic link, hard link or swapped directory on
	// the way to the file that sshd's StrictModes rule does not trust.
	UnsafePathReason = "UnsafePath"
	// NotRegularFileReason: something other than a directory or regular file stands in the way.
	NotRegularFileReason = "NotRegularFile"
	// UnsafeOwnerReason: a directory or the file is owned by someone other than the user or root.
	UnsafeOwnerReason = "UnsafeOwner"
	// UnsafePermissionsReason: a directory or the file is writable by group or others.
	UnsafePermissionsReason = "UnsafePermissions"
	// FileTooLargeReason: the file is, or would become, larger than the agent
	// may write (8 MiB); keys are not added, removals still happen.
	FileTooLargeReason = "FileTooLarge"
	// ChangedDuringEditReason: the file changed while the agent edited it; it retries.
	ChangedDuringEditReason = "ChangedDuringEdit"
	// ReadFailedReason: reading the file or a directory failed.
	ReadFailedReason = "ReadFailed"
	// WriteFailedReason: writing the file failed; it was left as it was.
	WriteFailedReason = "WriteFailed"
)

// Reasons of the Events the manager emits on a NodeAccess, beside the
// condition reasons above.
const (
	// RenderedEventReason: a new version of the grant was handed to the agents.
	RenderedEventReason = "Rendered"
	// GrantedEventReason: every selected node holds the grant's keys.
	GrantedEventReason = "Granted"
	// RevokedEventReason: every node proved the keys of a deleted grant gone.
	RevokedEventReason = "Revoked"
	// RevocationUnconfirmedEventReason: --revocation-timeout passed on a
	// deleted grant with nodes that have not proven its keys gone; the
	// NodeAccess is released, the Warning names those nodes, and their agents
	// keep trying to remove the keys.
	RevocationUnconfirmedEventReason = "RevocationUnconfirmed"
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

// Reasons of a login in a NodeAccessReport's status.logins (and so in
// NodeAccess status.lastLogins): why it is not trusted. A syslog line
// names the sending program and PID, but any local user can send the same
// bytes (logger -t 'sshd[PID]'), so a login is trusted only when the agent
// verified the sender.
const (
	// SenderUnverifiedReason: when the agent read the line, the PID it names
	// was not the root sshd session monitor of that account: the session
	// had already ended (a short command), the agent does not share the
	// host's PID namespace (without --end-sessions-on-revoke), or the line
	// was forged.
	SenderUnverifiedReason = "SenderUnverified"
	// SessionPredatesReadingReason: the session monitor the line names
	// started before the agent began reading the log, so the agent cannot
	// tell sshd's own line from a forged one naming that session.
	SessionPredatesReadingReason = "SessionPredatesReading"
	// DisputedSessionReason: more than one login line named the same
	// session, so at least one is forged; none of them is trusted, and the
	// session is never ended on their word.
	DisputedSessionReason = "DisputedSession"
)

// Reasons of a NodeAccessReport's status.loginTracking: why no sshd log
// can be followed, so logins are unknown.
const (
	// SSHDLogNotFoundReason: none of the files given to the agent
	// (--sshd-logs) exists on the node; sshd may log only to the systemd
	// journal, which the agent does not read (docs/usage.md, Logins).
	SSHDLogNotFoundReason = "SSHDLogNotFound"
	// SSHDLogUnreadableReason: a log file exists but cannot be read.
	SSHDLogUnreadableReason = "SSHDLogUnreadable"
)

// Reasons of the login Events on a NodeAccess.
const (
	// LoginAcceptedEventReason: a node's sshd let a key of the grant log in
	// (at most one Event per account and key a minute).
	LoginAcceptedEventReason = "LoginAccepted"
	// SessionEndedEventReason: a node's agent ended a session whose key the
	// grant no longer gives (--end-sessions-on-revoke).
	SessionEndedEventReason = "SessionEnded"
)

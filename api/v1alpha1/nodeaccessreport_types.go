package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Limits of a NodeAccessReport.
const (
	// MaxReportedGrants is the most grants one node report lists.
	MaxReportedGrants = 512
	// MaxReportedAccountErrors is the most account errors one node report lists.
	MaxReportedAccountErrors = 64
	// MaxHostKeys is the most SSH host keys one node report lists.
	MaxHostKeys = 8
	// MaxHostKeyLength is the longest base64 host key a report carries (a
	// 16384-bit RSA key fits).
	MaxHostKeyLength = 4096
	// MaxSSHDVersionLength is the longest sshd version string a report
	// carries: the SSH protocol's own limit on the version line.
	MaxSSHDVersionLength = 255
	// MaxReportedLogins is the most logins one node report lists.
	MaxReportedLogins = 20
	// MaxLoginFiles is the most sshd log files one agent follows.
	MaxLoginFiles = 8
)

// Values of NodeAccessReportStatus.expiryEnforcedBy.
const (
	// ExpiryBySSHDAndAgent: the node's sshd refuses expired keys by itself,
	// and the agent removes them.
	ExpiryBySSHDAndAgent = "SSHDAndAgent"
	// ExpiryByAgent: only the agent removes expired keys.
	ExpiryByAgent = "Agent"
)

// NodeAccessReportSpec names the node a report describes.
type NodeAccessReportSpec struct {
	// nodeName is the node this report describes; it equals metadata.name and
	// never changes.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="nodeName is immutable"
	NodeName string `json:"nodeName"`
}

// NodeAccessReportStatus is what one node's agent last applied.
type NodeAccessReportStatus struct {
	// conditions of the node's agent: Ready is True when every grant selecting
	// the node was applied without error.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// grants lists every NodeAccess that selects this node, and every one
	// whose keys are, or may be, still on it, with the rendered hash the
	// agent applied. Grants not applied come first. The node's agent
	// writes the list whole (it is atomic); a grant listed twice counts as
	// applied only when both entries say so for the same hash, and as
	// holding the larger count of keys.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=512
	Grants []GrantReport `json:"grants,omitempty"`

	// accountErrors lists accounts the agent could not write, and why.
	// +optional
	// +listType=map
	// +listMapKey=user
	// +kubebuilder:validation:MaxItems=64
	AccountErrors []AccountError `json:"accountErrors,omitempty"`

	// keys counts the key lines the agent keeps on this node, over all accounts.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Keys int32 `json:"keys,omitempty"`

	// expiryEnforcedBy says who removes expiring keys on this node:
	// SSHDAndAgent when the node's sshd understands the expiry-time key
	// option in UTC (OpenSSH 9.1 or later), which the agent then writes on
	// every expiring line, so sshd refuses the key at its instant even when
	// the agent, the network or the control plane is down; Agent when only
	// the agent removes expired keys, by its own clock (an older or unknown
	// sshd, or a failed probe).
	// +optional
	// +kubebuilder:validation:Enum=SSHDAndAgent;Agent
	ExpiryEnforcedBy string `json:"expiryEnforcedBy,omitempty"`

	// lastChangeTime is when the agent last changed a file or this report's content.
	// +optional
	LastChangeTime *metav1.Time `json:"lastChangeTime,omitempty"`

	// heartbeatTime is when the agent last confirmed this report; it is renewed
	// at a slow interval even when nothing changes.
	// +optional
	HeartbeatTime *metav1.Time `json:"heartbeatTime,omitempty"`

	// sshd is the node's SSH server as the agent last observed it through an
	// SSH handshake (no login): its address, version and host public keys.
	// Absent when the agent does not probe sshd (its --sshd-port is 0 or it
	// knows no address). It is as trustworthy as the policy that lets an
	// agent write only its own node's report.
	// +optional
	SSHD *SSHDStatus `json:"sshd,omitempty"`

	// logins are the most recent logins the node's sshd logged with keys
	// that grants give to the account logged in to, newest first (at most
	// 20). Each names the grant, the key's comment and fingerprint, the
	// account, the client's address and whether the line provably came from
	// sshd (trusted). Present only when the operator tracks logins
	// (--track-logins).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=20
	Logins []NodeLogin `json:"logins,omitempty"`

	// loginTracking says which sshd logs the agent follows, how many logins
	// it saw with keys no grant gives, and why it cannot follow any. Absent
	// when the operator does not track logins.
	// +optional
	LoginTracking *LoginTracking `json:"loginTracking,omitempty"`
}

// LoginTracking is the state of an agent's reading of its node's sshd logs.
type LoginTracking struct {
	// files are the host paths of the sshd logs the agent follows, of those
	// it was given (--sshd-logs), that exist.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=4096
	Files []string `json:"files,omitempty"`

	// unmanagedLogins counts the key logins the agent read whose key no grant
	// gives to that account (the account's own keys, say), since the node's
	// report was created. Neither the key nor the account is stored.
	// +optional
	// +kubebuilder:validation:Minimum=0
	UnmanagedLogins int64 `json:"unmanagedLogins,omitempty"`

	// endSessionsOnRevoke is true when the agent ends the sshd sessions that
	// logged in with a key when no grant gives that key to the account any
	// more (the manager's --end-sessions-on-revoke).
	// +optional
	EndSessionsOnRevoke bool `json:"endSessionsOnRevoke,omitempty"`

	// reason is a CamelCase code when no log can be followed, for example
	// SSHDLogNotFound: logins are then not known, not absent.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^([A-Z][A-Za-z0-9]*)?$`
	Reason string `json:"reason,omitempty"`

	// message explains the failure.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// NodeLogin is one key login the node's sshd logged ("Accepted publickey
// for USER from ADDRESS port PORT ssh2: TYPE FINGERPRINT"), attributed to
// the grant that gives that key to that account.
type NodeLogin struct {
	// time is when the node's syslog daemon received sshd's line.
	// +required
	Time metav1.Time `json:"time"`

	// user is the account logged in to.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_-]*$`
	User string `json:"user"`

	// nodeAccess is the name of the NodeAccess whose key logged in.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	NodeAccess string `json:"nodeAccess"`

	// nodeAccessUID is that NodeAccess's UID.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	NodeAccessUID string `json:"nodeAccessUID"`

	// comment is the key's comment in the grant, which names its owner.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[^\x00-\x1f\x7f]*$`
	Comment string `json:"comment,omitempty"`

	// fingerprint is the SHA256 fingerprint of the key that logged in.
	// +required
	// +kubebuilder:validation:MinLength=8
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^SHA256:[A-Za-z0-9+/]+$`
	Fingerprint string `json:"fingerprint"`

	// from is the client's IP address, as sshd saw it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[0-9A-Fa-f.:]+$`
	From string `json:"from"`

	// port is the client's source port.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`

	// trusted is true when the line provably came from the node's sshd:
	// when the agent read it, the process it names was the root sshd
	// session monitor of that very account, started after the agent began
	// reading the log, and no other login line named it. Any local user
	// can write a line of the same text into syslog, so every other line is
	// untrusted (reason says why), and attributed only as what it claims.
	// +optional
	Trusted bool `json:"trusted,omitempty"`

	// reason is a CamelCase code saying why the login is not trusted, for
	// example SenderUnverified.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^([A-Z][A-Za-z0-9]*)?$`
	Reason string `json:"reason,omitempty"`

	// endedAt is when the agent ended this session because no grant gives
	// its key to the account any more (only with --end-sessions-on-revoke,
	// and only for trusted sessions).
	// +optional
	EndedAt *metav1.Time `json:"endedAt,omitempty"`

	// endError says why the agent could not end this session although its
	// key was revoked; it keeps trying while the session lives.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	EndError string `json:"endError,omitempty"`
}

// SSHDStatus is what an agent observed of its node's sshd. Either hostKeys
// holds the keys the server proved it holds, or reason says why none are
// known; keys from an earlier observation are never kept.
type SSHDStatus struct {
	// address is the host and port the agent probed, for example
	// "10.0.0.5:22" or "[fd00::5]:22": by default the node's own IP (the
	// pod's status.hostIP) and port 22.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=261
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9.:\[\]%_-]+$`
	Address string `json:"address"`

	// version is the server's SSH version string, for example
	// "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6", reduced to printable ASCII.
	// +optional
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[ -~]*$`
	Version string `json:"version,omitempty"`

	// hostKeys are the server's host public keys, one per algorithm family
	// (Ed25519, ECDSA, RSA), each proven by the server's signature during
	// the handshake. Empty when the probe failed.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	HostKeys []SSHHostKey `json:"hostKeys,omitempty"`

	// lastChangeTime is when the agent first observed the current content of
	// this field (keys, version or failure); the report's heartbeatTime says
	// when it was last confirmed. The agent probes at start and at every
	// resync.
	// +optional
	LastChangeTime *metav1.Time `json:"lastChangeTime,omitempty"`

	// reason is a CamelCase code when no host key could be observed, for
	// example SSHDUnreachable or NotAnSSHServer.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^([A-Z][A-Za-z0-9]*)?$`
	Reason string `json:"reason,omitempty"`

	// message explains the failure.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// SSHHostKey is one host public key of a node's sshd.
type SSHHostKey struct {
	// type is the key's type as known_hosts writes it, for example
	// ssh-ed25519, ecdsa-sha2-nistp256 or ssh-rsa.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[a-z0-9@.-]+$`
	Type string `json:"type"`

	// key is the public key in base64, as in a known_hosts line.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9+/]+={0,3}$`
	Key string `json:"key"`

	// fingerprint is the key's SHA256 fingerprint, as ssh-keygen -l prints
	// it, for example "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s".
	// +required
	// +kubebuilder:validation:MinLength=8
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^SHA256:[A-Za-z0-9+/]+$`
	Fingerprint string `json:"fingerprint"`
}

// GrantReport is the state of one NodeAccess on one node.
type GrantReport struct {
	// name of the NodeAccess.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// uid of the NodeAccess.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	UID string `json:"uid"`

	// generation of the NodeAccess whose rendering was applied.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Generation int64 `json:"generation,omitempty"`

	// hash of the rendered content applied.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Hash string `json:"hash,omitempty"`

	// keys counts this grant's key lines in the node's files after the
	// agent's last pass: what it found there, not what it meant to write.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Keys int32 `json:"keys,omitempty"`

	// applied is true when the agent proved the grant's state on the node:
	// every account holds exactly its keys, or, for a suspended, expired or
	// revoked grant, none of them is left. It is false whenever the agent
	// cannot prove it, for example when an account's file cannot be read.
	// +optional
	Applied bool `json:"applied,omitempty"`

	// accounts lists the accounts whose files hold this grant's keys, or may
	// hold them (their file cannot be read), after the agent's last pass.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=32
	Accounts []string `json:"accounts,omitempty"`

	// reason is a CamelCase code when the grant is not applied, for example
	// RevocationFailed or PossiblyHeld (see docs/usage.md).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason,omitempty"`

	// message explains the failure.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// AccountError says why the agent could not write, or read, one account's file.
type AccountError struct {
	// user is the local account.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=32
	User string `json:"user"`

	// reason is a CamelCase code, for example UserNotFound or UnsafePermissions.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason"`

	// message explains the failure.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// keysUnknown is true when the file could not be read at all, so the
	// agent cannot tell which keys it holds; every grant that may have keys
	// there is listed as possibly held.
	// +optional
	KeysUnknown bool `json:"keysUnknown,omitempty"`
}

// NodeAccessReport is one node's account of the keys it holds. Its name is the
// node's name; only that node's agent writes it.
//
// +kubebuilder:validation:XValidation:rule="self.spec.nodeName == self.metadata.name",message="spec.nodeName must equal metadata.name"
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=nar,categories=nodeaccess-operator
// +kubebuilder:printcolumn:name="Keys",type=integer,JSONPath=`.status.keys`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Last-Change",type=date,JSONPath=`.status.lastChangeTime`
// +kubebuilder:printcolumn:name="Heartbeat",type=date,JSONPath=`.status.heartbeatTime`
type NodeAccessReport struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the object's metadata; its name is the node's.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec names the node.
	// +required
	Spec NodeAccessReportSpec `json:"spec"`

	// status is what the agent applied.
	// +optional
	Status NodeAccessReportStatus `json:"status,omitempty"`
}

// NodeAccessReportList is a list of NodeAccessReport.
//
// +kubebuilder:object:root=true
type NodeAccessReportList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the list's metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the reports.
	Items []NodeAccessReport `json:"items"`
}

func init() {
	SchemeBuilder.Register(&NodeAccessReport{}, &NodeAccessReportList{})
}

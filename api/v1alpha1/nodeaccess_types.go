package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Limits of the API. They bound what one NodeAccess can ask of every agent;
// docs/usage.md explains them to users.
const (
	// MaxUsers is the most accounts one NodeAccess may grant access to.
	MaxUsers = 32
	// MaxKeysPerUser is the most inline keys one account may list.
	MaxKeysPerUser = 256
	// MaxKeySourcesPerUser is the most Secret or ConfigMap references one account may list.
	MaxKeySourcesPerUser = 16
	// MaxKeyLength is the longest inline key line accepted (a 16384-bit RSA key fits).
	MaxKeyLength = 8192
	// MaxFailingNodes is the most entries status.failingNodes lists.
	MaxFailingNodes = 16
	// MaxRefusedKeys is the most entries status.refusedKeys lists.
	MaxRefusedKeys = 32
	// MaxLastLogins is the most entries status.lastLogins lists.
	MaxLastLogins = 16
)

// NodeAccessSpec is what a team asks for: which accounts on which nodes accept
// which SSH public keys, and until when.
//
// +kubebuilder:validation:XValidation:rule=`!has(self.expiresAt) || self.users.all(u, !has(u.keys) || u.keys.all(k, !has(k.expiresAt) || timestamp(k.expiresAt) <= timestamp(self.expiresAt)))`,message="a key's expiresAt must not be later than the grant's expiresAt"
type NodeAccessSpec struct {
	// nodeSelector selects the nodes whose accounts receive the keys, by the
	// labels of their Node objects. It is required so that no grant reaches every
	// node by omission: an empty selector ({}) selects every Linux node on which
	// the agent runs. A node that stops matching has the keys removed.
	// +required
	// +kubebuilder:validation:XValidation:rule=`!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])`,message="matchExpressions operator must be one of In, NotIn, Exists, DoesNotExist"
	// +kubebuilder:validation:XValidation:rule=`!has(self.matchExpressions) || self.matchExpressions.all(e, (e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0))`,message="matchExpressions values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist"
	NodeSelector metav1.LabelSelector `json:"nodeSelector"`

	// users lists the local accounts on the selected nodes and the keys each one
	// accepts. Each account appears once. The account must already exist in the
	// node's /etc/passwd; the operator never creates accounts. The account root
	// is refused unless the operator was installed to allow it.
	// +required
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	Users []UserAccess `json:"users"`

	// expiresAt is when the whole grant ends (RFC 3339). At that instant every key
	// of this NodeAccess is removed from every node, by the agents themselves even
	// when the operator is down. Unset means the grant does not expire.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// suspend, when true, removes this grant's keys from every node while keeping
	// the object, so access can be paused and restored. Defaults to false.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// UserAccess grants keys to one local account.
//
// +kubebuilder:validation:XValidation:rule="has(self.keys) || has(self.keysFrom)",message="each user needs at least one entry in keys or keysFrom"
type UserAccess struct {
	// name is the local account on the node, as in /etc/passwd: a lowercase
	// letter or underscore, then up to 31 lowercase letters, digits, '_' or '-'.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_-]*$`
	Name string `json:"name"`

	// keys lists public keys written inline.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	Keys []AuthorizedKey `json:"keys,omitempty"`

	// keysFrom lists Secrets and ConfigMaps holding public keys, one per line in
	// authorized_keys format (blank lines and lines starting with '#' are
	// skipped). A change to the referenced object reaches the nodes without any
	// change to this NodeAccess.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	KeysFrom []KeySource `json:"keysFrom,omitempty"`

	// options restricts what every key of this account may do, unless a key or
	// key source sets options of its own (which then replace these entirely).
	// +optional
	Options *KeyOptions `json:"options,omitempty"`
}

// AuthorizedKey is one public key written inline.
type AuthorizedKey struct {
	// key is one public key in authorized_keys format without options:
	// "<type> <base64> [comment]", for example "ssh-ed25519 AAAAC3Nz... alice@laptop".
	// It is a single line: no line breaks or NUL characters. Options such as
	// from= or command= are set through the options field, never in the key. The
	// operator parses the key and refuses DSA, short RSA and unparseable keys.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=8192
	// +kubebuilder:validation:Pattern=`^(ssh-|ecdsa-|sk-)[a-zA-Z0-9@._-]+ +[A-Za-z0-9+/]+={0,3}( [^\r\n\x00]*)?$`
	Key string `json:"key"`

	// comment names the key's owner on the node. It replaces the key's own
	// comment in authorized_keys; the operator adds the NodeAccess name after it.
	// Printable characters only.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[^\x00-\x1f\x7f]*$`
	Comment string `json:"comment,omitempty"`

	// expiresAt is when this key stops being accepted (RFC 3339); it must not be
	// later than the grant's expiresAt. The key is removed from every node at that
	// instant, by the agents' own clocks. Unset means the key lasts as long as
	// the grant.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// options restricts what this key may do. When set, it replaces the
	// account's options for this key.
	// +optional
	Options *KeyOptions `json:"options,omitempty"`
}

// KeySource refers to public keys kept in a Secret or a ConfigMap. Exactly one
// of secretKeyRef and configMapKeyRef is set.
//
// +kubebuilder:validation:XValidation:rule="has(self.secretKeyRef) != has(self.configMapKeyRef)",message="exactly one of secretKeyRef or configMapKeyRef must be set"
type KeySource struct {
	// secretKeyRef selects a key of a Secret.
	// +optional
	SecretKeyRef *ObjectKeySelector `json:"secretKeyRef,omitempty"`

	// configMapKeyRef selects a key of a ConfigMap.
	// +optional
	ConfigMapKeyRef *ObjectKeySelector `json:"configMapKeyRef,omitempty"`

	// options restricts what every key read from this source may do. When set,
	// it replaces the account's options for these keys.
	// +optional
	Options *KeyOptions `json:"options,omitempty"`
}

// ObjectKeySelector names one data key of a namespaced Secret or ConfigMap.
type ObjectKeySelector struct {
	// namespace of the Secret or ConfigMap.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace"`

	// name of the Secret or ConfigMap.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// key is the data key holding the public keys, one per line.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// KeyOptions are the authorized_keys options sshd understands that teams ask
// for, as typed fields: the operator writes them, so no free-form option text
// ever reaches a node.
type KeyOptions struct {
	// from restricts the source addresses the key is accepted from, as sshd
	// patterns: host names, addresses or CIDR ranges, with '*' and '?' wildcards
	// and a leading '!' to exclude, for example ["10.0.0.0/8", "*.corp.example"].
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^!?[A-Za-z0-9.:*?/_%-]+$`
	From []string `json:"from,omitempty"`

	// command forces this command to run whatever the client asks, for example
	// "internal-sftp". Printable characters only, no double quote or backslash.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^[^"\\\x00-\x1f\x7f]+$`
	Command string `json:"command,omitempty"`

	// restrict turns on every restriction sshd knows (no forwarding of any kind,
	// no pty, no ~/.ssh/rc), including ones added in future sshd versions.
	// +optional
	Restrict bool `json:"restrict,omitempty"`

	// noPortForwarding forbids TCP port forwarding.
	// +optional
	NoPortForwarding bool `json:"noPortForwarding,omitempty"`

	// noAgentForwarding forbids ssh-agent forwarding.
	// +optional
	NoAgentForwarding bool `json:"noAgentForwarding,omitempty"`

	// noX11Forwarding forbids X11 forwarding.
	// +optional
	NoX11Forwarding bool `json:"noX11Forwarding,omitempty"`

	// noPTY forbids allocating a terminal.
	// +optional
	NoPTY bool `json:"noPTY,omitempty"`

	// noUserRC forbids running ~/.ssh/rc.
	// +optional
	NoUserRC bool `json:"noUserRC,omitempty"`
}

// NodeAccessStatus is what the operator observed of a NodeAccess.
type NodeAccessStatus struct {
	// conditions tell whether the grant is in force: Ready (every selected node
	// holds exactly this grant's keys), Progressing (nodes are being brought in
	// line) and Degraded (a key was refused, a key source is missing, or a node
	// failed to apply).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the metadata.generation the status describes.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// selectedNodes counts the nodes the nodeSelector selects.
	// +optional
	// +kubebuilder:validation:Minimum=0
	SelectedNodes int32 `json:"selectedNodes,omitempty"`

	// nodesInSync counts the selected nodes whose agent reported applying the
	// current generation of this grant.
	// +optional
	// +kubebuilder:validation:Minimum=0
	NodesInSync int32 `json:"nodesInSync,omitempty"`

	// keysGranted counts the keys in force: accepted by policy, resolved from
	// their sources and not expired, summed over all accounts.
	// +optional
	// +kubebuilder:validation:Minimum=0
	KeysGranted int32 `json:"keysGranted,omitempty"`

	// nextExpiry is the earliest expiresAt, of a key or of the grant, still to come.
	// +optional
	NextExpiry *metav1.Time `json:"nextExpiry,omitempty"`

	// failingNodes lists selected nodes that could not apply the grant, with the
	// reason (at most 16; see the node's NodeAccessReport for the rest).
	// +optional
	// +listType=map
	// +listMapKey=node
	// +kubebuilder:validation:MaxItems=16
	FailingNodes []NodeFailure `json:"failingNodes,omitempty"`

	// refusedKeys lists keys the operator did not grant, with the reason (at most 32).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	RefusedKeys []KeyRefusal `json:"refusedKeys,omitempty"`

	// lastLogins are the most recent logins with this grant's keys, one per
	// account and key (its newest login, on whichever node), newest first,
	// at most 16. They come from the node reports, only when the operator
	// tracks logins (--track-logins); see each node's NodeAccessReport for
	// more.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	LastLogins []LastLogin `json:"lastLogins,omitempty"`
}

// LastLogin is the newest login of one key of a grant into one account.
type LastLogin struct {
	// user is the account logged in to.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_-]*$`
	User string `json:"user"`

	// comment is the key's comment in the grant.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[^\x00-\x1f\x7f]*$`
	Comment string `json:"comment,omitempty"`

	// fingerprint is the SHA256 fingerprint of the key.
	// +required
	// +kubebuilder:validation:MinLength=8
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^SHA256:[A-Za-z0-9+/]+$`
	Fingerprint string `json:"fingerprint"`

	// node is the node logged in to.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node"`

	// time is when the node's sshd logged the login.
	// +required
	Time metav1.Time `json:"time"`

	// from is the client's IP address.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[0-9A-Fa-f.:]+$`
	From string `json:"from"`

	// trusted is true when the node's agent proved the line came from sshd
	// (see NodeAccessReport status.logins).
	// +optional
	Trusted bool `json:"trusted,omitempty"`

	// reason says why the login is not trusted.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^([A-Z][A-Za-z0-9]*)?$`
	Reason string `json:"reason,omitempty"`
}

// NodeFailure says why one node could not apply a grant.
type NodeFailure struct {
	// node is the name of the Node.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node"`

	// reason is a CamelCase code for the failure, for example UserNotFound or UnsafePermissions.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason"`

	// message explains the failure to a person.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// KeyRefusal says why one key was not granted.
type KeyRefusal struct {
	// user is the account the key was meant for.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=32
	User string `json:"user"`

	// source says where the key came from: "keys[2]", or
	// "secret team-a/keys key authorized_keys line 3".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Source string `json:"source"`

	// reason is a CamelCase code, for example WeakKey or UnsupportedKeyType.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason"`

	// message explains the refusal to a person.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// NodeAccess grants SSH access to local accounts on the nodes it selects. The
// operator keeps the authorized_keys file of every selected account in line
// with the set of NodeAccess objects: keys are added within about a second and
// removed on delete, on suspend and at expiry; lines written by anyone else
// are never touched. Creating one is equivalent to logging in as those
// accounts on those nodes, so only cluster administrators, or roles they grant,
// may create it.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=na,categories=nodeaccess-operator
// +kubebuilder:printcolumn:name="Users",type=string,JSONPath=`.spec.users[*].name`
// +kubebuilder:printcolumn:name="Keys",type=integer,JSONPath=`.status.keysGranted`
// +kubebuilder:printcolumn:name="Selected",type=integer,JSONPath=`.status.selectedNodes`
// +kubebuilder:printcolumn:name="In-Sync",type=integer,JSONPath=`.status.nodesInSync`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=10
// +kubebuilder:printcolumn:name="Next-Expiry",type=string,JSONPath=`.status.nextExpiry`,priority=10
// +kubebuilder:printcolumn:name="Suspended",type=boolean,JSONPath=`.spec.suspend`,priority=10
type NodeAccess struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the object's metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is what the team asks for.
	// +required
	Spec NodeAccessSpec `json:"spec"`

	// status is what the operator observed.
	// +optional
	Status NodeAccessStatus `json:"status,omitempty"`
}

// NodeAccessList is a list of NodeAccess.
//
// +kubebuilder:object:root=true
type NodeAccessList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the list's metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the NodeAccess objects.
	Items []NodeAccess `json:"items"`
}

func init() {
	SchemeBuilder.Register(&NodeAccess{}, &NodeAccessList{})
}

package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RenderedNodeAccessSpec is one NodeAccess as the node agents need it: keys
// resolved from their sources, checked by the key policy and normalised.
// It carries nothing secret-bearing beyond public keys, so agents never need
// to read Secrets or ConfigMaps.
type RenderedNodeAccessSpec struct {
	// nodeAccessName is the name of the NodeAccess this was rendered from.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	NodeAccessName string `json:"nodeAccessName"`

	// nodeAccessUID is the UID of that NodeAccess.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	NodeAccessUID string `json:"nodeAccessUID"`

	// generation is the metadata.generation of the NodeAccess rendered.
	// +required
	// +kubebuilder:validation:Minimum=0
	Generation int64 `json:"generation"`

	// hash identifies the rendered content; agents report the hash they applied.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Hash string `json:"hash"`

	// nodeSelector is the NodeAccess's node selector.
	// +required
	NodeSelector metav1.LabelSelector `json:"nodeSelector"`

	// suspend, when true, means the keys must not be on any node.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// expiresAt is when the whole grant ends; agents remove the keys at that
	// instant by their own clocks.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// users are the accounts and their accepted keys.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	Users []RenderedUser `json:"users,omitempty"`
}

// RenderedUser is one account and the keys it accepts.
type RenderedUser struct {
	// name is the local account.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_-]*$`
	Name string `json:"name"`

	// keys are the accepted keys, in the order the NodeAccess lists them.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=4096
	Keys []RenderedKey `json:"keys,omitempty"`
}

// RenderedKey is one normalised public key with its options.
type RenderedKey struct {
	// type is the key's algorithm, for example ssh-ed25519.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[a-zA-Z0-9@._-]+$`
	Type string `json:"type"`

	// data is the key blob in base64.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=8192
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9+/]+={0,3}$`
	Data string `json:"data"`

	// comment is written after the key.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[^\x00-\x1f\x7f]*$`
	Comment string `json:"comment,omitempty"`

	// fingerprint is the key's SHA256 fingerprint, for reports and logs.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Fingerprint string `json:"fingerprint,omitempty"`

	// expiresAt is when the key stops being accepted.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// options restrict what the key may do.
	// +optional
	Options *KeyOptions `json:"options,omitempty"`
}

// RenderedNodeAccess is the desired state of one NodeAccess as the node
// agents read it. The operator writes one per NodeAccess, in its own
// namespace, only when the rendered content changes; it is internal to the
// operator and not meant to be edited.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=rna,categories=nodeaccess-operator
// +kubebuilder:printcolumn:name="NodeAccess",type=string,JSONPath=`.spec.nodeAccessName`
// +kubebuilder:printcolumn:name="Generation",type=integer,JSONPath=`.spec.generation`
// +kubebuilder:printcolumn:name="Hash",type=string,JSONPath=`.spec.hash`,priority=10
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RenderedNodeAccess struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the object's metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the rendered desired state.
	// +required
	Spec RenderedNodeAccessSpec `json:"spec"`
}

// RenderedNodeAccessList is a list of RenderedNodeAccess.
//
// +kubebuilder:object:root=true
type RenderedNodeAccessList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the list's metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the RenderedNodeAccess objects.
	Items []RenderedNodeAccess `json:"items"`
}

func init() {
	SchemeBuilder.Register(&RenderedNodeAccess{}, &RenderedNodeAccessList{})
}

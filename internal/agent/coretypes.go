package agent

import (
	"maps"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The agent's own views of the two core kinds it reads, a Node and a
// ConfigMap: the members it uses and nothing else. Decoding a Node into
// nodeMeta skips its spec and status (tens of KiB on a real node, sent again
// at every kubelet status update), and leaving k8s.io/api/core/v1 out of
// the agent takes about a fifth of its code and read-only data out of the
// binary, and so out of every node's memory: the kernel maps a binary's
// pages around each one the program touches, so an agent's resident size
// follows the size of its code, not only of the code it runs.
//
// The API server's JSON for these kinds decodes into them unchanged; the
// agent never writes them.

// coreGroupVersion is the group and version of Nodes and ConfigMaps.
var coreGroupVersion = schema.GroupVersion{Version: "v1"}

// nodeMeta is a Node's type and metadata.
type nodeMeta struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
}

type nodeMetaList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []nodeMeta `json:"items"`
}

// configMap is a ConfigMap's type, metadata and string data.
type configMap struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Data              map[string]string `json:"data,omitempty"`
}

type configMapList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []configMap `json:"items"`
}

func addCoreTypes(s *runtime.Scheme) {
	s.AddKnownTypeWithName(coreGroupVersion.WithKind("Node"), &nodeMeta{})
	s.AddKnownTypeWithName(coreGroupVersion.WithKind("NodeList"), &nodeMetaList{})
	s.AddKnownTypeWithName(coreGroupVersion.WithKind("ConfigMap"), &configMap{})
	s.AddKnownTypeWithName(coreGroupVersion.WithKind("ConfigMapList"), &configMapList{})
	metav1.AddToGroupVersion(s, coreGroupVersion)
}

func (n *nodeMeta) DeepCopy() *nodeMeta {
	if n == nil {
		return nil
	}
	out := &nodeMeta{TypeMeta: n.TypeMeta}
	n.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	return out
}

func (n *nodeMeta) DeepCopyObject() runtime.Object { return n.DeepCopy() }

func (l *nodeMetaList) DeepCopyObject() runtime.Object {
	if l == nil {
		return nil
	}
	out := &nodeMetaList{TypeMeta: l.TypeMeta, Items: copyItems(l.Items, (*nodeMeta).DeepCopy)}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	return out
}

func (c *configMap) DeepCopy() *configMap {
	if c == nil {
		return nil
	}
	out := &configMap{TypeMeta: c.TypeMeta, Data: maps.Clone(c.Data)}
	c.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	return out
}

func (c *configMap) DeepCopyObject() runtime.Object { return c.DeepCopy() }

func (l *configMapList) DeepCopyObject() runtime.Object {
	if l == nil {
		return nil
	}
	out := &configMapList{TypeMeta: l.TypeMeta, Items: copyItems(l.Items, (*configMap).DeepCopy)}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	return out
}

// copyItems deep-copies a list's items with deepCopy (nil stays nil).
func copyItems[T any](items []T, deepCopy func(*T) *T) []T {
	if items == nil {
		return nil
	}
	out := make([]T, len(items))
	for i := range items {
		out[i] = *deepCopy(&items[i])
	}
	return out
}

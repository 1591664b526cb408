package agent

import (
	"bytes"
	"encoding/json"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	jsonserializer "k8s.io/apimachinery/pkg/runtime/serializer/json"

	"github.com/nodeaccess/nodeaccess-operator/internal/eventstream"
)

// agentSerializers is what the agent's REST clients negotiate: JSON alone
// (the agent sends and accepts nothing else), with a cheaper way to find
// a document's kind. Conversion is left out, as
// CodecFactory.WithoutConversion does.
//
// A watch event is read as its frame, its envelope, and then its object,
// and client-go's JSON serializer first looks for the kind of each by
// parsing the whole document, then decodes it: five passes over every
// event, most of an agent's decoding. The API server writes an object's
// kind and apiVersion as its first two members and an event's envelope as
// "type" then "object", so leadingKind reads those first tokens and
// falls back to the full parse whenever a document starts any other way.
// Decoding itself is client-go's, unchanged. The one difference is for a
// document that names its kind twice: the full parse takes the last, this
// the first. Only a server that is not the API server writes such a
// document, and the agent's API server is its authority anyway (it serves
// the grants), over TLS.
type agentSerializers struct {
	runtime.NegotiatedSerializer
	json []runtime.SerializerInfo
}

func newAgentSerializers() agentSerializers {
	s := jsonserializer.NewSerializerWithOptions(leadingKind{}, agentScheme, agentScheme, jsonserializer.SerializerOptions{})
	strict := jsonserializer.NewSerializerWithOptions(leadingKind{}, agentScheme, agentScheme, jsonserializer.SerializerOptions{Strict: true})
	return agentSerializers{
		NegotiatedSerializer: agentCodecs.WithoutConversion(),
		json: []runtime.SerializerInfo{{
			MediaType: runtime.ContentTypeJSON, MediaTypeType: "application", MediaTypeSubType: "json",
			EncodesAsText: true, Serializer: s, StrictSerializer: strict,
			StreamSerializer: &runtime.StreamSerializerInfo{EncodesAsText: true, Serializer: eventstream.Serializer{Serializer: s}, Framer: eventstream.Framer{}},
		}},
	}
}

func (s agentSerializers) SupportedMediaTypes() []runtime.SerializerInfo { return s.json }

// leadingKind is a json.MetaFactory that reads a document's kind from its
// leading members.
type leadingKind struct{}

func (leadingKind) Interpret(data []byte) (*schema.GroupVersionKind, error) {
	if gvk, ok := leadingGVK(data); ok {
		return gvk, nil
	}
	return jsonserializer.DefaultMetaFactory.Interpret(data)
}

// leadingGVK reads the kind of a document that starts with its kind and
// apiVersion (in either order) as strings, or that starts as a watch
// event's envelope does ("type" as a string, then "object"), which has no
// kind of its own. ok is false for any other start, a repeated member, or
// a token that does not parse: the caller then parses the whole document.
func leadingGVK(data []byte) (_ *schema.GroupVersionKind, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	var kind, apiVersion, eventType *string
	for range 2 {
		k, err := dec.Token()
		key, isString := k.(string)
		if err != nil || !isString {
			return nil, false
		}
		if key == "object" && eventType != nil && kind == nil && apiVersion == nil {
			return &schema.GroupVersionKind{}, true
		}
		v, err := dec.Token()
		value, isString := v.(string)
		if err != nil || !isString {
			return nil, false
		}
		var into **string
		switch key {
		case "kind":
			into = &kind
		case "apiVersion":
			into = &apiVersion
		case "type":
			into = &eventType
		default:
			return nil, false
		}
		if *into != nil {
			return nil, false
		}
		*into = &value
	}
	if kind == nil || apiVersion == nil || *kind == "" {
		return nil, false
	}
	gv, err := schema.ParseGroupVersion(*apiVersion)
	if err != nil {
		return nil, false
	}
	return &schema.GroupVersionKind{Group: gv.Group, Version: gv.Version, Kind: *kind}, true
}

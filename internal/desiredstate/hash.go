package desiredstate

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nav1 "github.com/nodeaccess/nodeaccess-operator/api/v1alpha1"
)

// Hash identifies the content of a rendered spec: selector, suspend, expiry
// and keys. It ignores the source's name, UID, generation and the hash field
// itself, so it changes exactly when what nodes must hold changes.
func Hash(spec *nav1.RenderedNodeAccessSpec) (string, error) {
	content := struct {
		NodeSelector metav1.LabelSelector `json:"s"`
		Suspend      bool                 `json:"p"`
		ExpiresAt    *metav1.Time         `json:"e"`
		Users        []nav1.RenderedUser  `json:"u"`
	}{spec.NodeSelector, spec.Suspend, spec.ExpiresAt, spec.Users}
	data, err := json.Marshal(content)
	if err != nil {
		return "", fmt.Errorf("encoding rendered spec: %w", err)
	}
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:16]), nil
}

//go:build tools

// Package tools pins krew's own manifest validator, which checks
// plugins/nodeaccess.yaml.
package tools

import _ "sigs.k8s.io/krew/cmd/validate-krew-manifest"

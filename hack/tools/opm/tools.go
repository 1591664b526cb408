//go:build tools

// Package tools pins opm, built into bin/k8s.
package tools

import _ "github.com/operator-framework/operator-registry/cmd/opm"

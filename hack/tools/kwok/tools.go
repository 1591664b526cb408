//go:build tools

// Package tools pins kwok, built into bin/k8s.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"

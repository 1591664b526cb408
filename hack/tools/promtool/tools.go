//go:build tools

// Package tools pins promtool, built into bin/k8s: the tests run
// `promtool test rules` on the alerts the manager installs.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"

//go:build tools

// Package upstreamtka pins the upstream Go TKA (github.com/spechtlabs/tka) whose CLI the e2e
// compatibility scenario runs against our server as `ts-k8s-auth`. Its own
// module, so upstream keeps its tailscale.com and Kubernetes client versions. The blank import
// keeps the CLI's main package (and so its dependencies) in go.mod/go.sum; ../build.sh builds it
// with CGO_ENABLED=0. Never compiled itself.
package upstreamtka

import (
	_ "github.com/spechtlabs/tka/cmd/cli"
)

//go:build tools

// Package headscale pins the headscale control server the e2e tests run against.
// It is a module of its own so that headscale keeps its own
// tailscale.com version. The blank import keeps the main package (and so its
// dependencies) in go.mod/go.sum; ../build.sh builds it. Never compiled itself.
package headscale

import (
	_ "github.com/juanfont/headscale/cmd/headscale"
)

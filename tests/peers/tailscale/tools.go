//go:build tools

// Package tailscale pins the tailscaled/tailscale the e2e tests run against.
// The blank imports keep the main packages (and so their
// dependencies) in go.mod/go.sum; ../build.sh builds them with CGO_ENABLED=0.
// Never compiled itself.
package tailscale

import (
	_ "tailscale.com/cmd/tailscale"
	_ "tailscale.com/cmd/tailscaled"
)

//go:build tools

// Package peers pins the real components the integration and e2e tests run against.
// The blank imports keep the main packages (and so their
// dependencies) in go.mod/go.sum; build.sh builds them. Never compiled itself.
package peers

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)

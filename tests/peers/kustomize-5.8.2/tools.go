//go:build tools

// Package kustomize pins kustomize v5.8.2, one of the versions the manifests under deploy/kustomize are
// rendered with by tests/static/check.sh (the oldest v5 and the newest). A module of its own per version;
// ../build.sh builds it. Never compiled itself.
package kustomize

import (
	_ "sigs.k8s.io/kustomize/kustomize/v5"
)

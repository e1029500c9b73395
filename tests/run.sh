#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, unit tests, the integration tests against a real
# kube-apiserver + etcd built from pinned sources (tests/peers), a short run of every fuzz target, the
# end-to-end login flow with real headscale and tailscaled in network namespaces, the short chaos soak (the
# same set-up while tka-server, its tailscaled and kube-apiserver are SIGKILLed), the static checks of the Nix
# files and manifests, and the appliance image run locked down under podman (the last four need root). This is
# the README's test command and what CI runs. Not root: it runs itself again through sudo (tests/lib/as-root.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/lib/as-root.sh
source tests/lib/as-root.sh
as_root "$@"

echo "==> building test peers (cached after the first run)"
tests/peers/build.sh
export TKA_PEERS_BIN="$PWD/tests/peers/bin"

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy -D warnings"
cargo clippy --all-targets --features integration -- -D warnings

echo "==> cargo test (unit + integration)"
cargo test --features integration

echo "==> fuzz: every target 15 s from the committed corpus (libFuzzer; fuzz/run.sh)"
fuzz/run.sh

echo "==> end-to-end: headscale + tailscaled + kube-apiserver + tka in network namespaces"
tests/e2e/run.sh

echo "==> end-to-end federation: a second cluster with a member tka-server (federation.md)"
tests/e2e/run.sh --federation --no-build

echo "==> chaos soak, short form: 100 login/logout cycles and expiries while processes are SIGKILLed"
tests/soak/run.sh --no-build

echo "==> static checks: Nix files (parse, deadnix, nixpkgs-fmt, flake structure), kustomize, generated files"
tests/static/check.sh

echo "==> image: static tka-server in a from-scratch OCI image, run locked down with podman"
tests/image/check.sh

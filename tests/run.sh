#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, unit tests, the integration tests against a real
# kube-apiserver + etcd built from pinned sources (tests/peers), and the end-to-end login flow with real
# headscale and tailscaled in network namespaces (needs root). This is the README's test command and what
# CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> building test peers (cached after the first run)"
tests/peers/build.sh
export TKA_PEERS_BIN="$PWD/tests/peers/bin"

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy -D warnings"
cargo clippy --all-targets --features integration -- -D warnings

echo "==> cargo test (unit + integration)"
cargo test --features integration

echo "==> end-to-end: headscale + tailscaled + kube-apiserver + tka in network namespaces"
if [ "$(id -u)" != 0 ]; then
  echo "the end-to-end test needs root (network namespaces, TUN): run sudo tests/run.sh" >&2
  exit 1
fi
tests/e2e/run.sh

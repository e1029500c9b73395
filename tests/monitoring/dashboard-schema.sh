#!/usr/bin/env bash
# Checks the Grafana dashboard (default: deploy/kustomize/components/monitoring/tka-dashboard.json) against
# Grafana's published dashboard and panel types: @grafana/schema and TypeScript, pinned in
# grafana-schema/package-lock.json and installed here with `npm ci` (node_modules is git-ignored; reinstalled
# only when the lock file changes). Unknown keys, missing required keys and wrong values fail with tsc's
# message. Needs node and npm (.ci/run installs Debian's).
#
#   tests/monitoring/dashboard-schema.sh [DASHBOARD.json]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/grafana-schema" && pwd)
dashboard=$(realpath "${1:-$here/../../../deploy/kustomize/components/monitoring/tka-dashboard.json}")
cd "$here"
for t in node npm; do command -v "$t" >/dev/null || { echo "missing $t (Debian: apt-get install nodejs npm)" >&2; exit 1; }; done
# One install at a time (parallel test runs), and only when the pinned versions changed.
exec {lock}>"$here/.install.lock"
flock "$lock"
if ! cmp -s package-lock.json node_modules/.tka-installed-lock 2>/dev/null; then
	npm ci --no-audit --no-fund --loglevel=error >&2
	cp package-lock.json node_modules/.tka-installed-lock
fi
node check.mjs "$dashboard"
node_modules/.bin/tsc -p tsconfig.json
echo "ok: $dashboard satisfies @grafana/schema $(node -p 'require("./node_modules/@grafana/schema/package.json").version')"

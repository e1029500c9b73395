#!/usr/bin/env bash
# Regenerates deploy/kustomize/components/monitoring/tka-dashboard.png, the README's preview of the Grafana
# dashboard: runs the dashboard's data test with TKA_DASHBOARD_PREVIEW (about two minutes of varying traffic
# against a federation primary, scraped by a real Prometheus; needs the test peers and Debian's prometheus),
# then draws the main panels from that data with matplotlib, pinned in requirements.txt and installed into
# target/dashboard-preview/venv (git-ignored).
#
#   tools/dashboard-preview/preview.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$repo/target/dashboard-preview
mkdir -p "$work"
export TKA_PEERS_BIN=${TKA_PEERS_BIN:-$repo/tests/peers/bin}

if ! cmp -s "$here/requirements.txt" "$work/venv/.installed" 2>/dev/null; then
	rm -rf "$work/venv"
	python3 -m venv "$work/venv"
	"$work/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
	cp "$here/requirements.txt" "$work/venv/.installed"
fi

(cd "$repo" && TKA_DASHBOARD_PREVIEW="$work/data.json" cargo test --features integration --test integration -- \
	--exact dashboard_every_panel_shows_data_from_a_real_server)
"$work/venv/bin/python" "$here/render.py" "$work/data.json" "$repo/deploy/kustomize/components/monitoring/tka-dashboard.png"
echo "wrote deploy/kustomize/components/monitoring/tka-dashboard.png from $work/data.json"

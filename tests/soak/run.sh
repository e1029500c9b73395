#!/usr/bin/env bash
# Chaos soak: login / kubeconfig / logout / expiry cycles of several users on the end-to-end set-up (real
# headscale, tailscaled, kube-apiserver, tka-server in network namespaces $NS_PREFIX-*, 10.78.0.0/24) while
# tka-server, its tailscaled and kube-apiserver are SIGKILLed at random moments. What it checks:
# tests/soak/soak.sh. Needs root, like tests/e2e/run.sh.
#
#   tests/soak/run.sh                    the short form CI runs: 100 logout cycles, 6 kills
#   tests/soak/run.sh --cycles 1000      the long form (kills default to cycles/25)
#   Flags: --cycles N, --kills N, --gap SECONDS (longest calm between kills), --real-expiry (also sessions
#   that run to their real 10-minute end), and tests/e2e/run.sh's --keep, --keep-going, --no-build, --down.
set -euo pipefail
cd "$(dirname "$0")/../.."
pass=()
while (($#)); do
	case $1 in
	--cycles) export TKA_SOAK_CYCLES=$2; shift ;;
	--kills) export TKA_SOAK_KILLS=$2; shift ;;
	--gap) export TKA_SOAK_GAP=$2; shift ;;
	--real-expiry) export TKA_SOAK_REAL_EXPIRY=1 ;;
	--keep | --keep-going | --no-build | --down) pass+=("$1") ;;
	-h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "unknown argument: $1" >&2; exit 2 ;;
	esac
	shift
done
exec tests/e2e/run.sh --soak "${pass[@]}"

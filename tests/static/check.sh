#!/usr/bin/env bash
# Static checks of what cannot be built or booted here (no binary cache, no KVM):
#
#   nix.sh        every .nix file parses, deadnix and nixpkgs-fmt are clean; the flake is evaluated with
#                 nixpkgs' real lib (Nix 2.26 in a Debian 13 root: nixpkgs needs >= 2.18) against stub
#                 packages: `nix flake check --no-build --all-systems`, every .drvPath, the NixOS module
#                 under lib.evalModules, an older headscale skipping only the VM tests
#   vm.sh         the VM tests' scripts type-checked and linted as the NixOS test driver does (mypy,
#                 pyflakes), their headscale settings run by a real headscale in a network namespace without
#                 a route out, their kubectl label selectors matched against the manifests they deploy, the
#                 tka configs they and the NixOS module generate passed through `tka-server check`, their
#                 own headscale commands run against that headscale, every tka/kubectl/tailscale command
#                 line they run parsed by the real binary
#   kustomize.sh  every kustomization renders with kustomize 5.0.1 and 5.8.2 and with kubectl, identically
#   this file     the generated CRD and RBAC equal the committed ones, the PowerShell wrapper parses, the
#                 build stamping (nix/stamp.sh) works on a real binary
#
#   tests/static/check.sh        installs what it lacks (apt: debootstrap, python3-venv; PyPI: pinned;
#                                crates.io: deadnix, nixpkgs-fmt) into $TKA_TOOLS_DIR (~/.cache/tka-tools)
#
# nixpkgs' lib is read from $TKA_NIXPKGS_LIB, default ../shared/nixpkgs-lib beside the checkout. Needs root
# (chroot, network namespaces). Ends with "N passed, M failed" and exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
HERE=$ROOT/tests/static
TOOLS=${TKA_TOOLS_DIR:-$HOME/.cache/tka-tools}
PEERS=${TKA_PEERS_BIN:-$ROOT/tests/peers/bin}
KUBECTL=${KUBECTL:-$PEERS/kubectl}
NIXLIB=${TKA_NIXPKGS_LIB:-$ROOT/../shared/nixpkgs-lib}
export PATH="$TOOLS/bin:$PATH"

passed=0 failed=0 skipped=0
pass() { passed=$((passed + 1)); printf 'ok    %s\n' "$1"; }
fail() {
	failed=$((failed + 1))
	printf 'FAIL  %s\n' "$1"
	[[ -n ${2:-} && -s $2 ]] || return 0
	# Without colours, Nix's source excerpts and lock-file chatter; long output as its head and its tail
	# (where Nix puts the error).
	sed -e 's/\x1b\[[0-9;]*m//g' "$2" |
		grep -Ev "^ *[0-9]* *\|| +\||^warning: not writing modified lock file|^• Added input|^    'path:" |
		awk '{ line[NR] = $0 } END { for (i = 1; i <= NR; i++) if (NR <= 40 || i <= 12 || i > NR - 25)
			print "      " line[i]; else if (i == 13) print "      …" }'
}
skip() { skipped=$((skipped + 1)); printf 'skip  %s (%s)\n' "$1" "$2"; }
# check NAME CMD...: runs CMD, passes if it exits 0, shows its output otherwise.
check() {
	local name=$1
	shift
	if "$@" >"$WORK/out" 2>&1; then pass "$name"; else fail "$name" "$WORK/out"; fi
}
# report FILE: counts the ok/FAIL lines a helper printed (vm_tests.py) and shows them.
report() {
	local line
	while IFS= read -r line; do
		case $line in
		"ok    "*) passed=$((passed + 1)) ;;
		"FAIL  "*) failed=$((failed + 1)) ;;
		esac
		printf '%s\n' "$line"
	done <"$1"
}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

need_apt() {
	local missing=()
	for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
	((${#missing[@]} == 0)) && return 0
	echo "==> apt-get install ${missing[*]}"
	local sudo=()
	((EUID == 0)) || sudo=(sudo)
	"${sudo[@]}" apt-get update -qq >/dev/null && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Python tools, pinned: mypy and pyflakes as the test driver runs them, PyYAML, tree-sitter-powershell.
PY=$TOOLS/pyvenv/bin
PY_PINS=(mypy==2.4.1 pyflakes==4.1.0 PyYAML==6.0.4 tree-sitter==0.26.1 tree-sitter-powershell==0.26.4)
if [[ ! -f $TOOLS/pyvenv/.pins || $(<"$TOOLS/pyvenv/.pins") != "${PY_PINS[*]}" ]]; then
	need_apt python3-venv || true
	echo "==> pip install ${PY_PINS[*]} (into $TOOLS/pyvenv, once)"
	if { [[ -x $PY/python ]] || python3 -m venv "$TOOLS/pyvenv"; } &&
		"$PY/pip" install -q "${PY_PINS[@]}" >"$WORK/pip.log" 2>&1; then
		echo "${PY_PINS[*]}" >"$TOOLS/pyvenv/.pins"
	else
		fail "install ${PY_PINS[*]} from PyPI" "$WORK/pip.log"
	fi
fi

# The Go-built peers: kubectl, headscale, tailscale, the kustomize versions (a no-op once built).
if [[ $PEERS == "$ROOT/tests/peers/bin" || ! -x $PEERS/kustomize-5.0.1 ]]; then
	echo "==> tests/peers/build.sh all kustomize (cached)"
	tests/peers/build.sh all kustomize >"$WORK/peers.log" 2>&1 || fail "tests/peers/build.sh all kustomize" "$WORK/peers.log"
fi

# The binaries whose generated files and config checks are tested.
echo "==> cargo build --bin tka-server --bin tka"
SERVER= CLI=
if cargo build --quiet --bin tka-server --bin tka >"$WORK/build.log" 2>&1; then
	target=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/debug
	SERVER=$target/tka-server CLI=$target/tka
else
	fail "cargo build --bin tka-server --bin tka" "$WORK/build.log"
fi

# The flake's files as a git checkout gives them to Nix (tracked plus new, not ignored), so that a `path:`
# flake does not copy target/ into the store.
STAGE=$WORK/flake
mkdir -p "$STAGE"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
	[[ -e $f || -L $f ]] && cp --parents -P -- "$f" "$STAGE/"
done

# shellcheck source=tests/static/nix.sh
source "$HERE/nix.sh"
# shellcheck source=tests/static/vm.sh
source "$HERE/vm.sh"
# shellcheck source=tests/static/kustomize.sh
source "$HERE/kustomize.sh"

# ------------------------------------------------------------------------------------------------ generated files
# The committed CRD and RBAC are what the server generates (deploy/kustomize/base/kustomization.yaml names
# the commands).
echo "==> generated files"
if [[ -x ${SERVER:-} ]]; then
	check "deploy/kustomize/base/crd.yaml = tka-server crd" \
		bash -c 'diff -u deploy/kustomize/base/crd.yaml <("$1" crd)' _ "$SERVER"
	check "deploy/kustomize/base/rbac.yaml = tka-server rbac --allowed-roles view,edit,admin" \
		bash -c 'diff -u deploy/kustomize/base/rbac.yaml \
			<("$1" rbac --allowed-roles view,edit,admin --namespace tka-system)' _ "$SERVER"
else
	fail "generated CRD/RBAC: no tka-server binary (cargo build failed above)"
fi

# ------------------------------------------------------------------------------------------------ stamping
# nix/binaries.nix compiles with placeholders and stamps copies (nix/stamp.sh): shown here on a real
# release build with LTO of a program that reads the values the way src/lib.rs does.
echo "==> build stamping (nix/stamp.sh)"
if command -v rustc >/dev/null; then
	cat >"$WORK/stamp.rs" <<-'EOF'
		const COMMIT: &str = match option_env!("TKA_BUILD_COMMIT") { Some(c) => c, None => "unknown" };
		const DATE: &str = match option_env!("TKA_BUILD_DATE") { Some(d) => d, None => "unknown" };
		fn main() { println!("{COMMIT} {DATE}"); }
	EOF
	placeholder=$(grep -o 'tka-unstamped-commit-[0-9]*' nix/binaries.nix)
	want="$(printf '%040d' 0 | tr 0 a) 2026-01-02T03:04:05Z"
	check "a binary compiled with the placeholders prints the stamped commit and date" bash -c '
		TKA_BUILD_COMMIT=$1 TKA_BUILD_DATE=0000-00-00T00:00:00Z rustc --edition 2021 -C opt-level=3 -C lto=thin \
			-C codegen-units=4 -C strip=symbols -o "$2/stamp" "$2/stamp.rs" &&
		bash nix/stamp.sh "$2/stamp" "$1" "${3% *}" 0000-00-00T00:00:00Z "${3#* }" &&
		got=$("$2/stamp") && echo "$got" && [[ $got == "$3" ]] &&
		! bash nix/stamp.sh "$2/stamp" "$1" "${3% *}"' _ "$placeholder" "$WORK" "$want"
else
	fail "rustc is missing"
fi

# ------------------------------------------------------------------------------------------- PowerShell
# PowerShell cannot be installed here, so its shell integration is parsed by tree-sitter-powershell (PyPI,
# pinned) instead of run; bash, zsh and fish run their wrappers for real in tests/shell_integration.rs.
echo "==> PowerShell wrapper (tree-sitter-powershell)"
if [[ -x ${CLI:-} ]]; then
	"$CLI" generate integration powershell >"$WORK/tka.ps1"
	check "tka generate integration powershell parses as PowerShell and defines function tka" \
		"$PY/python" tests/static/powershell.py "$WORK/tka.ps1"
else
	fail "PowerShell wrapper: no tka binary (cargo build failed above)"
fi

echo
if ((skipped == 0)); then
	printf 'static: %d passed, %d failed\n' "$passed" "$failed"
else
	printf 'static: %d passed, %d failed, %d skipped\n' "$passed" "$failed" "$skipped"
fi
((failed == 0))

#!/usr/bin/env bash
# Static checks (spec: testing.md §8): every .nix file parses; deadnix and nixpkgs-fmt are clean; the flake's
# structure evaluates against the nixpkgs stub (tests/nix-stub) with `nix flake show` and
# `nix flake check --no-build`; the NixOS module's unit is what deploy.md §3 says; every kustomize overlay
# renders; the generated CRD and RBAC equal the committed files; the PowerShell wrapper parses.
#
#   tests/static/check.sh            installs what it lacks (nix-bin from apt, deadnix/nixpkgs-fmt from crates.io)
#
# Ends with "N passed, M failed" and exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
TOOLS=${TKA_TOOLS_DIR:-$HOME/.cache/tka-tools}
KUBECTL=${KUBECTL:-$ROOT/tests/peers/bin/kubectl}

passed=0 failed=0 skipped=0
pass() { passed=$((passed + 1)); printf 'ok    %s\n' "$1"; }
fail() {
	failed=$((failed + 1))
	printf 'FAIL  %s\n' "$1"
	if [[ -n ${2:-} && -s $2 ]]; then sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/      /' "$2" | head -40; fi
}
skip() { skipped=$((skipped + 1)); printf 'skip  %s (%s)\n' "$1" "$2"; }
# check NAME CMD...: runs CMD, passes if it exits 0, shows its output otherwise.
check() {
	local name=$1
	shift
	if "$@" >"$WORK/out" 2>&1; then pass "$name"; else fail "$name" "$WORK/out"; fi
}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# ------------------------------------------------------------------------------------------------ tools
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
need_apt nix-bin jq || true
NIX=(nix --extra-experimental-features 'nix-command flakes')

export PATH="$TOOLS/bin:$PATH"
for tool in deadnix nixpkgs-fmt; do
	if ! command -v "$tool" >/dev/null; then
		echo "==> cargo install --locked $tool (into $TOOLS, once)"
		cargo install --locked --quiet --root "$TOOLS" "$tool" >"$WORK/install.log" 2>&1 ||
			{ fail "install $tool from crates.io" "$WORK/install.log"; }
	fi
done

# Files as the flake sees them: tracked plus new, not ignored (a git flake never sees target/ or peers/bin).
mapfile -t NIX_FILES < <(git ls-files --cached --others --exclude-standard -- '*.nix' | while read -r f; do
	[[ -e $f ]] && echo "$f"
done)

# ------------------------------------------------------------------------------------------------ parse, lint
echo "==> ${#NIX_FILES[@]} Nix files"
if command -v nix-instantiate >/dev/null; then
	for f in "${NIX_FILES[@]}"; do check "nix-instantiate --parse $f" nix-instantiate --parse "$f"; done
else
	fail "nix-instantiate is not installed (apt-get install nix-bin failed)"
fi
if command -v deadnix >/dev/null; then
	check "deadnix --fail" deadnix --fail "${NIX_FILES[@]}"
else
	fail "deadnix is not available"
fi
if command -v nixpkgs-fmt >/dev/null; then
	check "nixpkgs-fmt --check" nixpkgs-fmt --check "${NIX_FILES[@]}"
else
	fail "nixpkgs-fmt is not available"
fi

# ------------------------------------------------------------------------------------------------ flake
# The flake is evaluated from a copy holding exactly the files a git checkout would give it (a `path:` flake
# of the work tree would copy target/ into the store).
if command -v nix >/dev/null && [[ -f flake.nix ]]; then
	echo "==> flake structure against tests/nix-stub (Nix $(nix --version | awk '{print $NF}'))"
	STAGE=$WORK/flake
	mkdir -p "$STAGE"
	git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
		[[ -e $f || -L $f ]] && cp --parents -P -- "$f" "$STAGE/"
	done
	STUB=(--override-input nixpkgs "path:$STAGE/tests/nix-stub" --no-write-lock-file)
	REF=path:$STAGE
	check "nix flake show" "${NIX[@]}" flake show "${STUB[@]}" "$REF"
	check "nix flake check --no-build" "${NIX[@]}" flake check --no-build "${STUB[@]}" "$REF"

	for sys in x86_64-linux aarch64-linux x86_64-darwin aarch64-darwin; do
		want='["default","image","image-tarball","manifests","tailscaled","tka","tka-server"]'
		[[ $sys == *darwin ]] && want='["default","tka"]'
		got=$("${NIX[@]}" eval --json "${STUB[@]}" "$REF#packages.$sys" --apply builtins.attrNames 2>"$WORK/err")
		if [[ $got == "$want" ]]; then pass "packages.$sys = $want"; else
			{ echo "$got"; cat "$WORK/err"; } >"$WORK/out"
			fail "packages.$sys = $want" "$WORK/out"
		fi
	done
	got=$("${NIX[@]}" eval --json "${STUB[@]}" "$REF#checks.x86_64-linux" --apply builtins.attrNames 2>"$WORK/err")
	for c in vm-login-flow vm-federation image-closure manifests cargo-test clippy fmt nix-lint; do
		if [[ $got == *"\"$c\""* ]]; then pass "checks.x86_64-linux.$c exists"; else
			{ echo "$got"; cat "$WORK/err"; } >"$WORK/out"
			fail "checks.x86_64-linux.$c exists" "$WORK/out"
		fi
	done
	# The image configuration as deploy.md §2 states it.
	cfg=$("${NIX[@]}" eval --raw "${STUB[@]}" "$REF#packages.x86_64-linux.image.configJSON" 2>"$WORK/err")
	echo "$cfg" >"$WORK/config.json"
	check "image config (User, Entrypoint, Cmd, Env, ExposedPorts, OCI labels)" jq -e '
		.User == "65532:65532" and .Entrypoint == ["/tka-server"]
		and .Cmd == ["serve", "--config", "/etc/tka/config.yaml"]
		and .Env == ["SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt", "PATH=/bin", "HOME=/tmp", "TKA_LOG_FORMAT=json"]
		and (.ExposedPorts | keys) == ["443/tcp", "8080/tcp"]
		and (.Labels | has("org.opencontainers.image.source") and has("org.opencontainers.image.version")
			and has("org.opencontainers.image.revision") and has("org.opencontainers.image.licenses"))' \
		"$WORK/config.json"
	check "image: /tmp 1777, /var/lib/tsnet owned by 65532, /etc/tka" bash -c '
		s=$("$@"); grep -q "chmod 1777 tmp" <<<"$s" && grep -q "chown 65532:65532 var/lib/tsnet" <<<"$s" &&
		grep -q "etc/tka" <<<"$s"' _ "${NIX[@]}" eval --raw "${STUB[@]}" \
		"$REF#packages.x86_64-linux.image.fakeRootCommands"
	check "NixOS module services.tka (options, hardened unit, both tailscaled modes)" bash -c '
		out=$(nix-instantiate --eval --strict --json "$1") && echo "$out" && [[ $out == "[]" ]]' _ \
		"$STAGE/tests/nix-stub/module-test.nix"
else
	skip "flake evaluation" "nix or flake.nix missing"
fi

# ------------------------------------------------------------------------------------------------ kustomize
if [[ -d deploy/kustomize ]]; then
	if [[ ! -x $KUBECTL ]]; then
		if command -v kubectl >/dev/null; then KUBECTL=$(command -v kubectl); else
			echo "==> building the test peers for kubectl (tests/peers/build.sh)"
			tests/peers/build.sh >"$WORK/peers.log" 2>&1 || fail "tests/peers/build.sh" "$WORK/peers.log"
		fi
	fi
	echo "==> kubectl kustomize ($("$KUBECTL" version --client 2>/dev/null | head -1))"
	for dir in deploy/kustomize/base deploy/kustomize/install deploy/kustomize/overlays/*; do
		[[ -f $dir/kustomization.yaml ]] || { skip "kustomize $dir" "no kustomization.yaml yet"; continue; }
		check "kubectl kustomize $dir" "$KUBECTL" kustomize "$dir"
	done
else
	skip "kubectl kustomize" "deploy/kustomize does not exist yet"
fi

# ------------------------------------------------------------------------------------------------ generated files
# The committed CRD and RBAC are what the server generates (deploy/kustomize/base/kustomization.yaml names
# the commands).
if [[ -f deploy/kustomize/base/crd.yaml ]] && command -v cargo >/dev/null; then
	echo "==> generated files (cargo run --bin tka-server)"
	if cargo build --quiet --bin tka-server >"$WORK/build.log" 2>&1; then
		server=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/debug/tka-server
		check "deploy/kustomize/base/crd.yaml = tka-server crd" \
			bash -c 'diff -u deploy/kustomize/base/crd.yaml <("$1" crd)' _ "$server"
		if [[ -f deploy/kustomize/base/rbac.yaml ]]; then
			check "deploy/kustomize/base/rbac.yaml = tka-server rbac --allowed-roles view,edit,admin" \
				bash -c 'diff -u deploy/kustomize/base/rbac.yaml \
					<("$1" rbac --allowed-roles view,edit,admin --namespace tka-system)' _ "$server"
		fi
	else
		fail "cargo build --bin tka-server" "$WORK/build.log"
	fi
else
	skip "generated CRD/RBAC" "no deploy/kustomize/base/crd.yaml or no cargo"
fi

# ------------------------------------------------------------------------------------------- PowerShell
# PowerShell cannot be installed here, so its shell integration is parsed by tree-sitter-powershell (PyPI,
# pinned) instead of run; bash, zsh and fish run their wrappers for real in tests/shell_integration.rs.
if command -v cargo >/dev/null && command -v python3 >/dev/null; then
	echo "==> PowerShell wrapper (tree-sitter-powershell)"
	venv=$TOOLS/pyvenv
	if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import tree_sitter_powershell' 2>/dev/null; then
		need_apt python3-venv || true
		{ python3 -m venv "$venv" && "$venv/bin/pip" install -q tree-sitter==0.26.1 tree-sitter-powershell==0.26.4; } \
			>"$WORK/pip.log" 2>&1 || fail "install tree-sitter-powershell from PyPI" "$WORK/pip.log"
	fi
	if cargo build --quiet --bin tka >"$WORK/build.log" 2>&1; then
		tka=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/debug/tka
		"$tka" generate integration powershell >"$WORK/tka.ps1"
		check "tka generate integration powershell parses as PowerShell and defines function tka" \
			"$venv/bin/python" tests/static/powershell.py "$WORK/tka.ps1"
	else
		fail "cargo build --bin tka" "$WORK/build.log"
	fi
else
	skip "PowerShell wrapper" "no cargo or python3"
fi

echo
if ((skipped == 0)); then
	printf 'static: %d passed, %d failed\n' "$passed" "$failed"
else
	printf 'static: %d passed, %d failed, %d skipped\n' "$passed" "$failed" "$skipped"
fi
((failed == 0))

# shellcheck shell=bash
# Sourced by tests/static/check.sh: the Nix files, and the flake evaluated with nixpkgs' real lib.
#
# Nix runs in a Debian 13 root (tests/static/nix-chroot.sh; nixpkgs' lib needs Nix >= 2.18, Debian 12 has
# 2.8) with a store of this run's own ($WORK/nix). nixpkgs is tests/nix-stub: the real lib from $NIXLIB,
# stub package functions that check their arguments. Sets NIX_OK=1 when the evaluation could run.

need_apt debootstrap jq || true
CHROOT=${TKA_NIX_CHROOT:-$TOOLS/nix-chroot}
export NIX_CHROOT_STORE=$WORK/nix
NIXC=("$HERE/nix-chroot.sh" run "$CHROOT" "$NIXLIB" "$WORK" --)
STUB=(--no-write-lock-file --override-input nixpkgs "path:$STAGE/tests/nix-stub"
	--override-input nixpkgs/nixpkgs-lib "path:$NIXLIB")
REF=path:$STAGE

NIX_OK=0
if [[ ! -f $NIXLIB/lib/default.nix ]]; then
	fail "nixpkgs' lib is not at $NIXLIB: set TKA_NIXPKGS_LIB to a checkout of nix-community/nixpkgs.lib"
elif ((EUID != 0)); then
	fail "the Nix checks run Nix in a chroot: run as root (sudo tests/static/check.sh)"
else
	echo "==> Nix 2.26 in a Debian 13 root ($CHROOT; created once, about 2 minutes)"
	if "$HERE/nix-chroot.sh" setup "$CHROOT" >"$WORK/chroot.log" 2>&1; then
		NIX_OK=1
	else
		fail "debootstrap Debian 13 with nix-bin into $CHROOT" "$WORK/chroot.log"
	fi
fi

mapfile -t NIX_FILES < <(cd "$STAGE" && find . -name '*.nix' -type f | sed 's|^\./||' | sort)

# ------------------------------------------------------------------------------------------------ parse, lint
echo "==> ${#NIX_FILES[@]} Nix files"
if ((NIX_OK)); then
	# One chroot for all files; prints ok/FAIL lines.
	"${NIXC[@]}" bash -c 'cd "$1" && shift && for f; do
		if nix-instantiate --parse "$f" >/dev/null 2>/tmp/err; then echo "ok    nix-instantiate --parse $f"
		else echo "FAIL  nix-instantiate --parse $f"; sed "s/^/      /" /tmp/err; fi
	done' _ "$STAGE" "${NIX_FILES[@]}" >"$WORK/parse" 2>&1
	report "$WORK/parse"
fi
for tool in deadnix nixpkgs-fmt; do
	if ! command -v "$tool" >/dev/null; then
		echo "==> cargo install --locked $tool (into $TOOLS, once)"
		cargo install --locked --quiet --root "$TOOLS" "$tool" >"$WORK/install.log" 2>&1 ||
			fail "install $tool from crates.io" "$WORK/install.log"
	fi
done
check "deadnix --fail" bash -c 'cd "$1" && shift && deadnix --fail "$@"' _ "$STAGE" "${NIX_FILES[@]}"
check "nixpkgs-fmt --check" bash -c 'cd "$1" && shift && nixpkgs-fmt --check "$@"' _ "$STAGE" "${NIX_FILES[@]}"

# ------------------------------------------------------------------------------------------------ flake
if ((NIX_OK)); then
	echo "==> the flake with nixpkgs' lib $(cat "$NIXLIB/lib/.version" 2>/dev/null) ($("${NIXC[@]}" nix --version))"
	check "nix flake check --no-build --all-systems" "${NIXC[@]}" nix flake check --no-build --all-systems "${STUB[@]}" "$REF"

	# Every output's .drvPath, on every system (writes each .drv: the derivations are well-formed).
	drvs='outputs: builtins.mapAttrs (_: bySystem: builtins.mapAttrs (_: v:
		if v ? drvPath then v.drvPath else builtins.mapAttrs (_: d: d.drvPath) v) bySystem)
		{ inherit (outputs) packages checks devShells formatter; }'
	check "every .drvPath of packages, checks, devShells, formatter on all four systems" bash -c '
		out=$("$@") || { echo "$out"; exit 1; }
		n=$(jq "[.. | strings] | length" <<<"$out"); bad=$(jq -r "[.. | strings | select(endswith(\".drv\") | not)] | .[]" <<<"$out")
		echo "$n derivations"; [[ -z $bad && $n -gt 40 ]] || { echo "not derivations: $bad"; exit 1; }' _ \
		"${NIXC[@]}" nix eval --json "${STUB[@]}" "$REF#." --apply "$drvs"

	for sys in x86_64-linux aarch64-linux x86_64-darwin aarch64-darwin; do
		want='["default","image","image-tarball","manifests","tailscaled","tka","tka-server"]'
		[[ $sys == *darwin ]] && want='["default","tka"]'
		check "packages.$sys = $want" bash -c 'got=$("${@:2}") && echo "$got" && [[ $got == "$1" ]]' _ "$want" \
			"${NIXC[@]}" nix eval --json "${STUB[@]}" "$REF#packages.$sys" --apply builtins.attrNames
	done
	want='["cargo-test","clippy","fmt","image-closure","manifests","nix-lint","vm-federation","vm-login-flow"]'
	check "checks.x86_64-linux = $want" bash -c 'got=$("${@:2}") && echo "$got" && [[ $got == "$1" ]]' _ "$want" \
		"${NIXC[@]}" nix eval --json "${STUB[@]}" "$REF#checks.x86_64-linux" --apply builtins.attrNames

	# The image configuration as the product states it.
	check "image config (User, Entrypoint, Cmd, Env, ExposedPorts, OCI labels)" bash -c '"$@" | jq -e "
		.User == \"65532:65532\" and .Entrypoint == [\"/tka-server\"]
		and .Cmd == [\"serve\", \"--config\", \"/etc/tka/config.yaml\"]
		and .Env == [\"SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt\", \"PATH=/bin\", \"HOME=/tmp\", \"TKA_LOG_FORMAT=json\"]
		and (.ExposedPorts | keys) == [\"443/tcp\", \"8080/tcp\"]
		and (.Labels | has(\"org.opencontainers.image.source\") and has(\"org.opencontainers.image.revision\"))"' _ \
		"${NIXC[@]}" nix eval --raw "${STUB[@]}" "$REF#packages.x86_64-linux.image.configJSON"
	check "image: /tmp 1777, /var/lib/tsnet owned by 65532, /etc/tka" bash -c '
		s=$("$@"); grep -q "chmod 1777 tmp" <<<"$s" && grep -q "chown 65532:65532 var/lib/tsnet" <<<"$s" &&
		grep -q "etc/tka" <<<"$s"' _ "${NIXC[@]}" nix eval --raw "${STUB[@]}" \
		"$REF#packages.x86_64-linux.image.fakeRootCommands"

	# One compile for both binaries; the stamped packages copy from it, the image holds the server only.
	check "tka and tka-server come from one cargo build (two outputs), stamped afterwards" bash -c '
		got=$("$@") && echo "$got" && [[ $got == true ]]' _ "${NIXC[@]}" nix eval --json "${STUB[@]}" "$REF#packages.x86_64-linux" --apply '
		p: p.tka.unstamped.drvPath == p.tka-server.unstamped.drvPath
		&& p.tka.unstamped.outputs == [ "out" "server" ]
		&& (builtins.getContext p.tka-server.buildCommand).${builtins.unsafeDiscardStringContext p.tka.unstamped.drvPath}.outputs == [ "server" ]
		&& (builtins.getContext p.tka.buildCommand).${builtins.unsafeDiscardStringContext p.tka.unstamped.drvPath}.outputs == [ "out" ]
		&& p.tka.unstamped.env.TKA_BUILD_COMMIT == "tka-unstamped-commit-0000000000000000000"'

	# tailscaled follows nixpkgs' tailscale derivation: what nixpkgs maintains carries over.
	carried='p: builtins.toJSON { inherit (p) src vendorHash tags ldflags preBuild env excludedPackages; patches = p.patches or null; go = p.go.name; }'
	"${NIXC[@]}" nix eval --raw --no-write-lock-file --override-input nixpkgs-lib "path:$NIXLIB" \
		"path:$STAGE/tests/nix-stub#legacyPackages.x86_64-linux.tailscale" --apply "$carried" >"$WORK/ts-nixpkgs" 2>&1
	"${NIXC[@]}" nix eval --raw "${STUB[@]}" "$REF#packages.x86_64-linux.tailscaled" --apply "$carried" \
		>"$WORK/ts-ours" 2>&1
	check "tailscaled is nixpkgs' tailscale overridden (src, vendorHash, patches, tags, ldflags, Go carry over)" \
		bash -c 'tail -1 "$1"; echo; tail -1 "$2"; echo; [[ $(tail -1 "$1") == "$(tail -1 "$2")" ]]' _ \
		"$WORK/ts-nixpkgs" "$WORK/ts-ours"

	check "macOS: the CLI is compiled with the commit and date, not patched (Mach-O code signatures)" bash -c '
		got=$("$@") && echo "$got" && [[ $got == true ]]' _ "${NIXC[@]}" nix eval --json "${STUB[@]}" \
		"$REF#packages.aarch64-darwin.tka" --apply '
		t: !(t ? unstamped) && t.env.TKA_BUILD_DATE != "0000-00-00T00:00:00Z"
		&& builtins.stringLength t.env.TKA_BUILD_COMMIT == 40'

	# An older nixpkgs (headscale 0.28) skips the two VM tests with a warning; everything else is checked.
	cp -r "$STAGE/tests/nix-stub" "$WORK/stub-old"
	echo '{ "headscale": "0.28.0" }' >"$WORK/stub-old/knobs.json"
	OLD=(--no-write-lock-file --override-input nixpkgs "path:$WORK/stub-old" --override-input nixpkgs/nixpkgs-lib "path:$NIXLIB")
	check "headscale 0.28: nix flake check passes without the VM tests, saying why" bash -c '
		out=$("$@" 2>&1); rc=$?; grep -E "error|skipped|vm-" <<<"$out"; ((rc == 0)) &&
		grep -q "vm-login-flow and vm-federation are skipped: they need headscale >= 0.29" <<<"$out" &&
		! grep -q "checking derivation checks.x86_64-linux.vm-" <<<"$out"' _ \
		"${NIXC[@]}" nix flake check --no-build "${OLD[@]}" "$REF"

	# The NixOS module under lib.evalModules with the real NixOS option types (tests/nix-stub/module-test.nix).
	"${NIXC[@]}" nix eval --json --impure --expr "import $STAGE/tests/nix-stub/module-test.nix { lib = import $NIXLIB/lib; }" \
		>"$WORK/module.json" 2>"$WORK/module.err"
	check "NixOS module services.tka under lib.evalModules (options, unit, both tailscaled modes)" bash -c '
		cat "$1" "$2"; [[ $(jq -c .failed "$1") == "[]" ]]' _ "$WORK/module.json" "$WORK/module.err"
fi

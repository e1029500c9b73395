# shellcheck shell=bash
# Sourced by tests/static/check.sh: the NixOS VM tests, checked without VMs. The stub runNixOSTest evaluates
# each test (tests/nix-stub/nixos-test.nix) and tests/static/render-vm-tests.nix extracts what is checked
# here with the real tools: the driver's type check and lint, headscale, kustomize, tka-server.

if ((NIX_OK)); then
	echo "==> NixOS VM tests, rendered by evaluation"
	"${NIXC[@]}" nix eval --json "${STUB[@]}" "$REF#checks.x86_64-linux" --apply "$(cat "$HERE/render-vm-tests.nix")" \
		>"$WORK/render.json" 2>"$WORK/render.err"
	check "render the VM tests (scripts, headscale settings, manifests)" bash -c '
		cat "$2"; jq -e "keys == [\"vm-federation\", \"vm-login-flow\"]" "$1"' _ "$WORK/render.json" "$WORK/render.err"
	mapfile -t VM_TESTS < <(jq -r 'keys[]' "$WORK/render.json" 2>/dev/null)

	# ------------------------------------------------------------------------------ type check and lint
	# As nixos/lib/testing/driver.nix does before any VM boots: mypy on the script with the driver's
	# declarations and one `name: QemuMachine;` per machine in front, pyflakes with the driver's symbols.
	"$PY/python" "$HERE/vm_tests.py" scripts "$WORK/render.json" "$WORK/scripts"
	for t in "${VM_TESTS[@]}"; do
		d=$WORK/scripts/$t
		if [[ -s $d/skipped ]]; then
			fail "$t: $(cat "$d/skipped") is set: the driver would not check this script"
			continue
		fi
		check "$t: the script type-checks as the test driver runs mypy on it" bash -c '
			cd "$1" && MYPYPATH="$2" "$3/mypy" --no-implicit-optional --pretty --no-color-output \
				--cache-dir "$1/.mypy" testScriptWithTypes' _ "$d" "$HERE/nixos-driver" "$PY"
		check "$t: pyflakes finds nothing in the script (driver symbols as builtins)" \
			env PYFLAKES_BUILTINS="$(cat "$d/builtins")" "$PY/pyflakes" "$d/test-script"
	done

	# Every tka, kubectl and tailscale command line the scripts run parses with the real binary (`… --help`
	# exits 0 only when every subcommand and flag exists): tka as built from this tree, kubectl and tailscale
	# the test peers'.
	if [[ -x ${CLI:-} && -x $KUBECTL && -x $PEERS/tailscale ]]; then
		"$PY/python" "$HERE/vm_tests.py" cli "$WORK/render.json" tka="$CLI" kubectl="$KUBECTL" \
			tailscale="$PEERS/tailscale" >"$WORK/cli.out" 2>&1
		report "$WORK/cli.out"
	else
		fail "command lines: tka ($CLI), kubectl ($KUBECTL) or tailscale ($PEERS/tailscale) is missing"
	fi

	# ------------------------------------------------------------------------------ headscale
	# Each test's headscale settings, merged with the defaults of nixpkgs' headscale module
	# (tests/nix-stub/nixos/headscale.nix), run by the real headscale where the VM has no network either.
	echo "==> headscale with the VM tests' settings, in a network namespace without a route out"
	if [[ -x $PEERS/headscale ]]; then
		flock /tmp/tka-e2e.lock "$PY/python" "$HERE/vm_tests.py" headscale "$WORK/render.json" "$WORK/headscale" \
			"$PEERS/headscale" >"$WORK/headscale.out" 2>&1
		report "$WORK/headscale.out"
	else
		fail "headscale: $PEERS/headscale is missing (tests/peers/build.sh tailnet)"
	fi

	# ------------------------------------------------------------------------------ manifests, selectors
	# Each manifests derivation the scripts apply, built by running its build command in the Nix root with
	# kustomize 5.8.2 (the derivations' store paths are in this run's store there).
	echo "==> the manifests the VM tests deploy, their label selectors and tka configs"
	mkdir -p "$WORK/manifests" "$WORK/kbin" "$WORK/configs"
	cp "$PEERS/kustomize-5.8.2" "$WORK/kbin/kustomize" 2>/dev/null
	for drv in $(jq -r '[.[].manifests[]] | unique | .[]' "$WORK/render.json" 2>/dev/null); do
		name=$(basename "$drv" .drv)
		"${NIXC[@]}" nix derivation show -r "$drv" >"$WORK/drv.json" 2>"$WORK/drv.err"
		jq -r --arg drv "$drv" '.[$drv].env.buildCommand' "$WORK/drv.json" >"$WORK/manifests/$name.sh"
		# Files it copies that the stub's writeText did not build: their text is in their derivation.
		"$PY/python" -c 'import json, sys, pathlib
for d in json.load(open(sys.argv[1])).values():
    if "text" in d["env"] and d["env"].get("buildCommand") == "stub":
        pathlib.Path(sys.argv[2] + d["env"]["out"]).write_text(d["env"]["text"])' "$WORK/drv.json" "$WORK"
		check "build $name (its build command, kustomize 5.8.2)" "${NIXC[@]}" env PATH="$WORK/kbin:/usr/bin:/bin" \
			bash -c 'set -eu; out=$1; cd "$(mktemp -d)"; source "$2"; test -s "$out"' _ \
			"$WORK/manifests/$name" "$WORK/manifests/$name.sh"
	done
	for what in selectors named; do
		"$PY/python" "$HERE/vm_tests.py" "$what" "$WORK/render.json" "$WORK/manifests" >"$WORK/$what.out" 2>&1
		report "$WORK/$what.out"
	done

	# ------------------------------------------------------------------------------ tka configs
	# What the tests deploy (their ConfigMaps) and what the NixOS module generates, through the server's
	# own validation.
	check "the VM tests' ConfigMaps hold a config.yaml" \
		"$PY/python" "$HERE/vm_tests.py" configs "$WORK/render.json" "$WORK/manifests" "$WORK/configs"
	for mode in host supervised; do
		jq ".configs.$mode" "$WORK/module.json" >"$WORK/configs/nixos-module-$mode.yaml" 2>/dev/null
	done
	for config in "$WORK"/configs/*.yaml; do
		if [[ -x $SERVER ]]; then
			check "tka-server check --config $(basename "$config")" "$SERVER" check --config "$config"
		fi
	done
fi

#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/fuzz_targets: libFuzzer (libfuzzer-sys, from crates.io) with coverage
# instrumentation, built and run by this script with the project's own stable Rust.
#
#   fuzz/run.sh                      every target for 15 s from the committed corpus (tests/run.sh)
#   fuzz/run.sh --asan --time 600 config   only `config`, 600 s, the optimized AddressSanitizer build
#   fuzz/run.sh --runs 2000000 grant a fixed number of executions
#   fuzz/run.sh --merge              also merge what the run found into fuzz/corpus/<target>, minimized
#
# Two builds of the same targets:
#   default  the dev profile in target/debug: only tka and the targets are instrumented (fuzz/sancov-rustc.sh),
#            every dependency is the one `cargo build` already compiled, so CI pays for little more than tka
#            itself. Unoptimized but without a sanitizer: about as many executions per second. Stable Rust.
#   --asan   profile `fuzz` (optimized) in target/x86_64-unknown-linux-gnu/fuzz, every crate instrumented and
#            built with AddressSanitizer (unsafe code in dependencies, e.g. the YAML parser, is checked too):
#            for long runs. -Zsanitizer is an unstable rustc flag; this build alone sets RUSTC_BOOTSTRAP=1,
#            which lets the stable compiler accept it. A nightly toolchain would be the usual way, but CI
#            reaches crates.io and not rustup's servers, so it could not install one.
# cargo-fuzz is not needed (its flags are the ones used here); `cargo fuzz run <target>` works as well.
#
# New inputs go to target/fuzz-corpus/<target> (not committed); a crash or hang (10 s per input) stops the run
# with the input in target/fuzz-corpus/<target>.artifacts/ (reproduce: the printed binary with that file as
# its only argument). At the end it prints the executions per target and in total.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(duration grant whois config kubeconfig)
declare -A MAX_LEN=([duration]=256 [grant]=4096 [whois]=4096 [config]=4096 [kubeconfig]=8192)
limit=(-max_total_time=15) merge=0 asan=0 chosen=()
while (($#)); do
	case $1 in
	--time) limit=(-max_total_time="$2"); shift ;;
	--runs) limit=(-runs="$2"); shift ;;
	--merge) merge=1 ;;
	--asan) asan=1 ;;
	-h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) echo "unknown argument: $1" >&2; exit 2 ;;
	*) chosen+=("$1") ;;
	esac
	shift
done
if ((${#chosen[@]})); then TARGETS=("${chosen[@]}"); fi

if ((asan)); then
	# As cargo-fuzz: --target keeps these flags away from build scripts and proc-macros.
	triple=$(rustc -vV | sed -n 's/^host: //p')
	RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
--cfg fuzzing -Zsanitizer=address" \
		cargo build --quiet -p tka-fuzz --bins --profile fuzz --target "$triple"
	bin=target/$triple/fuzz
	export ASAN_OPTIONS=detect_odr_violation=0
else
	RUSTC_WORKSPACE_WRAPPER="$PWD/fuzz/sancov-rustc.sh" cargo build --quiet -p tka-fuzz --bins
	bin=target/debug
fi

total=0
for t in "${TARGETS[@]}"; do
	found=target/fuzz-corpus/$t
	mkdir -p "$found" "$found.artifacts" "fuzz/corpus/$t"
	log=target/fuzz-corpus/$t.log
	# New finds go to the first directory; the committed corpus is only read.
	if ! "$bin/$t" "$found" "fuzz/corpus/$t" "${limit[@]}" -timeout=10 -max_len="${MAX_LEN[$t]}" \
		-rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$found.artifacts/" >"$log" 2>&1; then
		tail -n 40 "$log" >&2
		echo "fuzz target $t failed (log: $log; the input: $(ls -t "$found.artifacts/"* | head -n 1);" \
			"reproduce: $bin/$t <that file>)" >&2
		exit 1
	fi
	runs=$(awk '/^stat::number_of_executed_units:/ { print $2 }' "$log")
	secs=$(awk '/^Done [0-9]+ runs in/ { print $5 }' "$log")
	printf '%-11s %12d executions in %s s, corpus %d + %d new\n' "$t" "$runs" "$secs" \
		"$(find "fuzz/corpus/$t" -type f | wc -l)" "$(find "$found" -type f | wc -l)"
	total=$((total + runs))
	if ((merge)); then
		# The committed corpus stays small: the fewest, smallest inputs that reach every edge the old corpus
		# and the new finds reach (-use_counters=0: how often an edge runs does not earn an input its place).
		min=target/fuzz-corpus/$t.min
		rm -rf "$min" && mkdir -p "$min"
		"$bin/$t" -merge=1 -use_counters=0 -max_len="${MAX_LEN[$t]}" "$min" "fuzz/corpus/$t" "$found" \
			>"$log.merge" 2>&1
		rm -rf "fuzz/corpus/$t" "$found" && mv "$min" "fuzz/corpus/$t"
	fi
done
echo "total: $total executions"

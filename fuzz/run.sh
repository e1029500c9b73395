#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/fuzz_targets (cargo-fuzz, libFuzzer with AddressSanitizer, nightly Rust).
#
#   fuzz/run.sh                      every target for 20 s, starting from the committed corpus (tests/run.sh)
#   fuzz/run.sh --time 600 config    only `config`, for 600 s
#   fuzz/run.sh --runs 2000000 grant a fixed number of executions
#   fuzz/run.sh --merge              also merge what the run found into fuzz/corpus/<target>, minimized
#
# New inputs go to target/fuzz-corpus/<target> (not committed); a crash or hang (10 s per input) stops the
# run with the input in fuzz/artifacts/<target>/ (reproduce: cd fuzz && cargo fuzz run <target> <that file>).
# At the end it prints the executions per target and in total.
set -euo pipefail
cd "$(dirname "$0")/.."

# The pinned nightly (fuzz/rust-toolchain.toml); .ci/run installs it.
TOOLCHAIN=$(sed -n 's/^channel = "\(.*\)"$/\1/p' fuzz/rust-toolchain.toml)
TARGETS=(duration grant whois config kubeconfig)
declare -A MAX_LEN=([duration]=256 [grant]=4096 [whois]=4096 [config]=4096 [kubeconfig]=8192)
limit=(-max_total_time=20) merge=0 chosen=()
while (($#)); do
	case $1 in
	--time) limit=(-max_total_time="$2"); shift ;;
	--runs) limit=(-runs="$2"); shift ;;
	--merge) merge=1 ;;
	-h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) echo "unknown argument: $1" >&2; exit 2 ;;
	*) chosen+=("$1") ;;
	esac
	shift
done
if ((${#chosen[@]})); then TARGETS=("${chosen[@]}"); fi

if ! cargo "+$TOOLCHAIN" fuzz --version >/dev/null 2>&1; then
	echo "fuzzing needs the $TOOLCHAIN toolchain and cargo-fuzz:" >&2
	echo "  rustup toolchain install $TOOLCHAIN --profile minimal && cargo install cargo-fuzz --version 0.13.2 --locked" >&2
	exit 1
fi
cargo "+$TOOLCHAIN" fuzz build >/dev/null

total=0
for t in "${TARGETS[@]}"; do
	found=target/fuzz-corpus/$t
	mkdir -p "$found" "fuzz/corpus/$t"
	log=target/fuzz-corpus/$t.log
	# New finds go to the first directory; the committed corpus is only read.
	if ! cargo "+$TOOLCHAIN" fuzz run "$t" "$found" "fuzz/corpus/$t" -- "${limit[@]}" -timeout=10 \
		-max_len="${MAX_LEN[$t]}" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
		tail -n 40 "$log" >&2
		echo "fuzz target $t failed (log: $log; the input is in fuzz/artifacts/$t/)" >&2
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
		cargo "+$TOOLCHAIN" fuzz run "$t" "$min" "fuzz/corpus/$t" "$found" -- -merge=1 -use_counters=0 \
			-max_len="${MAX_LEN[$t]}" >"$log.merge" 2>&1
		rm -rf "fuzz/corpus/$t" "$found" && mv "$min" "fuzz/corpus/$t"
	fi
done
echo "total: $total executions"

#!/bin/sh
# RUSTC_WORKSPACE_WRAPPER of fuzz/run.sh's short build: cargo runs it, instead of rustc, for the workspace's
# own crates only (tka and the fuzz targets), which get libFuzzer's coverage instrumentation (the flags
# cargo-fuzz uses) and `--cfg fuzzing`. The dependencies are compiled exactly as `cargo build` compiles them,
# so that build's artifacts serve both.
rustc=$1
shift
exec "$rustc" "$@" -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
	-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing

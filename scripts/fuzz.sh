#!/usr/bin/env bash
# fuzz.sh - build the libFuzzer targets (clang, ASan+UBSan) in build-fuzz/ and
# run each for N seconds over a scratch copy of its seed corpus, so the
# committed corpus in tests/fuzz/corpus/ stays as it is.
#
#   scripts/fuzz.sh [SECONDS]        # or FUZZ_SECONDS=N; default 30 per target
#
# A libFuzzer dictionary tests/fuzz/<target>.dict is used when present.
# Env: FUZZ_BUILD_DIR (default build-fuzz), FUZZ_TARGETS (default
# "safetensors manifest"), FUZZ_JOBS (parallel build jobs, default 2),
# FUZZ_WORK (scratch dir, default a mktemp dir removed on success).
# Exits non-zero if a target crashes, leaks, times out or fails to build; the
# reproducer (crash-*, leak-*, timeout-*) is kept under the scratch dir and
# its path printed. Reproduce with: build-fuzz/bin/fuzz_<target> FILE
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=${1:-${FUZZ_SECONDS:-30}}
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
targets=${FUZZ_TARGETS:-safetensors manifest gguf tokenizer tok_json}
jobs=${FUZZ_JOBS:-2}

if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "fuzz.sh: seconds must be a positive integer (got '$seconds')" >&2
    exit 2
fi
if ! command -v clang >/dev/null; then
    echo "fuzz.sh: clang not found (libFuzzer needs clang)" >&2
    exit 2
fi

# -Wno-unknown-warning-option: the top-level flags include GCC-only warnings.
CC=clang cmake -S "$root" -B "$build" -DTHAW_BUILD_FUZZ=ON -DTHAW_SANITIZE=address,undefined \
    -DTHAW_BUILD_TESTS=OFF -DTHAW_WITH_CUDA=OFF \
    -DCMAKE_C_FLAGS=-Wno-unknown-warning-option >/dev/null
cmake --build "$build" -j "$jobs" --target $(printf 'fuzz_%s ' $targets) >/dev/null

work=${FUZZ_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/thaw-fuzz.XXXXXX")}
mkdir -p "$work"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=0
for t in $targets; do
    seeds=$root/tests/fuzz/corpus/$t
    corpus=$work/$t/corpus
    artifacts=$work/$t/artifacts
    mkdir -p "$corpus" "$artifacts"
    if [ -d "$seeds" ]; then
        cp -r "$seeds/." "$corpus/"
    fi
    echo "fuzz.sh: fuzz_$t for ${seconds}s (corpus $corpus)"
    # libFuzzer prints its progress to stderr; keep the log for the summary.
    log=$work/$t/fuzz.log
    dict=()
    if [ -f "$root/tests/fuzz/$t.dict" ]; then
        dict=(-dict="$root/tests/fuzz/$t.dict")
    fi
    rc=0
    "$build/bin/fuzz_$t" "$corpus" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" "${dict[@]}" \
        >"$log" 2>&1 || rc=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)' "$log" || true
    if [ "$rc" -ne 0 ]; then
        echo "fuzz.sh: fuzz_$t FAILED (exit $rc); last lines of $log:" >&2
        tail -n 40 "$log" >&2
        ls "$artifacts"/* 2>/dev/null | sed 's/^/fuzz.sh: reproducer: /' >&2 || true
        failed=1
    fi
done

if [ "$failed" -ne 0 ]; then
    echo "fuzz.sh: failures kept under $work" >&2
    exit 1
fi
if [ -z "${FUZZ_WORK:-}" ]; then
    rm -rf "$work"
fi
echo "fuzz.sh: all targets ran ${seconds}s without a crash"

#!/usr/bin/env bash
# bench/sched_scale.sh - the scheduler's decision latency at cluster scale
# (bench/sched_scale.c): a private PostgreSQL seeded with 1,000 hosts and
# 10,000 checkpoints (50,000 replicas over DRAM and SSD, 2,000 warm
# instances), then 2,000 read-only rankings and 2,000 placements with
# reservation, each timed. Prints P50/P90/P99 per decision. Needs the
# PostgreSQL server binaries (as the tests do); not part of CTest.
#
#   bench/sched_scale.sh [--hosts N] [--checkpoints M] [--decisions K] [--hold]
#
# SCHED_BUILD (default build-sched) is the CMake build whose
# libthaw_scheduler.a is linked (RelWithDebInfo, -O2, unless configured
# otherwise): cmake -S . -B build-sched -DTHAW_WITH_CUDA=OFF
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${SCHED_BUILD:-$ROOT/build-sched}
make -C "$BUILD" thaw_scheduler >/dev/null
OUT=$BUILD/bench
mkdir -p "$OUT"
cc -std=c11 -D_GNU_SOURCE -O2 -I"$ROOT" -I"$BUILD/gen" -o "$OUT/sched_scale" \
    "$ROOT/bench/sched_scale.c" "$ROOT/tests/scheduler/pg_harness.c" \
    "$BUILD/libthaw_scheduler.a" "$BUILD/libthaw_common.a" \
    $(pkg-config --cflags --libs libpq libxxhash) -lpthread -lm
echo "# library: $BUILD ($(grep -E '^CMAKE_BUILD_TYPE:' "$BUILD/CMakeCache.txt" | cut -d= -f2 | sed 's/^$/RelWithDebInfo (default)/'))"
echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load: $(cut -d' ' -f1-3 /proc/loadavg)"
exec "$OUT/sched_scale" "$@"

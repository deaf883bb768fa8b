#!/usr/bin/env bash
# The test command: install what is needed, build, run every test with
# CTest and print its summary. Extra arguments go to ctest (e.g. -R loader).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"

bash scripts/deps.sh
python=$(bash scripts/pyenv.sh)

build=${THAW_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTHAW_PYTHON="$python" ${THAW_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j"$(nproc)"
cd "$build"
ctest --output-on-failure -j2 "$@"

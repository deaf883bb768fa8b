#!/usr/bin/env bash
# Runtime benchmark: thaw-runtime's warm TTFT overhead over the engine, its
# cold start (/init -> first token) against the loader's benchmark time plus
# the engine's prefill, and throughput under concurrent clients, on
# SmolLM2-135M-Instruct. Writes bench/reports/runtime.md.
#   bench/runtime.sh [REPS]     (default 11)
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(bash scripts/pyenv.sh)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTHAW_PYTHON="$python" >/dev/null
cmake --build build -j"$(nproc)" --target thaw thaw-runtime >/dev/null
ckpt=$(bash scripts/smollm2.sh bf16)
"$python" bench/py/runtime_bench.py --bin build/bin --ckpt "$ckpt" --reps "${1:-11}" | tee bench/reports/runtime.md

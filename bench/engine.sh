#!/usr/bin/env bash
# Engine benchmark: decode and prefill speed of Thaw's CPU engine on a model
# of SmolLM2-135M's shape (random weights, bf16), against the limits of this
# machine measured in the same run (memory read bandwidth for decode, the
# FMA rate for prefill) and against a real peer, Hugging Face transformers
# (PyTorch, CPU, bf16) on the same weights. Medians of interleaved runs;
# writes bench/reports/engine.md.
#
#   bench/engine.sh [REPS]          (default 5)
#
# The peer needs torch + transformers: set BENCH_PEER_PY to a python that has
# them, or the script makes bench/work/venv-peer with pip (large download).
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5}
python=$(bash scripts/pyenv.sh)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTHAW_PYTHON="$python" >/dev/null
cmake --build build -j"$(nproc)" --target thaw >/dev/null
thaw=$PWD/build/bin/thaw
work=bench/work/engine
mkdir -p "$work"
if [ ! -f "$work/ckpt/manifest.json" ]; then
  "$python" bench/py/make_llm.py --out "$work/hf" --shape smollm2-135m
  "$thaw" convert "$work/hf" "$work/ckpt" --dtype bf16 --force --quiet
fi
peer=${BENCH_PEER_PY:-}
if [ -z "$peer" ]; then
  if [ ! -x bench/work/venv-peer/bin/python ]; then
    python3 -m venv bench/work/venv-peer
    bench/work/venv-peer/bin/pip install -q torch transformers safetensors numpy
  fi
  peer=bench/work/venv-peer/bin/python
fi
: > "$work/thaw.jsonl"
: > "$work/peer.jsonl"
for i in $(seq "$reps"); do
  echo "rep $i/$reps" >&2
  "$thaw" bench engine "$work/ckpt" --json --batch 8 --tokens 64 --prompt 256 >> "$work/thaw.jsonl"
  "$peer" bench/py/peer_hf_generate.py "$work/hf" --batch 8 --tokens 64 --prompt 256 2>/dev/null \
    | tail -1 >> "$work/peer.jsonl"
done
"$python" - "$work" <<'PY'
import json, statistics as st, sys, platform, os
w = sys.argv[1]
T = [json.loads(l) for l in open(f"{w}/thaw.jsonl") if l.strip()]
P = [json.loads(l) for l in open(f"{w}/peer.jsonl") if l.strip()]
med = lambda xs, k: st.median(x[k] for x in xs)
t = {k: med(T, k) for k in ("mem_read_gbps", "fma_gflops", "decode_bound_tps", "decode1_tps", "decode1_ratio",
                            "decodeN_tps", "batch_speedup", "prefill_tps", "prefill_gflops", "prefill_ratio")}
p = {k: med(P, k) for k in ("decode1_tps", "decodeN_tps", "prefill_tps")} if P else None
lines = [
 "# Engine benchmark (CPU)", "",
 f"Model: SmolLM2-135M shape (30 layers, hidden 576, GQA 9/3, vocab 49152, tied), random weights, bf16, "
 f"{T[0]['weight_bytes']/1e6:.0f} MB read per decoded token. Machine: {os.cpu_count()} cores "
 f"({platform.processor() or platform.machine()}), shared and noisy: medians of {len(T)} interleaved runs; "
 "ratios, not absolute times, are the result. Reproduce: `bench/engine.sh`.", "",
 "| measure | Thaw | limit / peer | ratio | target |", "|---|---|---|---|---|",
 f"| decode, 1 sequence | {t['decode1_tps']:.1f} tok/s | memory bound {t['decode_bound_tps']:.1f} tok/s "
 f"({t['mem_read_gbps']:.1f} GB/s read) | **{t['decode1_ratio']:.2f}×** | ≥ 0.6× |",
 f"| decode, 8 sequences | {t['decodeN_tps']:.1f} tok/s | 1 sequence {t['decode1_tps']:.1f} tok/s | "
 f"**{t['batch_speedup']:.2f}×** | ≥ 4× |",
 f"| prefill, 256 tokens | {t['prefill_tps']:.0f} tok/s = {t['prefill_gflops']:.0f} GFLOP/s | FMA rate "
 f"{t['fma_gflops']:.0f} GFLOP/s | {t['prefill_ratio']:.2f}× | reported |",
]
if p:
    lines += [
     f"| vs transformers, decode 1 | {t['decode1_tps']:.1f} tok/s | {p['decode1_tps']:.1f} tok/s | "
     f"**{t['decode1_tps']/p['decode1_tps']:.2f}×** | — |",
     f"| vs transformers, decode 8 | {t['decodeN_tps']:.1f} tok/s | {p['decodeN_tps']:.1f} tok/s | "
     f"**{t['decodeN_tps']/p['decodeN_tps']:.2f}×** | — |",
     f"| vs transformers, prefill | {t['prefill_tps']:.0f} tok/s | {p['prefill_tps']:.0f} tok/s | "
     f"**{t['prefill_tps']/p['prefill_tps']:.2f}×** | — |",
     "", f"Peer: transformers with torch {P[0]['torch']}, bf16 weights, sdpa attention, {P[0]['threads']} threads."]
lines += ["", "Per run (Thaw): " + ", ".join(f"{x['decode1_tps']:.1f}/{x['decodeN_tps']:.1f}" for x in T) +
          " tok/s (batch 1 / batch 8)."]
# The hand-written analysis after the generated part survives a re-run.
keep = ""
if os.path.exists("bench/reports/engine.md"):
    old = open("bench/reports/engine.md").read()
    if "\n## Analysis" in old:
        keep = "\n## Analysis" + old.split("\n## Analysis", 1)[1]
open("bench/reports/engine.md", "w").write("\n".join(lines) + "\n" + keep)
print("\n".join(lines))
PY

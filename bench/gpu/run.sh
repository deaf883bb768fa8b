#!/usr/bin/env bash
# One script for a GPU session on the device machine (repo root as cwd, $OUT
# an output folder that comes back). Each stage fits the device's 600 s per
# command; run them in this order (bench/gpu/README.md):
#
#   bash bench/gpu/run.sh env           what the machine has (GPU, driver, nvcc, libs, python)
#   bash bench/gpu/run.sh build         Release build with CUDA into build-gpu/ (-j16, sm_90)
#   bash bench/gpu/run.sh test          ctest engine/loader/tokenizer, test_loader gpu, the
#                                       CUDA cases of test_engine
#   bash bench/gpu/run.sh goldens       tests/engine/engine_goldens.py --device cuda
#   bash bench/gpu/run.sh bench-prep    8B-shaped random bf16 model (HF folder) + thaw convert
#                                       + a torch.save copy for the torch.load peer
#   bash bench/gpu/run.sh bench-load    load to GPU: thaw cold/warm vs disk (fio|dd), pinned
#                                       cudaMemcpy bandwidth, safetensors and torch.load peers
#   bash bench/gpu/run.sh bench-decode  decode tok/s batch 1 and 32 vs HBM bound and
#                                       transformers; process start to first token
#   bash bench/gpu/run.sh summary       merge everything measured so far into $OUT/summary.json
#
# Every stage logs to $OUT/<stage>.log, keeps its results in
# bench/work/gpu/results/*.json (kept between calls while the machine is held)
# and ends by writing the merged $OUT/summary.json. Environment: OUT (default
# bench/work/gpu/out), BENCH_PY (python with torch; default python3), JOBS (16).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
stage=${1:-}
OUT=${OUT:-$ROOT/bench/work/gpu/out}
WORK=$ROOT/bench/work/gpu
RES=$WORK/results
BUILD=$ROOT/build-gpu
PY=${BENCH_PY:-python3}
JOBS=${JOBS:-16}
THAW=$BUILD/bin/thaw
HF=$WORK/hf-8b
CKPT=$WORK/ckpt-8b
PT=$WORK/model-8b.pt
mkdir -p "$OUT" "$RES"
export PATH="$PATH:/usr/local/cuda/bin"
exec > >(tee -a "$OUT/${stage:-none}.log") 2>&1

now() { date +%s.%N; }
T_STAGE=$(now)
elapsed() { awk -v a="$T_STAGE" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }
say() { echo "== [$(elapsed) s] $*"; }

# Run a step, keep going on failure; its stdout's last JSON line (if any)
# becomes results/NAME.json, else {"rc": N, "error": "..."}.
step() {
    local name=$1; shift
    say "$name: $*"
    local t0 out rc
    t0=$(now)
    out=$("$@" 2> "$WORK/$name.stderr")
    rc=$?
    local dt
    dt=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
    echo "$out" | tail -20
    tail -5 "$WORK/$name.stderr" >&2
    local js
    js=$(echo "$out" | grep '^{' | tail -1)
    if [ "$rc" -eq 0 ] && [ -n "$js" ]; then
        echo "$js" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); d["wall_s"]=float(sys.argv[1]); print(json.dumps(d))' "$dt" \
            > "$RES/$name.json" 2>/dev/null || echo "$js" > "$RES/$name.json"
    else
        "$PY" -c 'import json,sys; print(json.dumps({"rc": int(sys.argv[1]), "wall_s": float(sys.argv[2]), "error": open(sys.argv[3]).read()[-1500:]}))' \
            "$rc" "$dt" "$WORK/$name.stderr" > "$RES/$name.json"
    fi
    return $rc
}

summary() {
    "$PY" "$ROOT/bench/gpu/summary.py" "$RES" > "$OUT/summary.json" && say "wrote $OUT/summary.json"
    cp -f "$RES"/*.json "$OUT/" 2>/dev/null || true
}

need_build() {
    if [ ! -x "$THAW" ]; then
        say "FAIL: $THAW missing: run 'bash bench/gpu/run.sh build' first"
        summary
        exit 1
    fi
}

# Page cache: try the global drop (needs root and a writable /proc/sys); the
# loader's --cold and gpu_probe's drop use posix_fadvise, which works
# unprivileged for clean pages.
drop_caches() {
    sync
    if echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then
        echo "drop_caches=global"
    else
        "$PY" bench/py/gpu_probe.py drop "$@" >/dev/null 2>&1 && echo "drop_caches=fadvise" ||
            echo "drop_caches=none"
    fi
}

case "$stage" in
env)
    {
        echo "# date"; date -u
        echo "# nvidia-smi"; nvidia-smi 2>&1 | head -30
        echo "# nvidia-smi query"
        nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.max,pcie.link.width.max --format=csv 2>&1
        echo "# nvcc"; command -v nvcc && nvcc --version 2>&1 | tail -2
        ls -d /usr/local/cuda* 2>&1
        echo "# cmake"; cmake --version 2>&1 | head -1
        echo "# compilers"; cc --version 2>&1 | head -1; c++ --version 2>&1 | head -1
        echo "# pkg-config libraries (Debian -dev packages the build needs)"
        for p in jansson:libjansson-dev libcurl:libcurl4-openssl-dev libxxhash:libxxhash-dev \
                 libpcre2-8:libpcre2-dev libutf8proc:libutf8proc-dev libpq:libpq-dev \
                 libmicrohttpd:libmicrohttpd-dev libzip:libzip-dev liburing:liburing-dev; do
            m=${p%%:*}; d=${p#*:}
            if pkg-config --exists "$m" 2>/dev/null; then echo "ok      $m $(pkg-config --modversion "$m")"
            else echo "MISSING $m (apt-get install $d)"; fi
        done
        echo "# python"; $PY -c 'import sys, torch, transformers, safetensors, numpy; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__, "safetensors", safetensors.__version__, "numpy", numpy.__version__, "gpu", torch.cuda.is_available() and torch.cuda.get_device_name(0))' 2>&1
        echo "# fio"; command -v fio || echo "no fio (dd iflag=direct is used)"
        echo "# cpu / memory / disk"; nproc; free -g | head -2; df -h "$ROOT" | tail -1
        echo "# drop_caches writable?"; [ -w /proc/sys/vm/drop_caches ] && echo yes || echo no
        echo "# id"; id
    } 2>&1 | tee "$OUT/env.txt"
    ;;

build)
    miss=""
    command -v nvcc >/dev/null || miss="$miss nvcc(CUDA toolkit)"
    command -v cmake >/dev/null || miss="$miss cmake(>=3.24)"
    command -v pkg-config >/dev/null || miss="$miss pkg-config"
    for p in jansson:libjansson-dev libcurl:libcurl4-openssl-dev libxxhash:libxxhash-dev \
             libpcre2-8:libpcre2-dev libutf8proc:libutf8proc-dev libpq:libpq-dev \
             libmicrohttpd:libmicrohttpd-dev libzip:libzip-dev; do
        pkg-config --exists "${p%%:*}" 2>/dev/null || miss="$miss ${p#*:}"
    done
    if [ -n "$miss" ]; then
        say "missing:$miss"
        if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
            pk=$(echo "$miss" | tr ' ' '\n' | grep -- '-dev$' | tr '\n' ' ')
            [ -n "$pk" ] && say "trying apt-get install $pk (needs a reachable mirror)" &&
                timeout 240 apt-get install -y --no-install-recommends $pk >/dev/null 2>&1
        fi
    fi
    say "configure"
    t0=$(now)
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTHAW_WITH_CUDA=ON \
          -DCMAKE_CUDA_ARCHITECTURES=90 -DTHAW_PYTHON="$(command -v $PY)" 2>&1 | tail -15
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        say "FAIL: configure (rc $rc); missing:${miss:- none detected}"
        echo "{\"configure_rc\": $rc, \"missing\": \"${miss# }\"}" > "$RES/build.json"
        summary; exit 1
    fi
    say "build -j$JOBS"
    cmake --build "$BUILD" -j"$JOBS" 2>&1 | grep -E "warning|error|Error" | head -40
    rc=${PIPESTATUS[0]}
    dt=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    echo "{\"build_rc\": $rc, \"seconds\": $dt, \"nvcc\": \"$(nvcc --version | tail -1)\"}" > "$RES/build.json"
    summary
    [ "$rc" -eq 0 ] && say "build ok in $dt s" || { say "FAIL: build rc $rc"; exit 1; }
    ;;

test)
    need_build
    fails=0
    say "ctest engine, loader, tokenizer"
    (cd "$BUILD" && ctest -R '^(engine|loader|tokenizer)$' --output-on-failure --timeout 280) \
        > "$OUT/ctest.txt" 2>&1
    rc=$?; tail -15 "$OUT/ctest.txt"; [ $rc -ne 0 ] && fails=$((fails + 1))
    echo "{\"ctest_rc\": $rc}" > "$RES/test_ctest.json"
    for c in gpu gpu_absent; do
        say "test_loader $c"
        timeout 280 "$BUILD/bin/test_loader" "$c" 2>&1 | tail -8
        rc=${PIPESTATUS[0]}; echo "{\"rc\": $rc}" > "$RES/test_loader_$c.json"
        [ $rc -ne 0 ] && [ $rc -ne 77 ] && fails=$((fails + 1))
    done
    # The CUDA cases one by one (verbose: they print their errors), so a
    # crash in one does not hide the others.
    for c in backend_errors cuda cuda_batching cuda_device_weights; do
        say "test_engine $c"
        timeout 280 "$BUILD/bin/test_engine" "$c" 2>&1 | tail -30
        rc=${PIPESTATUS[0]}; echo "{\"rc\": $rc}" > "$RES/test_engine_$c.json"
        [ $rc -ne 0 ] && fails=$((fails + 1))   # 77 (skip) counts as a failure on a GPU machine
    done
    summary
    say "test: $fails failing"
    [ $fails -eq 0 ]
    ;;

goldens)
    need_build
    say "engine_goldens --device cuda (tiny fixtures; SmolLM2 needs the network)"
    THAW_BIN=$BUILD/bin THAW_SOURCE_DIR=$ROOT timeout 560 "$PY" tests/engine/engine_goldens.py \
        --device cuda llama llama_llama3rope qwen2 mistral llama_bf16 llama_linear 2>&1 | tail -60
    rc=${PIPESTATUS[0]}
    echo "{\"rc\": $rc}" > "$RES/goldens_cuda.json"
    summary
    [ $rc -eq 0 ]
    ;;

bench-prep)
    need_build
    free_gb=$(df -BG --output=avail "$ROOT" | tail -1 | tr -dc 0-9)
    say "free disk ${free_gb} GB (needs ~33 GB, ~49 GB with the torch.save copy)"
    if [ ! -f "$HF/model.safetensors" ]; then
        step make_8b "$PY" bench/py/make_llm_gpu.py --out "$HF" --shape llama3-8b || { summary; exit 1; }
    fi
    if [ ! -f "$CKPT/manifest.json" ]; then
        step convert_8b bash -c "'$THAW' convert '$HF' '$CKPT' --dtype keep --force --quiet && echo '{\"converted\": true}'" ||
            { summary; exit 1; }
    fi
    free_gb=$(df -BG --output=avail "$ROOT" | tail -1 | tr -dc 0-9)
    if [ ! -f "$PT" ] && [ "$free_gb" -gt 24 ] && [ "$(elapsed)" -lt 360 ]; then
        step make_pt "$PY" bench/py/gpu_probe.py make_pt "$HF/model.safetensors" "$PT"
    elif [ ! -f "$PT" ]; then
        say "skipping the torch.save copy (free ${free_gb} GB, $(elapsed) s used); rerun bench-prep to make it"
    fi
    du -sh "$HF" "$CKPT" "$PT" 2>/dev/null
    summary
    ;;

bench-load)
    need_build
    [ -f "$CKPT/manifest.json" ] || { say "FAIL: run bench-prep first"; exit 1; }
    parts=$(ls "$CKPT"/part-*.bin)
    step copy_bw "$PY" bench/py/gpu_probe.py copy
    # Raw disk read of the checkpoint file(s), O_DIRECT (fio, else dd).
    step disk_read "$PY" bench/py/gpu_probe.py disk $parts
    # Thaw: cold (the loader drops the files' pages itself, then O_DIRECT)
    # and warm (all pages resident: buffered reads from the page cache).
    say "$(drop_caches $parts)"
    step thaw_load_gpu_cold "$THAW" bench load "$CKPT" --to gpu --cold --repeat 3 --json
    cat $parts > /dev/null
    step thaw_load_gpu_warm "$THAW" bench load "$CKPT" --to gpu --repeat 3 --json
    step thaw_load_host_warm "$THAW" bench load "$CKPT" --to host --repeat 3 --json
    # Peers.
    for r in 1 2; do
        step st_load_cold_$r "$PY" bench/py/gpu_probe.py st_load "$HF/model.safetensors" --cold
    done
    cat "$HF/model.safetensors" > /dev/null
    for r in 1 2; do
        step st_load_warm_$r "$PY" bench/py/gpu_probe.py st_load "$HF/model.safetensors"
    done
    if [ -f "$PT" ] && [ "$(elapsed)" -lt 420 ]; then
        step torch_load_cold "$PY" bench/py/gpu_probe.py torch_load "$PT" --cold
        cat "$PT" > /dev/null
        step torch_load_warm "$PY" bench/py/gpu_probe.py torch_load "$PT"
    else
        say "skipping torch.load peer (no $PT or out of time: $(elapsed) s)"
    fi
    summary
    ;;

bench-decode)
    need_build
    [ -f "$CKPT/manifest.json" ] || { say "FAIL: run bench-prep first"; exit 1; }
    [ -f "$RES/copy_bw.json" ] || step copy_bw "$PY" bench/py/gpu_probe.py copy
    cat "$CKPT"/part-*.bin > /dev/null
    step thaw_decode "$THAW" bench engine "$CKPT" --device cuda --batch 32 --tokens 128 \
        --prompt 512 --json
    step thaw_decode_fast_act "$THAW" bench engine "$CKPT" --device cuda --batch 32 --tokens 128 \
        --prompt 512 --fast-act --json
    ids=$(seq -s, 3 7 200 | cut -d, -f1-16)
    # Process start to first token, page cache warm: thaw generate exits
    # right after its first token (wall time includes exit).
    for r in 1 2 3; do
        step thaw_ttft_warm_$r "$PY" bench/py/gpu_probe.py time -- "$THAW" generate "$CKPT" \
            --ids "$ids" --max-tokens 1 --device cuda --json
    done
    cat "$HF"/model.safetensors > /dev/null
    for r in 1 2; do
        step hf_ttft_warm_$r bash -c "BENCH_T0=\$(date +%s.%N) exec '$PY' bench/py/peer_hf_cuda.py '$HF' ttft"
    done
    if [ "$(elapsed)" -lt 330 ]; then
        say "$(drop_caches "$CKPT"/part-*.bin)"
        step thaw_ttft_cold "$PY" bench/py/gpu_probe.py time -- "$THAW" generate "$CKPT" \
            --ids "$ids" --max-tokens 1 --device cuda --json
        say "$(drop_caches "$HF"/model.safetensors)"
        step hf_ttft_cold bash -c "BENCH_T0=\$(date +%s.%N) exec '$PY' bench/py/peer_hf_cuda.py '$HF' ttft"
    fi
    if [ "$(elapsed)" -lt 420 ]; then
        step hf_decode timeout $((560 - $(elapsed))) "$PY" bench/py/peer_hf_cuda.py "$HF" decode \
            --batch 32 --tokens 128
    else
        say "skipping transformers decode ($(elapsed) s used): run 'bash bench/gpu/run.sh bench-peer'"
    fi
    summary
    ;;

bench-peer)
    # transformers decode alone, when bench-decode ran out of time for it.
    [ -f "$HF/config.json" ] || { say "FAIL: run bench-prep first"; exit 1; }
    step hf_decode timeout 560 "$PY" bench/py/peer_hf_cuda.py "$HF" decode --batch 32 --tokens 128
    summary
    ;;

summary)
    summary
    cat "$OUT/summary.json"
    ;;

*)
    sed -n '2,25p' "$0"
    exit 2
    ;;
esac

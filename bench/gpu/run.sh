#!/usr/bin/env bash
# One script for a GPU session on the device machine (repo root as cwd, $OUT
# an output folder that comes back). Each stage fits the device's 600 s per
# command; run them in this order (bench/gpu/README.md):
#
#   bash bench/gpu/run.sh env           what the machine has (GPU, driver, nvcc, libs, python)
#   bash bench/gpu/run.sh build         Release build with CUDA into build-gpu/ (-j16, sm_90),
#                                       or, without nvcc / -dev packages, check a carried
#                                       build-gpu-bundle/ (bench/gpu/bundle.sh)
#   bash bench/gpu/run.sh test          test_engine/loader/tokenizer, test_loader gpu, the
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
# bench/work/gpu/out), BENCH_PY (python with torch; default python3), JOBS (16),
# APT=1 (let `build` try apt-get for missing -dev packages: needs a mirror),
# GPU_WORK (default bench/work/gpu), GPU_BUILD (default build-gpu), BENCH_SHAPE
# (make_llm_gpu.py --shape, default llama3-8b; llama3-tiny for a dry run),
# ALLOW_NO_GPU=1 (run the GPU stages anyway on a machine without a GPU: dry
# runs of this script).
#
# Binaries: build-gpu/ when `build` compiled it here, else build-gpu-bundle/
# (made elsewhere by bench/gpu/bundle.sh and carried in; `build` links the
# device's cuBLAS into it).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
stage=${1:-}
OUT=${OUT:-$ROOT/bench/work/gpu/out}
WORK=${GPU_WORK:-$ROOT/bench/work/gpu}
RES=$WORK/results
BUNDLE=$ROOT/build-gpu-bundle
BUILD=${GPU_BUILD:-$ROOT/build-gpu}
[ ! -x "$BUILD/bin/thaw" ] && [ -x "$BUNDLE/bin/thaw" ] && [ "$stage" != build ] && BUILD=$BUNDLE
PY=${BENCH_PY:-python3}
JOBS=${JOBS:-16}
SHAPE=${BENCH_SHAPE:-llama3-8b}
THAW=$BUILD/bin/thaw
tag=8b; [ "$SHAPE" = llama3-8b ] || tag=$SHAPE   # other shapes: dry runs, kept apart
HF=$WORK/hf-$tag
CKPT=$WORK/ckpt-$tag
PT=$WORK/model-$tag.pt
mkdir -p "$OUT" "$RES"
export PATH="$PATH:/usr/local/cuda/bin"
exec > >(tee -a "$OUT/${stage:-none}.log") 2>&1
TEE_PID=$!
# Let tee write the last lines before the command returns.
trap 'exec >&- 2>&-; wait "$TEE_PID" 2>/dev/null' EXIT

now() { date +%s.%N; }
T_STAGE=$(now)
elapsed() { awk -v a="$T_STAGE" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }
say() { echo "== [$(elapsed) s] $*"; }
# Seconds left of the device's 600 s per command (30 s kept for the summary),
# capped at $1: a timeout for one step.
left() { local l=$((570 - $(elapsed))); [ "$l" -gt "$1" ] && l=$1; [ "$l" -lt 5 ] && l=5; echo "$l"; }

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
    say "binaries: $BUILD"
    # A bundle carried again replaces the cuBLAS links made by `build`: redo them.
    if [ "$BUILD" = "$BUNDLE" ] && ! setup_bundle > "$WORK/bundle_setup.log" 2>&1; then
        cat "$WORK/bundle_setup.log"
        say "FAIL: build-gpu-bundle unusable here (above)"
        summary
        exit 1
    fi
}

# The GPU stages: fail in a second, not after minutes of timeouts, when the
# machine has no usable NVIDIA GPU (ALLOW_NO_GPU=1: warn and go on).
need_gpu() {
    local why=""
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi -L 2>/dev/null | grep -q '^GPU ' || why="nvidia-smi lists no GPU: $(nvidia-smi -L 2>&1 | head -1)"
    elif ! ls /dev/nvidia[0-9]* >/dev/null 2>&1; then
        why="no nvidia-smi and no /dev/nvidia*"
    fi
    [ -z "$why" ] && return 0
    if [ "${ALLOW_NO_GPU:-0}" = 1 ]; then
        say "WARNING: no GPU ($why); going on (ALLOW_NO_GPU=1): GPU steps will fail"
        return 0
    fi
    say "FAIL: no GPU: $why"
    echo "{\"rc\": 1, \"error\": \"no GPU: stage $stage not run\"}" > "$RES/${stage}_nogpu.json"
    summary
    exit 1
}

# cuBLAS for the bundle: the device's CUDA install, then PyTorch's wheels.
find_cublas() {  # $1 = soname (libcublas.so.13): prints the directory
    local d
    d=$(ldconfig -p 2>/dev/null | awk -v n="$1" '$1 == n { print $NF; exit }')
    [ -n "$d" ] && { dirname "$d"; return 0; }
    for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib \
             /usr/local/cuda-*/lib64 /usr/local/cuda-*/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
        [ -e "$d/$1" ] && { echo "$d"; return 0; }
    done
    # pip wheels: nvidia/cu13/lib (CUDA 13 wheels), nvidia/cublas/lib (CUDA 12)
    d=$("$PY" -c 'import nvidia, os; print("\n".join(os.path.abspath(p) for p in nvidia.__path__))' 2>/dev/null |
        while read -r p; do find "$p" -maxdepth 3 -name "$1" 2>/dev/null; done | head -1)
    [ -n "$d" ] && { dirname "$d"; return 0; }
    d=$("$PY" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)
    [ -n "$d" ] && [ -e "$d/$1" ] && { echo "$d"; return 0; }
    return 1
}

# build-gpu-bundle on this machine: link cuBLAS in, check that every library
# resolves and that the binaries start.
setup_bundle() {
    local major ok=1 lib d
    major=$(sed -n 's/^cuda_major: *//p' "$BUNDLE/BUNDLE.txt" 2>/dev/null)
    major=${major:-13}
    say "using $BUNDLE (built elsewhere by bench/gpu/bundle.sh):"
    sed 's/^/    /' "$BUNDLE/BUNDLE.txt" 2>/dev/null | head -8
    say "this machine: $(ldd --version 2>&1 | head -1)"
    for lib in libcublas.so.$major libcublasLt.so.$major; do
        if d=$(find_cublas "$lib"); then
            ln -sfn "$d/$lib" "$BUNDLE/lib/$lib"
            say "$lib -> $d/$lib"
        else
            say "FAIL: $lib not found (ldconfig, /usr/local/cuda*, $PY's nvidia.* wheels, torch/lib);"
            say "      the bundle was built with CUDA $major; libcublas.so.* here:"
            { ldconfig -p 2>/dev/null | grep -o 'libcublas\.so\.[0-9]*' | sort -u
              "$PY" -c 'import nvidia, os; print("\n".join(nvidia.__path__))' 2>/dev/null |
                  while read -r p; do find "$p" -maxdepth 3 -name 'libcublas.so*'; done; } | sed 's/^/      /'
            ok=0
        fi
    done
    local nf
    nf=$(for b in "$BUNDLE"/libexec/*; do LD_LIBRARY_PATH="$BUNDLE/lib" ldd "$b"; done 2>&1 |
         grep -E 'not found|GLIBC|GLIBCXX' | sort -u)
    if [ -n "$nf" ]; then
        say "FAIL: unresolved in the bundle:"; echo "$nf" | sed 's/^/    /'; ok=0
    fi
    local start
    start=$("$BUNDLE/bin/thaw" 2>&1)  # usage text, exit 2, when it starts at all
    case "$start" in
        "usage: thaw"*) ;;
        *) say "FAIL: $BUNDLE/bin/thaw does not start:"; echo "$start" | head -5; ok=0 ;;
    esac
    [ "$ok" = 1 ]
}

# Page cache: try the global drop (needs root and a writable /proc/sys); the
# loader's --cold and gpu_probe's drop use posix_fadvise, which works
# unprivileged for clean pages.
drop_caches() {
    sync
    if { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
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
        echo "# glibc"; ldd --version 2>&1 | head -1
        echo "# cuBLAS (needed by a carried build-gpu-bundle: CUDA $(sed -n 's/^cuda_major: *//p' "$BUNDLE/BUNDLE.txt" 2>/dev/null || echo 13))"
        for l in libcublas.so.13 libcublas.so.12; do
            d=$(find_cublas $l) && echo "ok      $l in $d" || echo "none    $l"
        done
        echo "# build-gpu-bundle"; head -8 "$BUNDLE/BUNDLE.txt" 2>/dev/null || echo "not carried"
        echo "# fio"; command -v fio || echo "no fio (dd iflag=direct is used)"
        echo "# cpu / memory / disk"; nproc; free -g | head -2; df -h "$ROOT" | tail -1
        echo "# drop_caches writable?"; [ -w /proc/sys/vm/drop_caches ] && echo yes || echo no
        echo "# id"; id
    } 2>&1 | tee "$OUT/env.txt"
    ;;

build)
    # What the CMake configure needs (CMakeLists.txt: all REQUIRED), checked
    # up front so a machine without them fails in seconds with the list.
    miss=""
    command -v nvcc >/dev/null || miss="$miss nvcc(CUDA-toolkit)"
    if ! command -v cmake >/dev/null; then
        miss="$miss cmake(>=3.24)"
    else
        cv=$(cmake --version | sed -n '1s/[^0-9]*\([0-9]*\.[0-9]*\).*/\1/p')
        printf '%s\n%s\n' 3.24 "$cv" | sort -CV || miss="$miss cmake(>=3.24,have-$cv)"
    fi
    command -v cc >/dev/null || miss="$miss cc(C-compiler)"
    if ! command -v pkg-config >/dev/null; then
        miss="$miss pkg-config libjansson-dev libcurl4-openssl-dev libxxhash-dev libpcre2-dev libutf8proc-dev libpq-dev libmicrohttpd-dev libzip-dev"
    else
        for p in jansson:libjansson-dev libcurl:libcurl4-openssl-dev libxxhash:libxxhash-dev \
                 libpcre2-8:libpcre2-dev libutf8proc:libutf8proc-dev libpq:libpq-dev \
                 libmicrohttpd:libmicrohttpd-dev libzip:libzip-dev; do
            pkg-config --exists "${p%%:*}" 2>/dev/null || miss="$miss ${p#*:}"
        done
    fi
    if [ -n "$miss" ] && [ "${APT:-0}" = 1 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        pk=$(echo "$miss" | tr ' ' '\n' | grep -- '-dev$' | tr '\n' ' ')
        if [ -n "$pk" ]; then
            say "APT=1: apt-get install $pk (needs a reachable mirror)"
            # shellcheck disable=SC2086
            timeout 180 apt-get install -y --no-install-recommends $pk 2>&1 | tail -3
            miss=$(echo "$miss" | tr ' ' '\n' | grep -v -- '-dev$' | tr '\n' ' ')
            for p in jansson:libjansson-dev libcurl:libcurl4-openssl-dev libxxhash:libxxhash-dev \
                     libpcre2-8:libpcre2-dev libutf8proc:libutf8proc-dev libpq:libpq-dev \
                     libmicrohttpd:libmicrohttpd-dev libzip:libzip-dev; do
                pkg-config --exists "${p%%:*}" 2>/dev/null || miss="$miss ${p#*:}"
            done
            miss=$(echo "$miss" | tr -s ' ')
        fi
    fi
    miss=$(echo "$miss" | sed 's/^ *//')
    if [ -n "$miss" ]; then
        say "cannot build here; missing: $miss"
        if [ -x "$BUNDLE/bin/thaw" ]; then
            if setup_bundle; then
                echo "{\"mode\": \"bundle\", \"build_rc\": 0, \"missing\": \"$miss\"}" > "$RES/build.json"
                summary
                say "build: using the carried build-gpu-bundle (the other stages pick it up)"
                exit 0
            fi
            echo "{\"mode\": \"bundle\", \"build_rc\": 1, \"missing\": \"$miss\", \"error\": \"bundle unusable\"}" > "$RES/build.json"
            summary
            say "FAIL: build-gpu-bundle is unusable here (above)"
            exit 1
        fi
        echo "{\"build_rc\": 1, \"missing\": \"$miss\"}" > "$RES/build.json"
        summary
        say "FAIL: missing: $miss"
        say "no build-gpu-bundle either: on a machine with nvcc and the -dev packages run"
        say "'bash bench/gpu/bundle.sh' and pass carry=[\"build-gpu-bundle\"] (bench/gpu/README.md)"
        exit 1
    fi
    say "configure"
    t0=$(now)
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTHAW_WITH_CUDA=ON \
          -DCMAKE_CUDA_ARCHITECTURES=90 -DTHAW_PYTHON="$(command -v "$PY")" > "$WORK/configure.log" 2>&1
    rc=$?
    tail -15 "$WORK/configure.log"
    if [ "$rc" -ne 0 ]; then
        say "FAIL: configure (rc $rc)"
        echo "{\"configure_rc\": $rc}" > "$RES/build.json"
        summary; exit 1
    fi
    # Only what the stages run (not the scheduler / runtime servers): faster.
    say "build -j$JOBS: thaw test_engine test_loader test_tokenizer"
    timeout "$(left 560)" cmake --build "$BUILD" -j"$JOBS" --target thaw test_engine test_loader test_tokenizer \
        > "$WORK/build.log" 2>&1
    rc=$?
    grep -E "warning|error|Error" "$WORK/build.log" | head -40
    dt=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    echo "{\"mode\": \"build\", \"build_rc\": $rc, \"seconds\": $dt, \"nvcc\": \"$(nvcc --version | tail -1)\"}" > "$RES/build.json"
    summary
    if [ "$rc" -eq 0 ]; then say "build ok in $dt s"; exit 0; fi
    say "FAIL: build rc $rc (log: $WORK/build.log)"; tail -20 "$WORK/build.log"
    if [ -x "$BUNDLE/bin/thaw" ]; then
        say "falling back to the carried build-gpu-bundle"
        rm -f "$BUILD/bin/thaw"   # so the other stages pick the bundle
        if setup_bundle; then
            echo "{\"mode\": \"bundle\", \"build_rc\": 0, \"local_build_rc\": $rc}" > "$RES/build.json"
            summary; exit 0
        fi
    fi
    exit 1
    ;;

test)
    need_build
    need_gpu
    fails=0
    export THAW_SOURCE_DIR=$ROOT THAW_BIN=$BUILD/bin
    # The unit binaries whole (what ctest -R '^(engine|loader|tokenizer)$'
    # runs; works for build-gpu and the bundle alike), then the GPU cases one
    # by one (verbose: they print their errors), so a crash in one does not
    # hide the others. 77 = skipped.
    for t in engine loader tokenizer; do
        say "test_$t (all cases)"
        timeout "$(left 200)" "$BUILD/bin/test_$t" > "$OUT/test_$t.txt" 2>&1
        rc=$?; { grep -E '^(FAIL|fail |skip )' "$OUT/test_$t.txt" | tail -14; tail -1 "$OUT/test_$t.txt"; } | uniq
        echo "{\"rc\": $rc}" > "$RES/test_${t}_all.json"
        [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && fails=$((fails + 1))
    done
    for c in gpu gpu_absent; do
        say "test_loader $c"
        timeout "$(left 120)" "$BUILD/bin/test_loader" "$c" 2>&1 | tail -8
        rc=${PIPESTATUS[0]}; echo "{\"rc\": $rc}" > "$RES/test_loader_$c.json"
        # gpu: 77 = no GPU seen by the loader: a failure here; gpu_absent skips on a GPU machine
        if [ "$c" = gpu ]; then [ "$rc" -ne 0 ] && fails=$((fails + 1))
        else [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && fails=$((fails + 1)); fi
    done
    for c in backend_errors cuda cuda_batching cuda_device_weights; do
        say "test_engine $c"
        timeout "$(left 200)" "$BUILD/bin/test_engine" "$c" 2>&1 | tail -30
        rc=${PIPESTATUS[0]}; echo "{\"rc\": $rc}" > "$RES/test_engine_$c.json"
        [ "$rc" -ne 0 ] && fails=$((fails + 1))   # 77 (skip) counts as a failure on a GPU machine
    done
    summary
    say "test: $fails failing"
    [ "$fails" -eq 0 ]
    ;;

goldens)
    need_build
    need_gpu
    say "engine_goldens --device cuda (tiny fixtures; SmolLM2 needs the network)"
    THAW_BIN=$BUILD/bin THAW_SOURCE_DIR=$ROOT timeout "$(left 560)" "$PY" tests/engine/engine_goldens.py \
        --device cuda llama llama_llama3rope qwen2 mistral llama_bf16 llama_linear 2>&1 | tail -60
    rc=${PIPESTATUS[0]}
    echo "{\"rc\": $rc}" > "$RES/goldens_cuda.json"
    summary
    [ "$rc" -eq 0 ]
    ;;

bench-prep)
    need_build
    need_gpu
    mkdir -p "$WORK"
    free_gb=$(df -BG --output=avail "$WORK" | tail -1 | tr -dc 0-9)
    say "free disk ${free_gb} GB (needs ~33 GB, ~49 GB with the torch.save copy)"
    # llama3-8b: 16.1 GB for the HF folder, as much again for the checkpoint.
    if [ "$SHAPE" = llama3-8b ]; then
        need=0
        [ -f "$HF/model.safetensors" ] || need=$((need + 17))
        [ -f "$CKPT/manifest.json" ] || need=$((need + 17))
        if [ "${free_gb:-0}" -lt "$need" ]; then
            say "FAIL: ${free_gb} GB free under $WORK, $need GB needed (set GPU_WORK to a bigger disk)"
            echo "{\"rc\": 1, \"error\": \"disk: ${free_gb} GB free, $need GB needed\"}" > "$RES/make_8b.json"
            summary; exit 1
        fi
    fi
    if [ ! -f "$HF/model.safetensors" ]; then
        step make_8b "$PY" bench/py/make_llm_gpu.py --out "$HF" --shape "$SHAPE" || { summary; exit 1; }
    fi
    if [ ! -f "$CKPT/manifest.json" ]; then
        step convert_8b bash -c "'$THAW' convert '$HF' '$CKPT' --dtype keep --force --quiet && echo '{\"converted\": true}'" ||
            { summary; exit 1; }
    fi
    free_gb=$(df -BG --output=avail "$WORK" | tail -1 | tr -dc 0-9)
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
    need_gpu
    [ -f "$CKPT/manifest.json" ] || { say "FAIL: run bench-prep first"; exit 1; }
    parts=("$CKPT"/part-*.bin)
    step copy_bw "$PY" bench/py/gpu_probe.py copy
    # Raw disk read of the checkpoint file(s), O_DIRECT (fio, else dd).
    step disk_read "$PY" bench/py/gpu_probe.py disk "${parts[@]}"
    # Thaw: cold (the loader drops the files' pages itself, then O_DIRECT)
    # and warm (all pages resident: buffered reads from the page cache).
    say "$(drop_caches "${parts[@]}")"
    step thaw_load_gpu_cold "$THAW" bench load "$CKPT" --to gpu --cold --repeat 3 --json
    cat "${parts[@]}" > /dev/null
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
    need_gpu
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
        step hf_decode timeout "$(left 560)" "$PY" bench/py/peer_hf_cuda.py "$HF" decode \
            --batch 32 --tokens 128
    else
        say "skipping transformers decode ($(elapsed) s used): run 'bash bench/gpu/run.sh bench-peer'"
    fi
    summary
    ;;

bench-peer)
    # transformers decode alone, when bench-decode ran out of time for it.
    need_gpu
    [ -f "$HF/config.json" ] || { say "FAIL: run bench-prep first"; exit 1; }
    step hf_decode timeout 560 "$PY" bench/py/peer_hf_cuda.py "$HF" decode --batch 32 --tokens 128
    summary
    ;;

summary)
    summary
    cat "$OUT/summary.json"
    ;;

*)
    sed -n '2,33p' "$0"
    exit 2
    ;;
esac

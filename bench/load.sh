#!/usr/bin/env bash
# bench/load.sh - cold checkpoint load: Thaw against the device limit (fio) and
# its Python peers, interleaved, on the same weights; plus Thaw over loopback
# HTTP (nginx). Writes bench/reports/load.md (medians and ratios).
#
#   bench/load.sh [--gib X] [--reps N] [--work DIR] [--quick] [--no-prewarm] [--out FILE]
#
#   --gib X    size of the synthetic model (default 2.2)
#   --reps N   interleaved repetitions (default 5)
#   --work DIR where the model files go, in DIR/<X>gib/ (default bench/work;
#              large, never commit)
#   --quick    smoke test: 0.25 GiB, 2 repetitions, report to WORK/load-quick.md
#   --out FILE the report (default bench/reports/load.md)
#   --no-prewarm  do not touch and free memory before each run (see
#              bench/py/prewarm.py: on VMs with free page reporting the first
#              touch of freed memory is slow and random)
#
# Raw results of the last run stay in WORK/<X>gib/runs/ (JSON files per run).
#
# Every repetition runs, in turn, each after evicting its files from the page
# cache: fio (O_DIRECT, io_uring, 4 MiB blocks, depth 32) on part-0.bin;
# `thaw bench load --cold`; safetensors.numpy.load_file on the HF folder;
# torch.load of the same weights saved as a .pt; `thaw bench load --cold` of
# http://127.0.0.1:PORT/ckpt served by nginx; fio again from 4 KiB-page
# buffers (diagnostic). A few diagnostic runs follow. Before each load a
# helper touches and frees memory (bench/py/prewarm.py). It installs what it needs
# (fio, nginx-light, python3-torch, python3-venv from Debian; safetensors
# from PyPI into bench/.venv) and builds build/bin/thaw if it is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GIB=2.2
REPS=5
WORK=$ROOT/bench/work
DO_PREWARM=1
OUT=
QUICK=0
usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case $1 in
    --gib) GIB=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --quick) GIB=0.25; REPS=2; QUICK=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    --no-prewarm) DO_PREWARM=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "load.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
case $REPS in '' | *[!0-9]*) echo "load.sh: --reps must be a number" >&2; exit 2 ;; esac
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
if [ -z "$OUT" ]; then
    OUT=$ROOT/bench/reports/load.md
    [ $QUICK = 0 ] || OUT=$WORK/load-quick.md
fi
WORK=$WORK/${GIB}gib
mkdir -p "$WORK"
THAW=$ROOT/build/bin/thaw
VENV=$ROOT/bench/.venv
PY=$VENV/bin/python
log() { printf '[load.sh] %s\n' "$*" >&2; }

# ------------------------------------------------------------------ setup
apt_updated=0
apt_install() {
    if [ $apt_updated = 0 ]; then
        log "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
need_pkgs=()
command -v fio >/dev/null || need_pkgs+=(fio)
command -v nginx >/dev/null || need_pkgs+=(nginx-light)
[ -x /usr/bin/python3 ] || need_pkgs+=(python3)
[ -x /usr/bin/time ] || need_pkgs+=(time)
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
/usr/bin/python3 -c 'import torch' 2>/dev/null || need_pkgs+=(python3-torch)
[ ${#need_pkgs[@]} = 0 ] || apt_install "${need_pkgs[@]}"

if [ ! -x "$PY" ]; then
    log "creating $VENV (Debian python3 with its site packages, for torch)"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
"$PY" -c 'import numpy' 2>/dev/null || "$PY" -m pip install -q 'numpy<2'
"$PY" -c 'import safetensors.numpy' 2>/dev/null || "$PY" -m pip install -q safetensors
"$PY" -c 'import torch, numpy, safetensors.numpy' # fail loudly here, not mid-run

if [ ! -x "$THAW" ]; then
    log "building thaw"
    (cd "$ROOT" && cmake -S . -B build >/dev/null && cmake --build build -j2 >/dev/null)
fi

# ------------------------------------------------------------------ the weights
HF=$WORK/hf
PT=$WORK/model.pt
WWW=$WORK/www
CKPT=$WWW/ckpt
STAMP="gib=$GIB dtype=f16"
if [ "$(cat "$WORK/model.stamp" 2>/dev/null)" != "$STAMP" ] || [ ! -f "$PT" ]; then
    log "writing a $GIB GiB model (safetensors + .pt) under $WORK"
    rm -rf "$HF" "$PT" "$WWW" "$WORK/model.stamp" "$WORK/ckpt.stamp"
    "$PY" "$ROOT/bench/py/make_model.py" --out "$HF" --pt "$PT" --gib "$GIB" --dtype f16 \
        >"$WORK/model.json"
    echo "$STAMP" >"$WORK/model.stamp"
fi
if [ "$(cat "$WORK/ckpt.stamp" 2>/dev/null)" != "$STAMP" ] || [ ! -f "$CKPT/manifest.json" ]; then
    log "converting to a Thaw checkpoint"
    mkdir -p "$WWW"
    "$THAW" convert "$HF" "$CKPT" --dtype keep --force --quiet
    echo "$STAMP" >"$WORK/ckpt.stamp"
fi
PARTS=("$CKPT"/part-*.bin)
sync

# ------------------------------------------------------------------ nginx
NGX=$(mktemp -d "${TMPDIR:-/tmp}/thaw-nginx.XXXXXX")
NGX_PID=
cleanup() {
    if [ -n "$NGX_PID" ]; then
        kill "$NGX_PID" 2>/dev/null || true
        wait "$NGX_PID" 2>/dev/null || true
    fi
    rm -rf "$NGX"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
USER_LINE=
[ "$(id -u)" = 0 ] && USER_LINE="user $(id -un) $(id -gn);"
mkdir -p "$NGX/tmp"
cat >"$NGX/nginx.conf" <<EOF
# generated by bench/load.sh
$USER_LINE
worker_processes auto;
daemon off;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    aio threads;
    keepalive_requests 100000;
    client_body_temp_path $NGX/tmp/body;
    proxy_temp_path $NGX/tmp/proxy;
    fastcgi_temp_path $NGX/tmp/fastcgi;
    uwsgi_temp_path $NGX/tmp/uwsgi;
    scgi_temp_path $NGX/tmp/scgi;
    types { application/json json; }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$PORT;
        root $WWW;
    }
}
EOF
nginx -e "$NGX/error.log" -p "$NGX" -c "$NGX/nginx.conf" &
NGX_PID=$!
URL=http://127.0.0.1:$PORT/ckpt
for _ in $(seq 50); do
    "$PY" -c "import urllib.request as u; u.urlopen('$URL/manifest.json', timeout=1)" 2>/dev/null && break
    kill -0 "$NGX_PID" 2>/dev/null || { cat "$NGX/error.log" >&2; exit 1; }
    sleep 0.1
done
log "nginx $(nginx -v 2>&1 | sed 's/.*\///') serving $URL (pid $NGX_PID)"

# ------------------------------------------------------------------ runs
RUNS=$WORK/runs
rm -rf "$RUNS"
mkdir -p "$RUNS"
CKPT_BYTES=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes"])' "$WORK/model.json")
PREWARM=0
if [ $DO_PREWARM = 1 ]; then
    # Enough for a load's destination plus a buffered reader's page cache,
    # at most half of the memory available now.
    PREWARM=$(awk -v b="$CKPT_BYTES" '/MemAvailable/ { m = $2 * 1024 / 2; w = 2.2 * b;
        printf "%.0f", (w < m ? w : m) }' /proc/meminfo)
fi
evict() { "$PY" "$ROOT/bench/py/evict.py" --check "$@"; }
prewarm() { # tag
    if [ "$PREWARM" -gt 0 ]; then
        "$PY" "$ROOT/bench/py/prewarm.py" "$PREWARM" >"$RUNS/$1.prewarm.json"
    fi
}
show() { "$PY" "$ROOT/bench/py/report.py" show "$@"; }

# fio's own I/O buffer is malloc'ed; glibc.malloc.hugetlb=1 makes it
# transparent-huge-page backed like Thaw's destination, so fio's 4 MiB reads
# reach the device whole: from 4 KiB pages a 4 MiB O_DIRECT read needs 1024
# segments and the block layer splits it (max_segments, 254 on virtio-blk).
# fio-4k is the same job from ordinary pages (a diagnostic).
run_fio() { # rep name direct(0|1) [env...]
    local rep=$1 name=$2 direct=$3
    shift 3
    # O_DIRECT fio reuses one 128 MiB buffer: nothing to prewarm.
    [ "$direct" = 1 ] || prewarm "$rep-$name"
    evict "${PARTS[@]}" >"$RUNS/$rep-$name.evict.json"
    env "$@" fio --name=seqread --filename="${PARTS[0]}" --readonly --rw=read --bs=4M \
        --iodepth=32 --ioengine=io_uring --direct="$direct" --numjobs=1 \
        --output-format=json >"$RUNS/$rep-$name.json"
    show "$name" "$RUNS/$rep-$name.json"
}
run_thaw() { # rep name uri evict(0|1) [thaw options]
    local rep=$1 name=$2 uri=$3 ev=$4
    shift 4
    prewarm "$rep-$name"
    if [ "$ev" = 1 ]; then
        evict "${PARTS[@]}" >"$RUNS/$rep-$name.evict.json"
        set -- --cold "$@"
    fi
    /usr/bin/time -o "$RUNS/$rep-$name.time.json" -f '{"wall": %e, "user": %U, "sys": %S}' \
        env -u THAW_CACHE_DIR "$THAW" bench load "$uri" --json "$@" >"$RUNS/$rep-$name.json"
    show "$name" "$RUNS/$rep-$name.json"
}
run_peer() { # rep kind path
    "$PY" "$ROOT/bench/py/peer.py" --prewarm "$PREWARM" "$2" "$3" >"$RUNS/$1-$2.json"
    show "$2" "$RUNS/$1-$2.json"
}
HP=GLIBC_TUNABLES=glibc.malloc.hugetlb=1

log "model: $(cat "$WORK/model.json")"
log "prewarm before every run: $PREWARM bytes (0: off)"
log "$REPS repetitions of: fio, thaw, safetensors, torch, remote, fio-4k (all cold)"
for r in $(seq 1 "$REPS"); do
    run_fio "$r" fio 1 "$HP"
    run_thaw "$r" thaw "$CKPT" 1
    run_peer "$r" safetensors "$HF"
    run_peer "$r" torch "$PT"
    run_thaw "$r" remote "$URL" 1
    run_fio "$r" fio-4k 1
done

# Diagnostics (not in the ratios), interleaved too: Thaw's pread pool and
# buffered reads instead of io_uring + O_DIRECT, fio buffered, and the remote
# load with the served file already in nginx's page cache.
DREPS=$((REPS < 3 ? REPS : 3))
log "diagnostics x$DREPS: thaw --force-pread, thaw --force-buffered, fio buffered, remote warm"
for r in $(seq 1 "$DREPS"); do
    run_thaw "d$r" thaw-pread "$CKPT" 1 --force-pread
    run_thaw "d$r" thaw-buffered "$CKPT" 1 --force-buffered
    run_fio "d$r" fio-buffered 0 "$HP"
    cat "${PARTS[@]}" >/dev/null
    run_thaw "d$r" remote-warm "$URL" 0
done

kill "$NGX_PID" 2>/dev/null || true
wait "$NGX_PID" 2>/dev/null || true
NGX_PID=

# ------------------------------------------------------------------ report
"$PY" "$ROOT/bench/py/report.py" write --runs "$RUNS" --work "$WORK" --root "$ROOT" \
    --thaw "$THAW" --gib "$GIB" --reps "$REPS" --prewarm "$PREWARM" --out "$OUT"

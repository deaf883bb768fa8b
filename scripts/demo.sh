#!/usr/bin/env bash
# The main job, on embedded defaults: build Thaw, make a model (a llama-shaped
# Hugging Face folder written by the real safetensors library), convert it to a
# Thaw checkpoint, and load it through every tier, printing the breakdown:
#   remote (nginx on loopback) -> SSD cache -> memory, then SSD cold (O_DIRECT),
#   the page cache, and the DRAM tier (tmpfs, zero copy).
# Knobs: DEMO_LAYERS (default 12), DEMO_HIDDEN (default 1024), DEMO_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"

bash scripts/deps.sh
python=$(bash scripts/pyenv.sh)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTHAW_PYTHON="$python" >/dev/null
cmake --build build -j"$(nproc)" --target thaw >/dev/null
thaw=$PWD/build/bin/thaw

work=${DEMO_DIR:-$PWD/build/demo}
rm -rf "$work"
mkdir -p "$work/www"
chmod 755 "$work" "$work/www"
step() { printf '\n== %s\n' "$*"; }

step "1. A Hugging Face model folder (safetensors, 2 shards)"
"$python" tests/integration/make_hf.py "$work/hf" --layers "${DEMO_LAYERS:-12}" \
  --hidden "${DEMO_HIDDEN:-1024}" --shards 2 --dtype f16
du -sh "$work/hf"

step "2. thaw convert -> Thaw checkpoint (bf16, 2 partitions, 4 KiB-aligned, xxh3 per chunk)"
"$thaw" convert "$work/hf" "$work/www/model" --dtype bf16 --partitions 2
"$thaw" inspect "$work/www/model" | "$python" -c '
import json, sys
d = json.load(sys.stdin)
print("id", d["id"], "|", d["model"]["architecture"], d["model"]["dtype"], "|", d["tensors"], "tensors")
for p in d["partitions"]:
    print("  %-11s layers %2d-%-2d %8.1f MiB  %d chunks" % (p["file"], p["layers"][0], p["layers"][1], p["bytes"] / 2**20, p["chunks"]))'
"$thaw" verify "$work/www/model"

step "3. Serve it as the remote object store (nginx on loopback)"
port=$(( 20000 + RANDOM % 20000 ))
cat > "$work/nginx.conf" <<CONF
daemon off;
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $work/t1; proxy_temp_path $work/t2; fastcgi_temp_path $work/t3;
  uwsgi_temp_path $work/t4; scgi_temp_path $work/t5;
  sendfile on;
  server { listen 127.0.0.1:$port; root $work/www; }
}
CONF
chmod -R a+rX "$work/www"
nginx -c "$work/nginx.conf" -p "$work" -e "$work/nginx-error.log" &
ngx=$!
trap 'kill $ngx 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/model/manifest.json" >/dev/null && break; sleep 0.1; done
echo "serving http://127.0.0.1:$port/model"

step "4. Cold start from remote: HTTP range requests -> SSD cache (write-through) -> memory"
"$thaw" bench load "http://127.0.0.1:$port/model" --cache "$work/cache"

step "5. Second start: from the SSD cache, O_DIRECT + io_uring, cold"
"$thaw" bench load "http://127.0.0.1:$port/model" --cache "$work/cache" --cold

step "6. Local checkpoint, page cache warm (residency detected -> buffered parallel reads)"
"$thaw" bench load "$work/www/model"

if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  step "7. DRAM tier: checkpoint on tmpfs, mapped in place (zero copy)"
  shm=$(mktemp -d /dev/shm/thaw-demo-XXXXXX)
  trap 'kill $ngx 2>/dev/null || true; rm -rf "$shm"' EXIT
  cp -r "$work/www/model" "$shm/"
  "$thaw" bench load "$shm/model"
fi
printf '\nDemo done. Benchmarks against fio, safetensors and torch.load: bench/load.sh\n'

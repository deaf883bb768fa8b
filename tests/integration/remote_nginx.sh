#!/usr/bin/env bash
# Remote loading through a real HTTP server: Debian's nginx on loopback,
# started by this test in a temp dir. Loads over HTTP with the SSD cache,
# checks the cache entry is byte-identical to the served checkpoint, that a
# second load is served from the cache, and that a 404 is a clear error.
set -uo pipefail
thaw="${THAW_BIN:-build/bin}/thaw"
src="${THAW_SOURCE_DIR:-.}"
py="${THAW_PYTHON:-python3}"
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx" ] || { echo "SKIP: nginx not installed (scripts/deps.sh installs nginx-light)"; exit 77; }
"$py" -c "import safetensors, numpy" 2>/dev/null || { echo "SKIP: needs safetensors"; exit 77; }
tmp=$(mktemp -d)
chmod 755 "$tmp"
fail() { echo "FAIL: $*" >&2; [ -f "$tmp/error.log" ] && tail -5 "$tmp/error.log" >&2; exit 1; }

"$py" "$src/tests/integration/make_hf.py" "$tmp/hf" --layers 4 --hidden 128 || fail make_hf
mkdir -p "$tmp/www"
"$thaw" convert "$tmp/hf" "$tmp/www/model" --partitions 2 --chunk 256KiB --quiet || fail convert
chmod -R a+rX "$tmp/www"

port=$(( 20000 + RANDOM % 20000 ))
cat > "$tmp/nginx.conf" <<CONF
daemon off;
worker_processes 2;
pid $tmp/nginx.pid;
error_log $tmp/error.log;
events { worker_connections 256; }
http {
  access_log $tmp/access.log;
  client_body_temp_path $tmp/body;
  proxy_temp_path $tmp/proxy;
  fastcgi_temp_path $tmp/fastcgi;
  uwsgi_temp_path $tmp/uwsgi;
  scgi_temp_path $tmp/scgi;
  sendfile on;
  keepalive_requests 10000;
  server { listen 127.0.0.1:$port; root $tmp/www; }
}
CONF
"$nginx" -c "$tmp/nginx.conf" -p "$tmp" -e "$tmp/error.log" &
ngx=$!
trap 'kill $ngx 2>/dev/null; wait $ngx 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/model/manifest.json" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/model/manifest.json" >/dev/null || fail "nginx did not start"

url="http://127.0.0.1:$port/model"
"$thaw" bench load "$url" --json --cache "$tmp/cache" > "$tmp/r1.json" || fail "remote load"
"$py" - "$tmp/r1.json" <<'PY' || fail "remote stats"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["method"] == "http" and d["tier"] == "remote", d
assert d["cache_bytes"] == d["bytes"] and d["cache_error"] == 0, d
assert d["stages"]["verify_s"] > 0
PY
entry=$(ls -d "$tmp"/cache/model-*[0-9a-f]) || fail "no cache entry"
for f in manifest.json part-0.bin part-1.bin config.json tokenizer.json; do
  cmp -s "$entry/$f" "$tmp/www/model/$f" || fail "cache copy of $f differs"
done
"$thaw" verify "$entry" >/dev/null || fail "cache entry does not verify"
n=$(grep -c "part-" "$tmp/access.log")
"$thaw" bench load "$url" --json --cache "$tmp/cache" > "$tmp/r2.json" || fail "cached load"
grep -q '"method":"cache"' "$tmp/r2.json" || fail "second load not from cache: $(cat "$tmp/r2.json")"
[ "$(grep -c "part-" "$tmp/access.log")" = "$n" ] || fail "cached load fetched again"

out=$("$thaw" bench load "http://127.0.0.1:$port/nothing" 2>&1) && fail "404 load succeeded"
echo "$out" | grep -q "nothing/manifest.json: HTTP 404" || fail "404 message: $out"
echo "remote_nginx: all ok ($(grep -c ' 206 ' "$tmp/access.log") range requests)"

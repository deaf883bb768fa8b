#!/usr/bin/env bash
# The thaw CLI end to end: convert, inspect, verify, bench load (host, each
# forced path, JSON), and its errors (usage, bad input): exit codes and
# messages that name what was wrong.
set -uo pipefail
thaw="${THAW_BIN:-build/bin}/thaw"
src="${THAW_SOURCE_DIR:-.}"
py="${THAW_PYTHON:-python3}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_fail() { # expect_fail CODE PATTERN cmd...
  local code=$1 pat=$2; shift 2
  local out; out=$("$@" 2>&1); local rc=$?
  [ "$rc" = "$code" ] || fail "$* exited $rc, want $code: $out"
  echo "$out" | grep -q -- "$pat" || fail "$*: output lacks '$pat': $out"
}

"$py" -c "import safetensors, numpy" 2>/dev/null || { echo "SKIP: needs safetensors (scripts/pyenv.sh)"; exit 77; }
"$py" "$src/tests/integration/make_hf.py" "$tmp/hf" --layers 3 --shards 2 || fail make_hf

"$thaw" convert "$tmp/hf" "$tmp/ck" --partitions 2 2>"$tmp/conv.err" || fail "convert: $(cat "$tmp/conv.err")"
grep -q "convert: 100%" "$tmp/conv.err" || fail "no progress shown"
"$thaw" inspect "$tmp/ck" > "$tmp/inspect.json" || fail inspect
"$py" - "$tmp/inspect.json" <<'PY' || fail "inspect output"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["model"]["architecture"] == "LlamaForCausalLM" and len(d["partitions"]) == 2
assert d["bytes"] % 4096 == 0 and d["files"] == ["config.json", "tokenizer.json"]
PY
"$thaw" verify "$tmp/ck" | grep -q "^ok:" || fail verify

for mode in "" --force-pread --force-buffered --force-direct; do
  "$thaw" bench load "$tmp/ck" --json $mode --repeat 3 --cold > "$tmp/b.json" || fail "bench $mode"
  "$py" - "$tmp/b.json" "$mode" <<'PY' || fail "bench json $mode"
import json, sys
d = json.loads(open(sys.argv[1]).read())
for k in ("bytes", "seconds", "gbps", "tier", "method", "by_tier", "stages", "runs_s"):
    assert k in d, k
assert d["bytes"] > 0 and d["seconds"] > 0 and len(d["runs_s"]) == 3
want = {"--force-pread": "pread", "--force-buffered": "buffered"}.get(sys.argv[2])
assert want is None or d["method"] in (want, "mmap"), d["method"]
PY
done
"$thaw" bench load "$tmp/ck" | grep -q "GB/s" || fail "bench text output"

# errors: usage 2, failures 1, each message naming the problem
expect_fail 2 "usage" "$thaw"
expect_fail 2 "unknown verb" "$thaw" frobnicate
expect_fail 2 "usage: thaw convert" "$thaw" convert "$tmp/hf"
expect_fail 2 "dtype must be" "$thaw" convert "$tmp/hf" "$tmp/x" --dtype int4
expect_fail 2 "partitions must be" "$thaw" convert "$tmp/hf" "$tmp/x" --partitions 0
expect_fail 1 "exceeds the 3 layers" "$thaw" convert "$tmp/hf" "$tmp/x" --partitions 4
expect_fail 1 "already exists" "$thaw" convert "$tmp/hf" "$tmp/ck"
expect_fail 1 "no model.safetensors" "$thaw" convert "$tmp" "$tmp/x"
expect_fail 1 "manifest.json" "$thaw" inspect "$tmp/nope"
expect_fail 2 "must be host or gpu" "$thaw" bench load "$tmp/ck" --to tpu
[ -e "$tmp/x" ] && fail "a failed convert left $tmp/x"
ls "$tmp" | grep -q tmp && fail "a failed convert left a temp dir: $(ls "$tmp")"

# corruption is found and named
printf '\xff' | dd of="$tmp/ck/part-1.bin" bs=1 seek=5000 conv=notrunc 2>/dev/null
expect_fail 1 "part-1.bin chunk 0" "$thaw" verify "$tmp/ck"
expect_fail 1 "checksum" "$thaw" bench load "$tmp/ck" --verify
truncate -s 4096 "$tmp/ck/part-1.bin"
expect_fail 1 "truncated" "$thaw" bench load "$tmp/ck"
echo '{"format":"thaw","version":7}' > "$tmp/ck/manifest.json"
expect_fail 1 "version 7" "$thaw" bench load "$tmp/ck"
echo "cli: all ok"

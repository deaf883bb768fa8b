#!/usr/bin/env bash
# Create .venv with the Python packages the tests use as independent
# references (the real safetensors library, numpy). Prints the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
want="safetensors numpy"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c "import safetensors, numpy" 2>/dev/null; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check $want >&2
fi
echo "$PWD/$venv/bin/python"

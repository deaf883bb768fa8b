#!/usr/bin/env bash
# Create .venv with the Python packages the tests use as independent
# references and real clients (the safetensors library, numpy, the official
# OpenAI SDK, PyYAML). Prints the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
want="safetensors numpy openai pyyaml"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c "import safetensors, numpy, openai, yaml" 2>/dev/null; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check $want >&2
fi
echo "$PWD/$venv/bin/python"

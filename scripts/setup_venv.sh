#!/usr/bin/env bash
# Create .venv with a Python 3.10 found by find_python310.sh and install snntc with its pinned stack.
# Uses uv when it can (about 4x faster), plain pip otherwise. Idempotent: a finished install is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
stamp="$VENV/.snntc-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && "$VENV/bin/python" -c 'import toolchain, lava.lib.dl.netx' 2>/dev/null; then
  exit 0
fi
py=$(scripts/find_python310.sh)
echo "setting up $VENV with $py ($("$py" --version 2>&1))"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))'; then
  rm -rf "$VENV"
  "$py" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if "$VENV/bin/python" -m pip install -q uv >/dev/null 2>&1; then
  "$VENV/bin/python" -m uv pip install --python "$VENV/bin/python" -q -e ".[test]"
else
  "$VENV/bin/python" -m pip install -q -e ".[test]"
fi
"$VENV/bin/python" -c 'import toolchain, lava.lib.dl.netx' 
touch "$stamp"
echo "ready: $VENV/bin/snntc"

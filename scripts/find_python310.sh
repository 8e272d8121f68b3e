#!/usr/bin/env bash
# Print the path of a Python 3.10 interpreter (Lava supports only 3.10), or say in one line what to install.
# Looks at $PYTHON, then python3.10 / python3 / python on PATH, then pyenv's versions, then common prefixes.
is310() { [ -x "$1" ] || command -v "$1" >/dev/null 2>&1 || return 1
          "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' >/dev/null 2>&1; }
if [ -n "${PYTHON:-}" ]; then
  if is310 "$PYTHON"; then command -v "$PYTHON"; exit 0; fi
  echo "PYTHON=$PYTHON is not a Python 3.10 interpreter (Lava needs exactly 3.10)" >&2; exit 1
fi
for c in python3.10 python3 python; do
  if is310 "$c"; then command -v "$c"; exit 0; fi
done
roots=()
command -v pyenv >/dev/null 2>&1 && roots+=("$(pyenv root 2>/dev/null)")
roots+=("${PYENV_ROOT:-$HOME/.pyenv}")
for r in "${roots[@]}"; do
  for c in "$r"/versions/3.10*/bin/python3; do
    if is310 "$c"; then echo "$c"; exit 0; fi
  done
done
for c in /usr/bin/python3.10 /usr/local/bin/python3.10 /opt/homebrew/bin/python3.10 /opt/python/3.10*/bin/python3; do
  if is310 "$c"; then echo "$c"; exit 0; fi
done
echo "snntc needs Python 3.10 (lava-nc 0.10 runs on 3.10 only) and none was found: install it (e.g. 'pyenv install 3.10.13' or your OS's python3.10 package) or set PYTHON=/path/to/python3.10" >&2
exit 1

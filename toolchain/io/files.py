"""Writing files atomically: a failure leaves no file behind and an existing one untouched."""
from __future__ import annotations

import os
import tempfile


def atomic_write(path, write_fn) -> None:
    """Call write_fn(tmp_path) on a temporary file beside `path`, then move it over `path`.
    On any failure the temporary file is removed and `path` is left as it was."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise

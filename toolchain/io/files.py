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
    os.chmod(tmp, 0o666 & ~current_umask())      # mkstemp makes it 0600; a file the user writes follows the umask
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def refuse_overwrite(path, overwrite: bool = False) -> None:
    """OutputExistsError if `path` exists and `overwrite` is not set: no stage replaces a file silently."""
    if path is not None and not overwrite and os.path.exists(os.fspath(path)):
        from ..errors import OutputExistsError
        raise OutputExistsError(f"{os.fspath(path)} exists; pass overwrite=True (--force) to replace it")

"""Writing files atomically: a failure leaves no file behind and an existing one untouched.

The temporary file lies beside the target as `.NAME.snntc-PID-RANDOM.tmp`; a process killed while writing leaves
it behind, and the next write of the same target removes every such file whose process is gone. A write that fails
for want of space (a full disk, a quota, a file-size limit) raises OutputError in one line, the old file intact.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import resource
import tempfile
import time
from typing import Optional

from ..errors import OutputError, ToolchainError

_TEMP_TAG = ".snntc-"
_DISK_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                errno.EFBIG: "the file-size limit is reached"}
_DISK_TEXTS = {"No space left on device": errno.ENOSPC, "errno = 28": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
               "File too large": errno.EFBIG, "errno = 27": errno.EFBIG}
LEGACY_TEMP_AGE_S = 600         # temporary files of older versions (no pid in the name) older than this are stale
LOW_SPACE_BYTES = 1 << 20


def temp_prefix(path: str) -> str:
    return f".{os.path.basename(path)}{_TEMP_TAG}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temps(path: str) -> list:
    """Temporary files left beside `path` by writers that are gone (killed while writing)."""
    directory = os.path.dirname(os.path.abspath(path))
    base = glob.escape(os.path.basename(path))
    stale = []
    for tmp in glob.glob(os.path.join(glob.escape(directory), f".{base}.*.tmp")):
        match = re.fullmatch(re.escape(temp_prefix(path)) + r"(\d+)-\w+\.tmp", os.path.basename(tmp))
        if match:
            if not _pid_alive(int(match.group(1))):
                stale.append(tmp)
        elif re.fullmatch(re.escape(f".{os.path.basename(path)}.") + r"\w{8}\.tmp", os.path.basename(tmp)):
            with contextlib.suppress(FileNotFoundError):
                if time.time() - os.path.getmtime(tmp) > LEGACY_TEMP_AGE_S:
                    stale.append(tmp)
    return stale


def remove_stale_temps(path: str) -> int:
    """Remove what `stale_temps` finds; returns how many."""
    removed = 0
    for tmp in stale_temps(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
            removed += 1
    return removed


def _disk_errno(exc: BaseException) -> Optional[int]:
    """The errno of a write that failed for want of space, from the exception or its chain (torch and HDF5 report
    it in their messages, or not at all)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _DISK_ERRNOS:
            return seen.errno
        for text, code in _DISK_TEXTS.items():
            if text in str(seen):
                return code
        seen = seen.__cause__ or seen.__context__
    return None


def _space_errno(directory: str, tmp: str) -> Optional[int]:
    """ENOSPC or EFBIG when the disk is (nearly) full or the temporary file reached the file-size limit."""
    try:
        st = os.statvfs(directory)
        if st.f_bavail * st.f_frsize < LOW_SPACE_BYTES:
            return errno.ENOSPC
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and os.path.exists(tmp) and os.path.getsize(tmp) >= limit - LOW_SPACE_BYTES:
            return errno.EFBIG
    except OSError:
        return None
    return None


def write_failure(path: str, exc: BaseException, directory: str, tmp: str, existed: bool) -> Optional[OutputError]:
    """The one-line OutputError for a write that failed on the file system (space, permissions, I/O), or None for
    an error of the writer itself."""
    code = _disk_errno(exc) or _space_errno(directory, tmp)
    kept = "the existing file is unchanged" if existed else "nothing was written"
    if code is not None:
        return OutputError(f"cannot write {path}: {_DISK_ERRNOS[code]} ({kept}); free space or write elsewhere")
    if isinstance(exc, OSError):
        reason = exc.strerror or (str(exc).splitlines() or [type(exc).__name__])[0]
        return OutputError(f"cannot write {path}: {reason} ({kept})")
    return None


def _mode_for(path: str) -> int:
    """An existing file's permissions, or what the umask gives a new file (mkstemp would give 0600)."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def make_dirs(directory: str) -> Optional[str]:
    """Create `directory` and its missing parents; returns the topmost one created (None if it existed)."""
    top, d = None, directory
    while not os.path.exists(d):
        top, d = d, os.path.dirname(d)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create directory {directory}: {exc.strerror or exc}") from None
    return top


def remove_made_dirs(top: Optional[str], directory: str) -> None:
    """Remove the directories `make_dirs` created, if they are still empty."""
    if top is None:
        return
    d = directory
    while True:
        try:
            os.rmdir(d)
        except OSError:
            return
        if d == top:
            return
        d = os.path.dirname(d)


def atomic_write(path, write_fn) -> None:
    """Call write_fn(tmp_path) on a temporary file beside `path`, then move it over `path`.
    On any failure the temporary file (and any directory made for it) is removed and `path` is left as it was; a
    failure of the file system (a full disk, a file-size limit, no permission) raises OutputError."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    created = make_dirs(directory)
    remove_stale_temps(path)
    existed = os.path.exists(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{temp_prefix(path)}{os.getpid()}-", suffix=".tmp", dir=directory)
    except OSError as exc:
        remove_made_dirs(created, directory)
        raise write_failure(path, exc, directory, "", existed) from None
    try:
        os.fchmod(fd, _mode_for(path))
        os.close(fd)
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        failure = None if isinstance(exc, ToolchainError) or not isinstance(exc, Exception) else \
            write_failure(path, exc, directory, tmp, existed)
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        remove_made_dirs(created, directory)
        if failure is not None:
            raise failure from None
        raise


def refuse_overwrite(path, overwrite: bool = False) -> None:
    """OutputExistsError if `path` exists and `overwrite` is not set: no stage replaces a file silently."""
    if path is not None and not overwrite and os.path.exists(os.fspath(path)):
        from ..errors import OutputExistsError
        raise OutputExistsError(f"{os.fspath(path)} exists; pass overwrite=True (--force) to replace it")
def atomic_write_bytes(path, data: bytes) -> None:
    """`atomic_write` of bytes built in memory (an HDF5 file made in a BytesIO: its write is then one plain write)."""
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
    atomic_write(path, write)

"""Output safety: every path a run will write is checked before the run does any work, and a training's output is
locked while it runs.

`check_outputs` refuses, in one OutputError line naming the path: a path that is a directory (or a directory output
that is a file), a path whose directory cannot be written, a path equal to one of the run's inputs or to another of
its outputs, and an existing file unless `force` (or `resume`, for the one output a training continues). Temporary
files left beside an output by a killed writer are removed (toolchain.io.files).

`OutputLock` holds an exclusive lock (flock) on `.NAME.snntc.lock` beside an output for as long as a run writes it:
a second run to the same output fails at once, naming the first one's pid. The lock file is removed on release;
one left by a killed run holds no lock and is reused.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from typing import Iterable, Optional, Tuple

from ..errors import OutputError
from .files import make_dirs, remove_made_dirs, remove_stale_temps


def _existing_ancestor(path: str) -> str:
    d = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(d):
        d = os.path.dirname(d)
    return d


def check_writable_dir(path: str, label: str, directory: bool = False) -> None:
    """The directory `path` would be written into (`path` itself where it is a `directory` output), or its nearest
    existing ancestor where the write would create the rest, is a directory this process can create files in
    (probed: permissions, a read-only mount)."""
    d = _existing_ancestor(os.path.join(path, "x") if directory else path)
    if not os.path.isdir(d):
        raise OutputError(f"{label} {path}: {d} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".snntc-probe-", dir=d)
    except OSError as exc:
        raise OutputError(f"{label} {path}: cannot write in {d} ({exc.strerror or exc})") from None
    os.close(fd)
    os.remove(probe)


def same_file(a: str, b: str) -> bool:
    """Whether two paths name the same file (links and relative paths resolved; for files that do not exist yet,
    the same resolved path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_outputs(outputs: Iterable[Tuple[str, str]], inputs: Iterable[str] = (), force: bool = False,
                  resumable: Optional[str] = None, resume: bool = False, directories: Iterable[str] = ()) -> None:
    """Check every output before any work. `outputs`: (label, path) pairs, the label being what the message calls
    the path (the option, e.g. "--json"); `resumable` is the label of the output a training continues with
    `resume`; `directories` the labels of outputs that are directories (files are written into them)."""
    outputs = [(label, os.fspath(p)) for label, p in outputs if p]
    directories = set(directories)
    inputs = [os.fspath(p) for p in inputs if p]
    for label, path in outputs:
        _check_kind(label, path, label in directories)
        check_writable_dir(path, label, label in directories)
        for src in inputs:
            if os.path.exists(src) and same_file(path, src):
                raise OutputError(f"{label} {path} is the input {src}; writing it would destroy the input: give "
                                  f"another file name")
    for i, (a, path_a) in enumerate(outputs):
        for b, path_b in outputs[i + 1:]:
            if same_file(path_a, path_b):
                raise OutputError(f"{a} and {b} are the same file ({path_b}); give each output its own name")
    for label, path in outputs:
        if label in directories:
            continue
        if os.path.exists(path) and not force and not (resume and label == resumable):
            hint = " (or --resume to continue the training)" if label == resumable else ""
            raise OutputError(f"{label} {path} exists; pass --force to overwrite it{hint}")
        remove_stale_temps(path)


def _check_kind(label: str, path: str, directory: bool) -> None:
    if directory:
        if os.path.exists(path) and not os.path.isdir(path):
            raise OutputError(f"{label} {path} is a file, not a directory: give a directory for the artifacts")
    elif os.path.isdir(path):
        raise OutputError(f"{label} {path} is a directory: give a file name")


class OutputLock:
    """An exclusive, non-blocking lock on an output for the lifetime of a run (a context manager)."""

    def __init__(self, path: str, label: str = "-o"):
        path = os.path.abspath(os.fspath(path))
        self.path, self.label = path, label
        self.lock_path = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.snntc.lock")
        self._fd: Optional[int] = None
        self._made_dir: Optional[str] = None

    def __enter__(self) -> "OutputLock":
        self._made_dir = make_dirs(os.path.dirname(self.lock_path))
        while self._fd is None:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                owner = _read_pid(fd)
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise OutputError(f"{self.label} {self.path}: cannot lock it ({exc.strerror})") from None
                self._undo_dir()
                raise OutputError(f"{self.label} {self.path} is being written by another snntc run"
                                  f"{f' (pid {owner})' if owner else ''}: wait for it to finish, or choose another "
                                  f"{self.label}") from None
            if _same_inode(fd, self.lock_path):        # not unlinked by a run that released it meanwhile
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self._fd = fd
            else:
                os.close(fd)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.lock_path)
            os.close(self._fd)
            self._fd = None
        self._undo_dir()

    def _undo_dir(self) -> None:
        remove_made_dirs(self._made_dir, os.path.dirname(self.lock_path))
        self._made_dir = None


def _same_inode(fd: int, path: str) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""

"""The compiled neuron kernels (neuron_kernels.c), built with the machine's C compiler on first use.

`library()` returns the loaded library, or None where it cannot be had: no C compiler, a failed build, a
platform without `fork`-safe pthreads, or SNNTC_NATIVE=0 in the environment. Callers then run the torch-op
implementation, which gives the same results (tests compare the two); only the speed differs.

The shared object is cached in $SNNTC_CACHE (default ~/.cache/snntc) under a key made of the source, the
compiler, its flags and the CPU, so a changed kernel or machine gets its own build (about 1 s with gcc).
Nothing is installed system-wide and no Python headers are needed: the kernels are plain C called with ctypes.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional

SOURCE = Path(__file__).with_name("neuron_kernels.c")
FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC", "-pthread"]
TUNE = ["-march=native"]             # dropped if the compiler refuses it

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_tried = False


class NativeBuildError(RuntimeError):
    """The C compiler failed on neuron_kernels.c (the message has its output)."""


def enabled() -> bool:
    return os.environ.get("SNNTC_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def library() -> Optional[ctypes.CDLL]:
    """The kernels, built and loaded once per process; None if unavailable (see the module's text)."""
    global _lib, _tried
    if not enabled():
        return None
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            try:
                _lib = _declare(ctypes.CDLL(str(build())))
            except (NativeBuildError, OSError) as e:
                warnings.warn(f"snntc: compiled neuron kernels unavailable, using torch ops (slower): {e}",
                              RuntimeWarning, stacklevel=2)
                _lib = None
            _tried = True
    return _lib


def compiler() -> Optional[str]:
    cc = os.environ.get("CC")
    return cc if cc else (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"))


def cache_dir() -> Path:
    return Path(os.environ.get("SNNTC_CACHE") or Path.home() / ".cache" / "snntc") / "native"


def build() -> Path:
    """Compile (or find in the cache) the shared object; returns its path."""
    cc = compiler()
    if cc is None:
        raise NativeBuildError("no C compiler found (set CC)")
    src = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([src, cc.encode(), " ".join(FLAGS + TUNE).encode(), _cpu_id().encode()]))
    target = cache_dir() / f"neuron_kernels-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags in (FLAGS + TUNE, FLAGS):
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        proc = subprocess.run([cc, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True)
        if proc.returncode == 0:
            os.replace(tmp, target)                 # atomic: concurrent builders each write their own file
            return target
        os.unlink(tmp)
        errors.append(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
    raise NativeBuildError(f"{cc} failed: {errors[-1]}")


def _cpu_id() -> str:
    ident = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags")):
                    ident.append(line.strip())
                if len(ident) >= 4:
                    break
    except OSError:
        ident.append(platform.processor())
    return "|".join(ident)


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    i64, i32, dbl, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_double, ctypes.c_void_p
    lib.snn_subtractive_forward.argtypes = [i32, i64, i64, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr,
                                            dbl, dbl, i32, dbl, i32]
    lib.snn_subtractive_forward.restype = i32
    lib.snn_subtractive_backward.argtypes = [i32, i64, i64, i64, i64, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr,
                                             ptr, dbl, dbl, i32]
    lib.snn_subtractive_backward.restype = i32
    return lib

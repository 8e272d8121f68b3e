"""The compiled neuron kernels (neuron_kernels.c), built with the machine's C compiler on first use.

`library()` returns the loaded library, or None where it cannot be had: no C compiler, a failed build, a
platform without `fork`-safe pthreads, or SNNTC_NATIVE=0 in the environment. Callers then run the torch-op
implementation, which gives the same results (tests compare the two); only the speed differs.

The shared object is cached in $SNNTC_CACHE (default ~/.cache/snntc) under a key made of the source, the
compiler, its flags and the CPU, so a changed kernel or machine gets its own build (about 1 s with gcc).
Where torch ships its own OpenMP runtime (libgomp in torch/lib, as the pip wheels do), the kernels are built
with OpenMP and linked to that very library, so they run on torch's worker threads: with threads of their own,
torch's threads, spinning after each torch op, took the cores from them (a neuron kernel right after a
convolution ran 1.8x slower). Otherwise they use pthreads.
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
FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC", "-pthread"]
TUNE = ["-march=native"]             # dropped if the compiler refuses it

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_tried = False


class NativeBuildError(RuntimeError):
    """The C compiler failed on neuron_kernels.c (the message has its output)."""


class KernelError(RuntimeError):
    """A compiled kernel refused its arguments or ran out of memory (the message names the layer)."""


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
    omp = torch_openmp()
    key = hashlib.sha256(b"\0".join([src, cc.encode(), " ".join(FLAGS + TUNE).encode(), _cpu_id().encode(),
                                     str(omp or "").encode()]))
    target = cache_dir() / f"neuron_kernels-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags in ([*FLAGS, *TUNE], FLAGS):
        for commands in (_openmp_build(cc, flags, omp) if omp else [], [[cc, *flags, str(SOURCE), "-o", "{out}"]]):
            if not commands:
                continue
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
            os.close(fd)
            error = _run_all(commands, tmp)
            if error is None:
                os.replace(tmp, target)             # atomic: concurrent builders each write their own file
                return target
            if os.path.exists(tmp):             # (a failed link removes its output itself)
                os.unlink(tmp)
            errors.append(error)
    raise NativeBuildError(f"{cc} failed: {errors[-1]}")


def torch_openmp() -> Optional[Path]:
    """torch's bundled OpenMP runtime (torch/lib/libgomp-*.so*), if it has one."""
    try:
        import torch
    except ImportError:
        return None
    found = sorted((Path(torch.__file__).parent / "lib").glob("libgomp*.so*"))
    return found[0] if found else None


def _openmp_build(cc: str, flags, omp: Path) -> list:
    """Compile with -fopenmp, link against torch's runtime (not the system's: one runtime, one thread pool)."""
    compile_flags = [f for f in flags if f not in ("-shared",)]
    return [[cc, *compile_flags, "-fopenmp", "-c", str(SOURCE), "-o", "{out}.o"],
            [cc, "-shared", "-fPIC", "{out}.o", str(omp), f"-Wl,-rpath,{omp.parent}", "-pthread", "-o", "{out}"]]


def _run_all(commands, out: str) -> Optional[str]:
    """Run the build commands ({out} = the output path); None, or the compiler's last line of error."""
    try:
        for cmd in commands:
            proc = subprocess.run([c.replace("{out}", out) for c in cmd], capture_output=True, text=True)
            if proc.returncode != 0:
                err = proc.stderr.strip()
                return err.splitlines()[-1] if err else f"exit {proc.returncode}"
        return None
    finally:
        if os.path.exists(out + ".o"):
            os.unlink(out + ".o")


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
                                            ptr, i32, ptr, dbl, dbl, i32, dbl, i32]
    lib.snn_subtractive_forward.restype = i32
    lib.snn_subtractive_backward.argtypes = [i32, i64, i64, i64, i64, i64, i64, i64, i64, ptr, ptr, ptr, ptr, ptr,
                                             ptr, ptr, ptr, dbl, dbl, i32]
    lib.snn_subtractive_backward.restype = i32
    lib.snn_cuba_forward.argtypes = [i32, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, dbl, i32, i32, i32]
    lib.snn_cuba_forward.restype = i32
    lib.snn_cuba_backward.argtypes = [i32, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, dbl, i32, i32, i32]
    lib.snn_cuba_backward.restype = i32
    lib.snn_sigma_delta.argtypes = [i64, i64, i32, ptr, ptr, i64, ptr, ptr, i32]
    lib.snn_sigma_delta.restype = i32
    lib.snn_lava_cuba.argtypes = [i32, i32, i64, i64, i64, ptr, ptr, i64, ptr, ptr, ptr, i64, i64, i64, i32]
    lib.snn_lava_cuba.restype = i32
    return lib

"""The C allocator's settings for training on the CPU (glibc only).

A training step allocates the same buffers every step: a spiking layer's block of currents and its gradient
(16 MB each for VGG5), the weight gradients (134 MB for VGG5's first linear layer), the saved 1-byte state. By
default glibc serves every request of 32 MB or more with a fresh mmap and unmaps it on free, and gives freed heap
memory at the top back to the OS past 2 x that threshold; either way the next step's buffer is new memory, whose
every page the kernel must zero on first touch. Measured on VGG5 (benchmarks/stdb_step.py, SNNTC_MALLOC_TUNE=0):
84,000 page faults and 0.3 s of kernel time per step at T = 20, 350,000 and 1.8 s at T = 100. `tune_for_training`
makes requests below 256 MB come from the heap and keeps freed heap memory for reuse, so from the second step on
the buffers are recycled (no page faults). The price: the process keeps its heap's high-water mark until it
exits, and the heap fragments somewhat: peak memory about 110 MB higher at T = 20 and 300 MB at T = 100 (measured
stable over 40 steps at T = 20 and 10 at T = 100). Requests of 256 MB or more are still mapped and unmapped
each time (with a 128 MB threshold, VGG5's 134 MB weight gradient cost 0.5 s of kernel time per step).

`toolchain.training.train` (so `snntc train-ann`, `finetune` and `train-snn`) holds these settings while it runs
(`training_allocator`) and then gives the kept memory back (`release`: glibc's own default limits, 32 MB and
64 MB, and malloc_trim), so what runs later in the process does not pay for them; the benchmark sets them for
its whole run. SNNTC_MALLOC_TUNE=0 in the environment leaves the allocator alone.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 20          # requests at least this large are mapped (and unmapped) each time
TRIM_THRESHOLD = (1 << 31) - 1      # keep freed heap memory (glibc's largest setting)
DEFAULT_MMAP_MAX, DEFAULT_TRIM = 32 << 20, 64 << 20   # where glibc's own adaptive limits end up at most

_tuned = False
_holders = 0


def tune_for_training() -> bool:
    """Set glibc's mmap and trim thresholds for training (see the module's text) until `release`. Returns whether
    they are set (False: not glibc, glibc refused them, or SNNTC_MALLOC_TUNE=0)."""
    global _tuned
    if _tuned:
        return True
    if os.environ.get("SNNTC_MALLOC_TUNE", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    _tuned = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _tuned


@contextlib.contextmanager
def training_allocator(enabled: bool = True):
    """The training settings for the duration of a `with` block (nested blocks share them), then `release`."""
    global _holders
    if not enabled or not tune_for_training():
        yield False
        return
    _holders += 1
    try:
        yield True
    finally:
        _holders -= 1
        if _holders == 0:
            release()


def release() -> None:
    """Back to glibc's default limits (fixed at their largest adaptive values) and give the kept memory back."""
    global _tuned
    mallopt = _mallopt()
    if mallopt is None or not _tuned:
        return
    mallopt(M_MMAP_THRESHOLD, DEFAULT_MMAP_MAX)
    mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM)
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
        trim(0)
    _tuned = False


@functools.lru_cache(maxsize=1)
def _libc():
    """glibc, loaded once; None elsewhere (other C libraries' mallopt differ)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version           # glibc's own symbol
        return libc
    except (OSError, AttributeError):
        return None


def _mallopt():
    libc = _libc()
    fn = getattr(libc, "mallopt", None) if libc is not None else None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn

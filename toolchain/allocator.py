"""The C allocator's settings for training on the CPU (glibc only).

A training step allocates the same buffers every step: a spiking layer's block of currents and its gradient
(16 MB each for VGG5), the weight gradients (134 MB for VGG5's first linear layer), the saved 1-byte state. By
default glibc serves every request of 32 MB or more with a fresh mmap and unmaps it on free, and gives freed heap
memory at the top back to the OS past 2 x that threshold; either way the next step's buffer is new memory, whose
every page the kernel must zero on first touch (about 300,000 page faults and 0.6 s of system time per VGG5 step at
T = 20 before this was set). `tune_for_training` makes requests below 256 MB come from the heap and keeps freed
heap memory for reuse, so from the second step on the buffers are recycled. The price: the process keeps its
heap's high-water mark until it exits (VGG5 at T = 20: about 70 MB more peak memory, measured by
benchmarks/stdb_step.py); requests of 256 MB or more are still mapped and unmapped each time.

Called by `toolchain.training.train` (so by `snntc train-ann`, `finetune` and `train-snn`) and by the
benchmark. SNNTC_MALLOC_TUNE=0 in the environment leaves the allocator alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 20          # requests at least this large are mapped (and unmapped) each time
TRIM_THRESHOLD = (1 << 31) - 1      # keep freed heap memory (glibc's largest setting)

_tuned = False


def tune_for_training() -> bool:
    """Set glibc's mmap and trim thresholds for training (see the module's text), once per process. Returns
    whether they are set (False: not glibc, or SNNTC_MALLOC_TUNE=0)."""
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


def _mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallopt
        libc.gnu_get_libc_version           # glibc's own symbol: other C libraries' mallopt differ
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn

"""Resource bounds, checked before work starts: seeds and time steps in range, and the memory a run needs (time
steps x samples x neurons) against what this machine (or its container, or the GPU) has available.

The estimates are lower bounds (the largest tensors the run must hold at once), so a run refused here could not
have finished; one that passes may still need more.
"""
from __future__ import annotations

import math
import os
from typing import Iterable, Optional

from .errors import ResourceError

MAX_SEED = 2 ** 32 - 1              # numpy's and every generator's common range
MAX_TIMESTEPS = 100_000             # far beyond any useful run; bounds the arithmetic before the memory check


def _cgroup_available() -> Optional[int]:
    """What the container's memory limit leaves (cgroup v2 or v1), or None without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            return max(0, int(limit) - usage)
    return None


def _meminfo_available() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_memory(device=None) -> Optional[int]:
    """Bytes this process can still allocate on `device` (the CPU by default); None if unknown."""
    if device is not None and str(device).startswith("cuda"):
        import torch
        try:
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except (RuntimeError, AssertionError, ValueError):
            return None
    found = [m for m in (_meminfo_available(), _cgroup_available()) if m is not None]
    return min(found) if found else None


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def check_memory(need: int, what: str, advice: str, device=None) -> None:
    """Raise ResourceError when `need` bytes exceed what is available on `device`."""
    avail = available_memory(device)
    if avail is not None and need > avail:
        where = f" on {device}" if device is not None and str(device) != "cpu" else ""
        raise ResourceError(f"{what} needs at least {format_bytes(need)} of memory{where}, {format_bytes(avail)} is "
                            f"available: {advice}")


def largest(shapes: Iterable) -> int:
    """The most elements of any of these shapes."""
    return max((math.prod(int(s) for s in shape) for shape in shapes), default=0)


def check_snn_run(net, batch: int, timesteps: int, what: str, device=None) -> None:
    """An SNN run holds at least, for every step and sample of a batch, its input coded for every step (float32,
    SnnModel.forward stacks it) and the largest layer's spikes in bytes (what the block-by-block path keeps for the
    backward; the layer-by-layer path holds more): a lower bound, so that no run that fits is refused."""
    neurons = largest(net.shapes)
    need = int(batch) * int(timesteps) * (4 * largest([net.input_shape]) + neurons)
    check_memory(need, f"{what} at T={timesteps} on batches of {batch} (the largest layer: {neurons:,} neurons)",
                 "use fewer time steps or a smaller batch", device)


def check_fixed_point_run(net, samples: int, timesteps: int, what: str, record: bool = False,
                          batch: int = 64, emulator: bool = True) -> None:
    """A run of a deployed network (FxNetwork) holds the coded input of every sample and step, and per batch of
    samples (all of them on the emulator's global time line) the largest layer's currents and spikes for every
    step; recording (verify) keeps every layer's spikes and voltages of every sample and step."""
    shapes = [layer.output_shape for layer in net.layers]
    need = samples * timesteps * largest([net.input_shape]) * 4
    if emulator and net.global_time_line:   # one stream of all samples: the input (int64, float64), a layer's a, s, v
        need += samples * timesteps * (16 * largest([net.input_shape]) + 24 * largest(shapes))
    else:
        need += min(samples, batch) * timesteps * largest(shapes) * 9
    if record:
        need += samples * timesteps * sum(math.prod(s) for s in shapes) * 17
    check_memory(need, f"{what} ({samples} samples x {timesteps} steps, the largest layer {largest(shapes):,} "
                       f"neurons)", "use fewer samples or time steps")

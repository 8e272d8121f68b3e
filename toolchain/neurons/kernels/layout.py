"""Buffers and helpers shared by the neurons' fused runs (kernels.subtractive, kernels.cuba) and the
block-by-block spiking stack (kernels.stack): the per-step memory layout of (T, B, ...) buffers, the 1-byte dt
codes, the spike boundary, pooled buffers, and whether the compiled kernels apply."""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch

from . import native

DT_ONLY = frozenset({"stdb"})   # surrogates whose gradient is a function of dt alone (no x saved)
NEVER = 255                      # the saved dt code of a neuron with no spike yet (uint8; T < 255 never reaches it)
BLOCK = 1 << 22                  # values per block of steps (pooling, the backward's surrogate)


def never_code(dtype: torch.dtype) -> int:
    """The saved dt code for "no spike yet in this sample": the integer dtype's largest value."""
    return torch.iinfo(dtype).max


def dt_values(dts: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The saved dt codes as values: steps since the last spike, inf for no spike yet."""
    return dts.to(dtype).masked_fill_(dts == never_code(dts.dtype), math.inf)


def stdb_table(beta: float, dtype: torch.dtype) -> torch.Tensor:
    """exp(-beta * dt) for each 1-byte dt code the compiled kernels save (0 for NEVER: no spike yet)."""
    lut = torch.arange(NEVER + 1, dtype=dtype).mul_(-beta).exp_()
    lut[NEVER] = 0.0
    return lut


@functools.lru_cache(maxsize=512)
def spike_boundary(theta: float, dtype: torch.dtype, device: str) -> Optional[float]:
    """The largest c of `dtype` with (c / theta - 1.0 > 0) false, computed as torch computes it on `device`, so
    that (v / theta - 1.0 > 0) == (v > c) for every v (the test is monotone in v for theta > 0). None if not found."""
    if not (math.isfinite(theta) and theta > 0):
        return None
    c = torch.tensor([theta], dtype=dtype, device=device)
    up = torch.tensor([math.inf], dtype=dtype, device=device)
    down = -up

    def fires(v):
        return bool((v / theta - 1.0 > 0).item())

    for _ in range(64):
        if fires(c):
            c = torch.nextafter(c, down)
            continue
        nxt = torch.nextafter(c, up)
        if not fires(nxt):
            c = nxt
            continue
        return float(c.item())
    return None


def step_layout(currents: torch.Tensor) -> tuple:
    """Per-step strides of a dense layout for (T, B, ...) buffers: the currents' own if each step of them is one
    dense block (e.g. channels-last conv outputs), else contiguous. Buffers in this layout can also be viewed
    flat, (T, N) in memory order, for the per-step arithmetic."""
    shape, stride = tuple(currents.shape), tuple(currents.stride())
    n = 1
    for d in shape[1:]:
        n *= d
    dims = sorted(range(1, len(shape)), key=lambda d: stride[d])
    expect = 1
    for d in dims:
        if shape[d] != 1 and stride[d] != expect:
            break
        expect *= shape[d]
    else:                       # a batch of 1 may carry any stride (torch's reshapes leave odd ones): say dense
        return (n,) + ((n,) if shape[1] == 1 else stride[1:2]) + stride[2:]
    c = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        c[d] = c[d + 1] * shape[d + 1]
    return (n,) + tuple(c[1:])


def buffer(steps: int, shape, layout, like: torch.Tensor, dtype=None) -> torch.Tensor:
    """An empty (steps, *shape[1:]) tensor in `layout` (see `step_layout`)."""
    return torch.empty_strided((steps,) + tuple(shape[1:]), layout, dtype=dtype or like.dtype, device=like.device)


def flat(x: torch.Tensor) -> torch.Tensor:
    """(T, N) view, in memory order, of a buffer made by `buffer`."""
    n = x.stride(0)
    return x.as_strided((x.shape[0], n), (n, 1))


def count_dtype(T: int) -> torch.dtype:
    return torch.uint8 if T < 255 else (torch.int16 if T < 32767 else torch.int32)


def is_channels_last(shape, layout) -> bool:
    """Whether (T, B, C, H, W) buffers in `layout` (see `step_layout`) are channels-last in each step."""
    if len(shape) != 5:
        return False
    _, B, C, H, W = shape
    return C > 1 and tuple(layout[1:]) == (H * W * C, 1, W * C, C)


def pooled_buffer(steps: int, shape, k: int, layout, like: torch.Tensor) -> torch.Tensor:
    """A (steps, B, C, H/k, W/k) buffer, channels-last if the un-pooled layout is."""
    B, C, H, W = shape[1:]
    fmt = torch.channels_last if is_channels_last(shape, layout) else torch.contiguous_format
    out = torch.empty((steps * B, C, H // k, W // k), dtype=like.dtype, device=like.device, memory_format=fmt)
    return out.reshape(steps, B, C, H // k, W // k)


def surrogate_factor(sur, dts, x_all, t0: int, t1: int, theta, out: torch.Tensor) -> None:
    """out = surrogate'(x, dt) / theta for steps t0..t1-1 (any surrogate; the backward's per-block evaluation).
    A surrogate that ignores dt gets x in its place, one that ignores x gets dt."""
    dt = dt_values(dts[t0:t1], out.dtype) if dts is not None else None
    x = x_all[t0:t1] if x_all is not None else dt
    out.copy_(sur.grad(x, dt if dt is not None else x) / theta)


def native_ok(x: torch.Tensor, theta, T: int) -> bool:
    """Whether the compiled kernels apply: CPU, float32 or float64, a scalar threshold, T < 255 (1-byte dt codes),
    and the library built and loaded (native.library())."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not isinstance(theta, torch.Tensor)
            and T < 255 and native.library() is not None)


def pool_geometry(shape, layout, k: int) -> Optional[tuple]:
    """(W, C) of the kernel's pooling blocks for channels-last or contiguous (T, B, C, H, W) buffers, else None."""
    if len(shape) != 5 or shape[3] % k or shape[4] % k:
        return None
    _, B, C, H, W = shape
    if is_channels_last(shape, layout):
        return W, C
    return (W, 1) if tuple(layout[1:]) == (C * H * W, H * W, W, 1) else None


def pooled_strides(shape, k: int, layout) -> tuple:
    """The strides of `pooled_buffer(T, shape, k, layout, ...)`."""
    _, B, C, H, W = shape
    Hp, Wp = H // k, W // k
    if is_channels_last(shape, layout):
        return (B * Hp * Wp * C, Hp * Wp * C, 1, Wp * C, C)
    return (B * C * Hp * Wp, C * Hp * Wp, Hp * Wp, Wp, 1)


def in_layout(x: torch.Tensor, strides: tuple, make) -> torch.Tensor:
    """x itself if its strides are `strides` (those of its size-1 dimensions aside: they address nothing), else a
    copy into `make()` (a buffer with those strides)."""
    same = all(size == 1 or a == b for size, a, b in zip(x.shape, x.stride(), strides))
    return x if same and x.dim() == len(strides) else make().copy_(x)

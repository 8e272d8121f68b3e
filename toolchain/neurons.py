"""Neuron dynamics as pure step functions: (input, state, params) -> (spikes, state).

Two models:

- `subtractive_step`: the integrate-and-fire / leaky integrate-and-fire neuron of Rathi et al.:
      v <- leak * v + I;  s = 1[v > threshold];  v <- v - threshold * s        (reset by subtraction)
- `cuba_step`: Loihi's current-based LIF, in Lava's integer units (see toolchain/fixed_point.py):
      u <- decay(u, i_decay) + (a << 6)   (24-bit wrap);  v <- decay(v, v_decay) + u + (bias << 6)  (24-bit clip)
      s = 1[v > vth << 6];  v <- 0 where s                                         (reset to zero)
  with decay(x, d) = sign(x) * floor(|x| * (4096 - d) / 4096). The same function runs exactly
  (float64 state, `exact=True`: bit-for-bit Lava's fixed-point model), and quantization-aware in
  training (rounding in the forward pass, straight-through gradient).

Both carry `dt`, the time steps since the neuron's last spike, for the STDB surrogate; a neuron that has not
fired yet in this sample has dt = inf (its last spike is infinitely far in the past), so the STDB surrogate
alpha * exp(-beta * dt) passes it no gradient, as in Rathi et al.'s code (last spike times start at -1000 there).
`run_neurons` loops a step function over the time axis of a (T, B, ...) current tensor; for the subtractive
neuron with a surrogate spike function (IF / LIF training and inference) it runs a fused implementation with
the same results and gradients (see `_SubtractiveRun`), which saves 1 byte per neuron and step for STDB and
also applies a following average pool or dropout mask as the neurons fire. So does the quantization-aware CUBA
neuron (`exact=False`, `_CubaRun`: the gradient of the unrolled loop, straight-through rounding, wrap and clip
included, derived by hand; 1 byte per neuron and step saved, plus dt or x for the surrogate). On the CPU the fused
loops run compiled (toolchain/native: one pass over memory per layer instead of several per step); where no C
compiler is available, on CUDA, or with SNNTC_NATIVE=0, the same loops run in torch ops.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F

from . import native
from .fixed_point import DECAY_UNITY, STATE_MAX

Number = Union[float, torch.Tensor]


class NeuronState(NamedTuple):
    v: torch.Tensor          # membrane voltage
    u: torch.Tensor          # synaptic current (CUBA only; zeros for the subtractive neuron)
    dt: torch.Tensor         # time steps since the last spike (inf: none yet in this sample)
    count: Optional[torch.Tensor] = None   # spikes per neuron over the run (int32; set by `run_neurons`' fused path)


def initial_state(like: torch.Tensor) -> NeuronState:
    """Zero potentials; no spike yet (dt = inf). Counting dt from the start of the sample instead gives every
    silent neuron the STDB gradient of one that just fired (alpha * exp(-beta * t), about alpha): the backward
    pass is then that of a network without its ReLUs, and fine-tuning degrades a converted network."""
    z = torch.zeros_like(like)
    return NeuronState(z, z, torch.full_like(like, math.inf))


@dataclass(frozen=True)
class SubtractiveParams:
    threshold: Number
    leak: float = 1.0


@dataclass(frozen=True)
class CubaParams:
    vth: Number                      # threshold, in synaptic-input units
    i_decay: int = DECAY_UNITY       # 1..4096
    v_decay: int = 0                 # 0..4095
    bias: Optional[torch.Tensor] = None   # synaptic-input units, broadcastable to the current
    exact: bool = False              # True: bit-exact integer arithmetic (no gradient through rounding needed)


def _next_dt(spikes: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    return torch.where(spikes.detach() > 0, torch.zeros_like(dt), dt + 1)


def subtractive_step(current: torch.Tensor, state: NeuronState, params: SubtractiveParams,
                     spike_fn: Callable) -> tuple:
    v = params.leak * state.v + current
    spikes = spike_fn(v / params.threshold - 1.0, state.dt)
    v = v - params.threshold * spikes.detach()      # the reset carries no gradient (as in Rathi et al.'s code)
    return spikes, NeuronState(v, state.u, _next_dt(spikes, state.dt))


def zero_reset_step(current: torch.Tensor, state: NeuronState, params: SubtractiveParams,
                    spike_fn: Callable) -> tuple:
    """IF / LIF with reset to zero (the neurons of SpikingJelly's, Norse's and snnTorch's NIR imports, and of
    networks imported from them): v <- leak * v + I;  s = 1[v > threshold];  v <- 0 where s."""
    v = params.leak * state.v + current
    spikes = spike_fn(v / params.threshold - 1.0, state.dt)
    v = v * (1.0 - spikes.detach())
    return spikes, NeuronState(v, state.u, _next_dt(spikes, state.dt))


def round_toward_zero_ste(x: torch.Tensor) -> torch.Tensor:
    """trunc(x) in the forward pass, identity in the backward pass."""
    return x + (torch.trunc(x) - x).detach()


def loihi_decay(x: torch.Tensor, decay: int) -> torch.Tensor:
    """sign(x) * floor(|x| * (4096 - decay) / 4096), Lava's sign-magnitude decay."""
    if decay == 0:
        return x
    if decay >= DECAY_UNITY:
        return torch.zeros_like(x)
    return round_toward_zero_ste(x * ((DECAY_UNITY - decay) / DECAY_UNITY))


def _wrap24(u: torch.Tensor) -> torch.Tensor:
    """Lava's 24-bit current wrap: values above 2**23 or at/below -2**23 come back by 2**24."""
    m = STATE_MAX + 1
    wrapped = torch.where(u > m, u - 2 * m, u)
    return torch.where(wrapped <= -m, u + 2 * m, wrapped)


def _cuba_integrate(current: torch.Tensor, state: NeuronState, params: CubaParams) -> tuple:
    """(v before the 24-bit clip, u) of one CUBA step: u = wrap24(decay(u) + 64 a), v = decay(v) + u (+ 64 bias)."""
    u = _wrap24(loihi_decay(state.u, params.i_decay) + current * 64)
    v = loihi_decay(state.v, params.v_decay) + u
    if params.bias is not None:
        v = v + params.bias * 64
    return v, u


def cuba_step(current: torch.Tensor, state: NeuronState, params: CubaParams, spike_fn: Callable) -> tuple:
    """One step of Loihi's CUBA LIF. `current` is the synaptic input a[t] in integer units."""
    v, u = _cuba_integrate(current, state, params)
    v = torch.clamp(v, -STATE_MAX, STATE_MAX)
    vth = params.vth * 64
    spikes = spike_fn(v / vth - 1.0, state.dt)
    v = v * (1.0 - spikes.detach())
    return spikes, NeuronState(v, u, _next_dt(spikes, state.dt))


def run_neurons(currents: torch.Tensor, step: Callable, params, spike_fn: Callable,
                state: Optional[NeuronState] = None, pool: int = 0, mask: Optional[torch.Tensor] = None) -> tuple:
    """Loop `step` over the leading time axis of `currents` (T, B, ...); returns spikes (T, B, ...) and the final state.
    `pool` = k > 0: the spikes come back average-pooled k x k (currents (T, B, C, H, W), H and W divisible by k), as
    `F.avg_pool2d(spikes, k)` would give them, without the full-size spike tensor ever being stored.
    `mask` (B, ...), with `pool` = 0: a dropout mask, the same at every step; the spikes come back times the mask
    (the neurons' own spikes and counts are unchanged).

    The subtractive (IF / LIF) neuron with a `Surrogate` spike function runs fused (`_SubtractiveRun`): the same
    spikes, final state and gradients as the loop below (autograd through the unrolled steps), in a fraction of
    the time and memory. So does the quantization-aware CUBA neuron (`cuba_step` with `exact=False`, no pool or
    mask: `_CubaRun`). Any other step, spike function, `exact=True` or a given initial state runs the generic loop.
    """
    if mask is not None and pool:
        raise ValueError("run_neurons: a dropout mask applies to un-pooled spikes only")
    if state is None and _fusable(currents, step, params, spike_fn):
        return _run_subtractive(currents, params, spike_fn, pool, mask)
    if state is None and not pool and mask is None and _cuba_fusable(currents, step, params, spike_fn):
        return _run_cuba(currents, params, spike_fn)
    state = initial_state(currents[0]) if state is None else state
    out = []
    for current in currents.unbind(0):          # unbind: one gradient buffer in backward, not one per step
        s, state = step(current, state, params, spike_fn)
        out.append(s)
    spikes = torch.stack(out)
    if pool:
        T, B = spikes.shape[:2]
        spikes = F.avg_pool2d(spikes.reshape((T * B,) + spikes.shape[2:]), pool)
        spikes = spikes.reshape((T, B) + spikes.shape[1:])
    if mask is not None:
        state = state._replace(count=spikes.detach().sum(0).to(torch.int32))
        spikes = spikes * mask
    return spikes, state


# -- the fused subtractive neuron ----------------------------------------------------------------------------
#
# Forward, per step t (exactly the ops of `subtractive_step`, in place; unless x is saved for the surrogate, the
# spike test v / theta - 1 > 0 is done as v > c, c the largest value for which it is false, found once per
# (theta, dtype, device), which decides identically):
#     v = leak * v + I[t];  s[t] = 1[v / theta - 1 > 0];  v -= theta * s[t]
# Backward (the reset carries no gradient, so d v[t] / d v[t-1] = leak):
#     gI[t] = g[t] * surrogate'(x[t], dt[t]) / theta + leak * gI[t+1],   gI[T-1] also gets the final v's gradient.
# Saved for the backward, only what the surrogate needs: for dt, the steps since the last spike as each step saw
# them (1 byte per neuron and step for T < 255), and for x, x = v / theta - 1 (the currents' dtype). STDB needs dt
# only; nothing else is kept (no currents, no potentials, no float spikes). With `pool`, each block of steps is
# pooled as it is made, and the backward un-pools the incoming gradient a block at a time (avg_pool2d's own
# backward), so neither full-size spikes nor their gradient are stored. Blocks are about 4M values; the backward
# evaluates the surrogate once per block, and all per-block scratch memory is allocated once per call.

_DT_ONLY = frozenset({"stdb"})        # surrogates whose gradient is a function of dt alone (no x saved)
NEVER = 255                           # the saved dt code of a neuron with no spike yet (uint8; T < 255 never reaches it)


def _never(dtype: torch.dtype) -> int:
    """The saved dt code for "no spike yet in this sample": the integer dtype's largest value."""
    return torch.iinfo(dtype).max


def _dt_values(dts: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The saved dt codes as values: steps since the last spike, inf for no spike yet."""
    return dts.to(dtype).masked_fill_(dts == _never(dts.dtype), math.inf)


def stdb_table(beta: float, dtype: torch.dtype) -> torch.Tensor:
    """exp(-beta * dt) for each 1-byte dt code the compiled kernels save (0 for NEVER: no spike yet)."""
    lut = torch.arange(NEVER + 1, dtype=dtype).mul_(-beta).exp_()
    lut[NEVER] = 0.0
    return lut
_BLOCK = 1 << 22                      # values per block of steps (pooling, the backward's surrogate)


def _fusable(currents, step, params, spike_fn) -> bool:
    from .surrogates import SURROGATES, Surrogate
    if step is not subtractive_step or not isinstance(params, SubtractiveParams) or type(spike_fn) is not Surrogate:
        return False
    if spike_fn.name not in SURROGATES or not currents.is_floating_point() or currents.dim() < 2:
        return False
    if currents.shape[0] < 1:
        return False
    if not isinstance(params.leak, (int, float)):
        return False
    th = params.threshold
    if isinstance(th, torch.Tensor):
        return not th.requires_grad and th.is_floating_point() and th.device == currents.device
    return isinstance(th, (int, float))


@functools.lru_cache(maxsize=512)
def _spike_boundary(theta: float, dtype: torch.dtype, device: str) -> Optional[float]:
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


def _theta(params: SubtractiveParams, like: torch.Tensor):
    th = params.threshold
    if isinstance(th, torch.Tensor):
        th = th.to(like.dtype)
        if th.numel() == 1:
            return float(th.item())
        return th
    return float(th)


def _layout(currents: torch.Tensor) -> tuple:
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


def _buffer(steps: int, shape, layout, like: torch.Tensor, dtype=None) -> torch.Tensor:
    """An empty (steps, *shape[1:]) tensor in `layout` (see `_layout`)."""
    return torch.empty_strided((steps,) + tuple(shape[1:]), layout, dtype=dtype or like.dtype, device=like.device)


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(T, N) view, in memory order, of a buffer made by `_buffer`."""
    n = x.stride(0)
    return x.as_strided((x.shape[0], n), (n, 1))


def _count_dtype(T: int) -> torch.dtype:
    return torch.uint8 if T < 255 else (torch.int16 if T < 32767 else torch.int32)


def _subtractive_forward(currents: torch.Tensor, theta, leak: float, keep_x: bool, pool: int = 0,
                         need_dts: bool = True, mask: Optional[torch.Tensor] = None):
    """The loop without autograd: the compiled kernel (`_native_forward`) where it applies, else torch ops.
    Returns (spikes (times `mask`), v, dt, dts, x or None, spikes per neuron (int32))."""
    res = _native_forward(currents, theta, leak, keep_x, pool, need_dts, mask)
    return res if res is not None else _torch_forward(currents, theta, leak, keep_x, pool, mask)


def _torch_forward(currents: torch.Tensor, theta, leak: float, keep_x: bool, pool: int = 0,
                   mask: Optional[torch.Tensor] = None):
    """The loop, in place, without autograd, in torch ops. Returns (spikes, v, dt, dts, x or None): spikes (pooled if `pool`), the
    final state's v and dt, dts[t] = the steps since the last spike before step t, as the spike function saw them
    (uint8 for T < 255; the dtype's largest value where there was none yet), and x[t] = v / theta - 1 if kept. Pooling and the uint8 copy run once per block of steps,
    into preallocated buffers (a fresh allocation costs its page faults on every use)."""
    T, shape = currents.shape[0], tuple(currents.shape)
    layout = _layout(currents)
    n = layout[0]
    block = max(1, min(T, _BLOCK // max(1, n)))
    if pool:
        B, C, H, W = shape[1:]
        out = _pooled(T, shape, pool, layout, currents)
        spk_buf = _buffer(block, shape, layout, currents)
    else:
        out = _buffer(T, shape, layout, currents)
    last = _buffer(T, shape, layout, currents, _count_dtype(T))      # becomes dts
    x_all = _buffer(T, shape, layout, currents) if keep_x else None
    v = _buffer(1, shape, layout, currents)[0].zero_()
    scalar = not isinstance(theta, torch.Tensor)
    c = _spike_boundary(theta, currents.dtype, str(currents.device)) if scalar and not keep_x else None
    xbuf = None
    for t0 in range(0, T, block):
        t1 = min(T, t0 + block)
        spk = spk_buf[:t1 - t0] if pool else out[t0:t1]
        for t in range(t0, t1):
            if leak != 1.0:
                v.mul_(leak)
            v.add_(currents[t])
            s = spk[t - t0]
            if c is not None:
                torch.gt(v, c, out=s)
            else:                                # x = v / theta - 1, the spike function's argument, as in the step
                if keep_x:
                    x = x_all[t]
                else:
                    x = xbuf = torch.empty_like(v) if xbuf is None else xbuf
                torch.div(v, theta, out=x)
                x.sub_(1.0)
                torch.gt(x, 0, out=s)
            if scalar:
                v.sub_(s, alpha=theta)
            else:
                v.addcmul_(s, theta, value=-1)
        last[t0:t1].copy_(spk)
        if pool:
            k = pool
            torch.ops.aten.avg_pool2d.out(spk.reshape((-1,) + shape[2:]), [k, k], [k, k], [0, 0], False, True, None,
                                          out=out[t0:t1].reshape(-1, C, H // k, W // k))
    count = last.sum(0, dtype=torch.int32)
    if mask is not None:
        out.mul_(mask)
    # last[t] = 1 + the index of the last spike at or before t (0 if none), then in place dt[t] = t - last[t - 1]
    lastf = _flat(last)
    steps = torch.arange(T + 1, device=last.device, dtype=last.dtype).reshape(T + 1, 1)
    lastf.mul_(steps[1:])
    for t in range(1, T):
        torch.maximum(lastf[t - 1], lastf[t], out=lastf[t])
    dt = (T - last[-1].to(torch.int32)).to(currents.dtype).masked_fill_(last[-1] == 0, math.inf)
    never = _never(last.dtype)
    for t in range(T - 1, 0, -1):
        torch.sub(steps[t], lastf[t - 1], out=lastf[t])
        lastf[t].masked_fill_(lastf[t - 1] == 0, never)
    lastf[0].fill_(never)
    return out, v, dt, last, x_all, count


def _channels_last(shape, layout) -> bool:
    """Whether (T, B, C, H, W) buffers in `layout` (see `_layout`) are channels-last in each step."""
    if len(shape) != 5:
        return False
    _, B, C, H, W = shape
    return C > 1 and tuple(layout[1:]) == (H * W * C, 1, W * C, C)


def _pooled(steps: int, shape, k: int, layout, like: torch.Tensor) -> torch.Tensor:
    """A (steps, B, C, H/k, W/k) buffer, channels-last if the un-pooled layout is."""
    B, C, H, W = shape[1:]
    fmt = torch.channels_last if _channels_last(shape, layout) else torch.contiguous_format
    out = torch.empty((steps * B, C, H // k, W // k), dtype=like.dtype, device=like.device, memory_format=fmt)
    return out.reshape(steps, B, C, H // k, W // k)


class _SubtractiveRun(torch.autograd.Function):
    @staticmethod
    def forward(ctx, currents, theta, leak, surrogate, pool, mask):
        needs_x = surrogate.name not in _DT_ONLY
        needs_dt = surrogate.needs_dt or surrogate.name in _DT_ONLY
        spikes, v, dt, dts, x_all, count = _subtractive_forward(currents, theta, leak, needs_x, pool, needs_dt, mask)
        ctx.save_for_backward(dts if needs_dt else None, x_all, mask)   # freed after the backward (unless retained)
        ctx.theta, ctx.leak, ctx.surrogate, ctx.pool = theta, leak, surrogate, pool
        ctx.shape, ctx.layout = tuple(currents.shape), _layout(currents)
        ctx.mark_non_differentiable(dt, count)
        return spikes, v, dt, count

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_spikes, g_v, _g_dt, _g_count):
        dts, x_all, mask = ctx.saved_tensors
        grad = _native_backward(ctx, g_spikes, g_v, dts, x_all, mask)
        if grad is None:
            if mask is not None and g_spikes is not None:
                g_spikes = g_spikes * mask
            grad = _SubtractiveRun._backward(ctx, g_spikes, g_v, dts, x_all)
        return grad, None, None, None, None, None

    @staticmethod
    def _backward(ctx, g_spikes, g_v, dts, x_all):
        theta, leak, sur, k = ctx.theta, ctx.leak, ctx.surrogate, ctx.pool
        shape, layout = ctx.shape, ctx.layout
        T, n = shape[0], layout[0]
        like = g_spikes if g_spikes is not None else g_v
        grad = _buffer(T, shape, layout, like)
        gradf = _flat(grad)
        block = max(1, min(T, _BLOCK // max(1, n)))
        scalar = not isinstance(theta, torch.Tensor)
        # STDB, d spike / d x = alpha * exp(-beta * dt) (surrogates.stdb_grad): exp(-beta * dt) is evaluated in place
        # per block and alpha / theta goes into the multiply-add; any other surrogate is called as it is, per block.
        stdb = sur.name == "stdb" and scalar
        scale = sur.alpha / theta if stdb else 1.0
        sg_buf = _buffer(block, shape, layout, grad)
        g_buf = _buffer(block, shape, layout, grad) if g_spikes is not None else None
        if k and g_spikes is not None:                   # the pooled gradient, laid out like the un-pooled one
            gp_buf = _pooled(block, shape, k, layout, grad)
        same_layout = g_spikes is not None and not k and g_spikes.stride() == grad.stride()
        t1 = T
        while t1 > 0:
            t0 = max(0, t1 - block)
            K = t1 - t0
            # the incoming gradient for these steps, in the buffers' layout
            if g_spikes is None:
                gf = _flat(g_buf if g_buf is not None else sg_buf)[:0]
            elif k:                                      # un-pool: exactly avg_pool2d's own backward
                g4 = g_buf[:K].reshape((-1,) + shape[2:])
                gp = g_spikes[t0:t1].reshape((-1,) + g_spikes.shape[2:])
                if gp.stride() != gp_buf[:K].reshape(gp.shape).stride():
                    gp = gp_buf[:K].reshape(gp.shape).copy_(gp)          # in the layout of g4, else the kernel copies
                torch.ops.aten.avg_pool2d_backward.grad_input(gp, g4, [k, k], [k, k], [0, 0], False, True, None,
                                                              grad_input=g4)
                gf = _flat(g_buf[:K])
            elif same_layout:                            # read in place
                gf = _flat(g_spikes[t0:t1])
            else:
                g_buf[:K].copy_(g_spikes[t0:t1])
                gf = _flat(g_buf[:K])
            sgf = _flat(sg_buf[:K])
            if g_spikes is None:
                pass
            elif stdb:                                   # in preallocated memory
                sgf.copy_(_flat(dts)[t0:t1])
                sgf.mul_(-sur.beta)
                sgf.exp_()
                sgf.masked_fill_(_flat(dts)[t0:t1] == _never(dts.dtype), 0.0)     # no spike yet: no gradient
            else:
                _surrogate_factor(sur, dts, x_all, t0, t1, theta, out=sg_buf[:K])
            for t in range(t1 - 1, t0 - 1, -1):
                r = t - t0
                if t == T - 1:
                    if g_spikes is None:
                        gradf[t].zero_()
                    else:
                        torch.mul(gf[r], sgf[r], out=gradf[t])
                        if scale != 1.0:
                            gradf[t].mul_(scale)
                    if g_v is not None:
                        grad[t].add_(g_v)
                elif g_spikes is None:
                    torch.mul(gradf[t + 1], leak, out=gradf[t])
                elif leak == 1.0:
                    torch.addcmul(gradf[t + 1], gf[r], sgf[r], value=scale, out=gradf[t])
                else:
                    torch.mul(gradf[t + 1], leak, out=gradf[t])
                    gradf[t].addcmul_(gf[r], sgf[r], value=scale)
            t1 = t0
        return grad


def _surrogate_factor(sur, dts, x_all, t0: int, t1: int, theta, out: torch.Tensor) -> None:
    """out = surrogate'(x, dt) / theta for steps t0..t1-1 (any surrogate; the backward's per-block evaluation).
    A surrogate that ignores dt gets x in its place, one that ignores x gets dt."""
    dt = _dt_values(dts[t0:t1], out.dtype) if dts is not None else None
    x = x_all[t0:t1] if x_all is not None else dt
    out.copy_(sur.grad(x, dt if dt is not None else x) / theta)


def _run_subtractive(currents: torch.Tensor, params: SubtractiveParams, spike_fn, pool: int = 0,
                     mask: Optional[torch.Tensor] = None) -> tuple:
    theta, leak = _theta(params, currents), float(params.leak)
    if mask is not None:
        mask = mask.detach().to(currents.dtype)
    if torch.is_grad_enabled() and currents.requires_grad:
        spikes, v, dt, count = _SubtractiveRun.apply(currents, theta, leak, spike_fn, int(pool), mask)
    else:
        with torch.no_grad():
            spikes, v, dt, _, _, count = _subtractive_forward(currents, theta, leak, False, int(pool), False, mask)
    return spikes, NeuronState(v, torch.zeros_like(v), dt, count)


# -- the same, compiled (toolchain/native/neuron_kernels.c) ---------------------------------------------------

def _native_ok(x: torch.Tensor, theta, T: int) -> bool:
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not isinstance(theta, torch.Tensor)
            and T < 255 and native.library() is not None)


def _pool_geometry(shape, layout, k: int) -> Optional[tuple]:
    """(W, C) of the kernel's pooling blocks for channels-last or contiguous (T, B, C, H, W) buffers, else None."""
    if len(shape) != 5 or shape[3] % k or shape[4] % k:
        return None
    _, B, C, H, W = shape
    if _channels_last(shape, layout):
        return W, C
    return (W, 1) if tuple(layout[1:]) == (C * H * W, H * W, W, 1) else None


def _pooled_strides(shape, k: int, layout) -> tuple:
    """The strides of `_pooled(T, shape, k, layout, ...)`."""
    _, B, C, H, W = shape
    Hp, Wp = H // k, W // k
    if _channels_last(shape, layout):
        return (B * Hp * Wp * C, Hp * Wp * C, 1, Wp * C, C)
    return (B * C * Hp * Wp, C * Hp * Wp, Hp * Wp, Wp, 1)


def _in_layout(x: torch.Tensor, strides: tuple, make) -> torch.Tensor:
    """x itself if its strides are `strides` (those of its size-1 dimensions aside: they address nothing), else a
    copy into `make()` (a buffer with those strides)."""
    same = all(size == 1 or a == b for size, a, b in zip(x.shape, x.stride(), strides))
    return x if same and x.dim() == len(strides) else make().copy_(x)


def _native_forward(currents, theta, leak, keep_x, pool, need_dts, mask=None):
    T, shape = currents.shape[0], tuple(currents.shape)
    if not _native_ok(currents, theta, T):
        return None
    layout = _layout(currents)
    geometry = _pool_geometry(shape, layout, pool) if pool else (1, 1)
    if geometry is None:
        return None
    cur = _in_layout(currents, layout, lambda: _buffer(T, shape, layout, currents))
    out = _pooled(T, shape, pool, layout, currents) if pool else _buffer(T, shape, layout, currents)
    dts = _buffer(T, shape, layout, currents, torch.uint8) if need_dts else None
    x_all = _buffer(T, shape, layout, currents) if keep_x else None
    v = _buffer(1, shape, layout, currents)[0]
    dt = torch.empty_like(v)
    count = torch.empty_strided(v.shape, v.stride(), dtype=torch.int32)
    if mask is not None:
        mask = _in_layout(mask, layout[1:], lambda: _buffer(1, shape, layout, currents)[0])
    c = None if keep_x else _spike_boundary(theta, currents.dtype, "cpu")
    status = native.library().snn_subtractive_forward(
        int(currents.dtype == torch.float64), T, layout[0], geometry[0], geometry[1], int(pool or 1),
        cur.data_ptr(), out.data_ptr(), _ptr(dts), _ptr(x_all), v.data_ptr(), dt.data_ptr(), _ptr(mask),
        count.data_ptr(), None, 0, None, float(theta), float(c if c is not None else 0.0), int(c is not None), float(leak), _threads())
    if status != 0:
        return None
    return out, v, dt, dts, x_all, count


def _native_backward(ctx, g_spikes, g_v, dts, x_all, mask=None):
    theta, leak, sur, k = ctx.theta, ctx.leak, ctx.surrogate, ctx.pool
    shape, layout = ctx.shape, ctx.layout
    T, n = shape[0], layout[0]
    like = g_spikes if g_spikes is not None else g_v
    if not _native_ok(like, theta, T) or (g_v is not None and g_v.dtype != like.dtype):
        return None
    geometry = _pool_geometry(shape, layout, k) if k else (1, 1)
    if geometry is None:
        return None
    stdb = sur.name == "stdb"
    if g_spikes is not None and ((stdb and dts is None) or (not stdb and x_all is None and dts is None)):
        return None
    grad = _buffer(T, shape, layout, like)
    if g_spikes is not None:
        if k:
            g_spikes = _in_layout(g_spikes, _pooled_strides(shape, k, layout), lambda: _pooled(T, shape, k, layout, like))
        else:
            g_spikes = _in_layout(g_spikes, layout, lambda: _buffer(T, shape, layout, like))
    if g_v is not None:
        g_v = _in_layout(g_v, layout[1:], lambda: _buffer(1, shape, layout, like)[0])
    if mask is not None:
        mask = _in_layout(mask, layout[1:], lambda: _buffer(1, shape, layout, like)[0])
    lib = native.library()

    def call(t_lo, t_hi, lut, sg, scale):
        return lib.snn_subtractive_backward(
            int(like.dtype == torch.float64), T, n, geometry[0], geometry[1], int(k or 1), t_lo, t_hi, 0,
            _ptr(g_spikes), _ptr(g_v), _ptr(dts), _ptr(lut), _ptr(sg), _ptr(mask), grad.data_ptr(), None, float(scale),
            float(leak), _threads())

    if g_spikes is None or stdb:        # exp(-beta * dt) from a table of the T values dt can take
        lut = None if g_spikes is None else stdb_table(sur.beta, like.dtype)
        return grad if call(0, T, lut, None, sur.alpha / theta if stdb else 1.0) == 0 else None
    block = max(1, min(T, _BLOCK // max(1, n)))   # any other surrogate: evaluated in torch a block of steps at a time
    sg = _buffer(block, shape, layout, like)
    t1 = T
    while t1 > 0:
        t0 = max(0, t1 - block)
        _surrogate_factor(sur, dts, x_all, t0, t1, theta, out=sg[:t1 - t0])
        if call(t0, t1, None, sg, 1.0) != 0:
            return None
        t1 = t0
    return grad


def _threads() -> int:
    """The kernels' threads: torch's (SNNTC_KERNEL_THREADS overrides)."""
    return int(os.environ.get("SNNTC_KERNEL_THREADS", torch.get_num_threads()))


def _ptr(x: Optional[torch.Tensor]) -> Optional[int]:
    return None if x is None else x.data_ptr()


# -- the fused CUBA neuron (quantization-aware training) ---------------------------------------------------------
#
# Forward, per step t, exactly the ops of `cuba_step` (without autograd; S = 2**23 - 1, vth64 = 64 vth):
#     u = wrap24(decay(u, i_decay) + 64 a[t]);  v1 = decay(v, v_decay) + u (+ 64 b);  v2 = clamp(v1, -S, S)
#     x = v2 / vth64 - 1;  s[t] = 1[x > 0];  v = v2 (1 - s[t]);  dt = 0 where s[t], else dt + 1
# Backward: the gradient autograd takes through that unrolled loop. The rounding (trunc, straight-through) and
# the 24-bit wrap (torch.where between u and u -+ 2**24) pass the gradient unchanged, the clamp passes it where
# -S <= v1 <= S (bounds included, as torch.clamp's backward), the reset's (1 - s) is detached. Per step, last
# first, with gV, gU the gradients carried back into v and u (at the last step: those of the final state):
#     gv2 = gV (1 - s[t]) + (g_s[t] f[t]) / vth64,     f = surrogate'(x[t], dt[t])
#     gv1 = gv2 1[-S <= v1 <= S];   g_b += gv1 (the bias's gradient: 64 times its sum over broadcast dimensions)
#     gpre = gU + gv1;   g_a[t] = 64 gpre
#     gV = r_v gv1;   gU = r_i gpre        (r = (4096 - decay) / 4096; decay 0: 1, decay 4096: 0, no gradient)
# Saved for the backward: one byte per neuron and step (bit 0 the spike, bit 1 inside the clamp), and what the
# surrogate needs: dt (one byte for T < 255) for STDB, x for the others.

_SPIKED, _INSIDE = 1, 2            # the saved flags' bits


def _cuba_fusable(currents, step, params, spike_fn) -> bool:
    from .surrogates import SURROGATES, Surrogate
    if step is not cuba_step or not isinstance(params, CubaParams) or params.exact:
        return False
    if type(spike_fn) is not Surrogate or spike_fn.name not in SURROGATES:
        return False
    if not currents.is_floating_point() or currents.dim() < 2 or currents.shape[0] < 1:
        return False
    if not isinstance(params.vth, (int, float)) or not isinstance(params.i_decay, int) \
            or not isinstance(params.v_decay, int):
        return False
    b = params.bias
    if b is None:
        return True
    return (isinstance(b, torch.Tensor) and b.dtype == currents.dtype and b.device == currents.device
            and torch.broadcast_shapes(b.shape, currents.shape[1:]) == currents.shape[1:])


def _decay_factor(decay: int) -> float:
    """d decay(x) / d x as the loop's autograd takes it: 1 (no decay), 0 (full decay), else (4096 - decay) / 4096."""
    if decay == 0:
        return 1.0
    return 0.0 if decay >= DECAY_UNITY else (DECAY_UNITY - decay) / DECAY_UNITY


def _run_cuba(currents: torch.Tensor, params: CubaParams, spike_fn) -> tuple:
    bias = params.bias
    if torch.is_grad_enabled() and (currents.requires_grad or (bias is not None and bias.requires_grad)):
        spikes, v, u, dt = _CubaRun.apply(currents, bias, params, spike_fn)
    else:
        with torch.no_grad():
            spikes, v, u, dt, *_ = _cuba_forward(currents, params, False, False, False)
    return spikes, NeuronState(v, u, dt)


class _CubaRun(torch.autograd.Function):
    @staticmethod
    def forward(ctx, currents, bias, params, surrogate):
        keep_x = surrogate.name not in _DT_ONLY
        keep_dts = surrogate.needs_dt or not keep_x
        spikes, v, u, dt, flags, dts, x_all = _cuba_forward(currents, params, True, keep_x, keep_dts)
        ctx.save_for_backward(flags, dts, x_all)
        ctx.params, ctx.surrogate = params, surrogate
        ctx.shape, ctx.layout = tuple(currents.shape), _layout(currents)
        ctx.bias_shape = None if bias is None else tuple(bias.shape)
        ctx.mark_non_differentiable(dt)
        ctx.set_materialize_grads(False)     # unused outputs (the final state, or the readout's spikes) get None
        return spikes, v, u, dt

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_spikes, g_v, g_u, _g_dt):
        flags, dts, x_all = ctx.saved_tensors
        need_bias = ctx.bias_shape is not None and ctx.needs_input_grad[1]
        grad, g_b = _cuba_backward(ctx, g_spikes, g_v, g_u, flags, dts, x_all, need_bias)
        g_bias = g_b.sum_to_size(ctx.bias_shape) * 64 if need_bias else None
        return grad, g_bias, None, None


def _cuba_forward(currents, params: CubaParams, keep_flags: bool, keep_x: bool, keep_dts: bool):
    """The loop without autograd: compiled (`_cuba_native_forward`) where it applies, else torch ops. Returns
    (spikes, final v, u, dt, flags or None, dts or None, x or None), all (T, ...) buffers in `_layout(currents)`."""
    res = _cuba_native_forward(currents, params, keep_flags, keep_x, keep_dts)
    return res if res is not None else _cuba_torch_forward(currents, params, keep_flags, keep_x, keep_dts)


def _cuba_torch_forward(currents, params: CubaParams, keep_flags: bool, keep_x: bool, keep_dts: bool):
    """The loop in torch ops, `cuba_step`'s own (`_cuba_integrate`), recording what the backward needs."""
    T, shape = currents.shape[0], tuple(currents.shape)
    layout = _layout(currents)
    out = _buffer(T, shape, layout, currents)
    flags = _buffer(T, shape, layout, currents, torch.uint8) if keep_flags else None
    dts = _buffer(T, shape, layout, currents, _count_dtype(T)) if keep_dts else None
    x_all = _buffer(T, shape, layout, currents) if keep_x else None
    state = initial_state(_buffer(1, shape, layout, currents)[0])
    vth = params.vth * 64
    for t in range(T):
        v, u = _cuba_integrate(currents[t], state, params)
        if keep_flags:
            torch.logical_and(v >= -STATE_MAX, v <= STATE_MAX, out=flags[t])
        v = torch.clamp(v, -STATE_MAX, STATE_MAX)
        x = v / vth - 1.0
        s = torch.gt(x, 0, out=out[t])
        if keep_flags:
            flags[t].mul_(_INSIDE).add_(s.to(torch.uint8))
        if keep_x:
            x_all[t].copy_(x)
        if keep_dts:
            dts[t].copy_(state.dt.clamp(max=_never(dts.dtype)))     # no spike yet (inf): the NEVER code
        state = NeuronState(v * (1.0 - s), u, _next_dt(s, state.dt))
    return out, state.v, state.u, state.dt, flags, dts, x_all


def _cuba_factor(sur, dts, x_all, dtype) -> torch.Tensor:
    """surrogate'(x, dt) for all steps in `dtype`, as the spike function's backward computes it (dt in x's place
    where x is not kept, as in `_surrogate_factor`)."""
    dt = None if dts is None else _dt_values(dts, dtype)
    x = x_all if x_all is not None else dt
    return sur.grad(x, dt if dt is not None else x)


def _cuba_backward(ctx, g_spikes, g_v, g_u, flags, dts, x_all, need_bias: bool):
    """(gradient of the currents (T, ...), sum over steps of gv1 (...) or None); see the section's comment."""
    res = _cuba_native_backward(ctx, g_spikes, g_v, g_u, flags, dts, x_all, need_bias)
    return res if res is not None else _cuba_torch_backward(ctx, g_spikes, g_v, g_u, flags, dts, x_all, need_bias)


def _cuba_torch_backward(ctx, g_spikes, g_v, g_u, flags, dts, x_all, need_bias: bool):
    p, shape, layout = ctx.params, ctx.shape, ctx.layout
    like = next(g for g in (g_spikes, g_v, g_u) if g is not None)
    T = shape[0]
    grad = _buffer(T, shape, layout, like)
    zero = _buffer(1, shape, layout, like)[0].zero_()
    f = None if g_spikes is None else _cuba_factor(ctx.surrogate, dts, x_all, like.dtype)
    vth, r_v, r_u = p.vth * 64, _decay_factor(p.v_decay), _decay_factor(p.i_decay)
    g_b = zero.clone() if need_bias else None
    gV = zero if g_v is None else g_v
    gU = zero if g_u is None else g_u
    for t in range(T - 1, -1, -1):
        fl = flags[t]
        g = gV * (1.0 - (fl & _SPIKED).to(like.dtype))
        if g_spikes is not None:
            g = g + g_spikes[t] * f[t] / vth
        g = torch.where((fl & _INSIDE) > 0, g, zero)
        if g_b is not None:
            g_b.add_(g)
        gpre = gU + g
        torch.mul(gpre, 64, out=grad[t])
        gV, gU = g * r_v, gpre * r_u
    return grad, g_b


# -- the same, compiled ---------------------------------------------------------------------------------------------

def _cuba_native_forward(currents, params: CubaParams, keep_flags: bool, keep_x: bool, keep_dts: bool):
    T, shape = currents.shape[0], tuple(currents.shape)
    if not _native_ok(currents, float(params.vth), T):
        return None
    layout = _layout(currents)
    cur = _in_layout(currents, layout, lambda: _buffer(T, shape, layout, currents))
    out = _buffer(T, shape, layout, currents)
    flags = _buffer(T, shape, layout, currents, torch.uint8) if keep_flags else None
    dts = _buffer(T, shape, layout, currents, torch.uint8) if keep_dts else None
    x_all = _buffer(T, shape, layout, currents) if keep_x else None
    one = _buffer(1, shape, layout, currents)[0]
    v, u, dt = torch.empty_like(one), torch.empty_like(one), torch.empty_like(one)
    bias = None
    if params.bias is not None:         # 64 b, as the loop computes it, laid out like one step of the currents
        bias = torch.empty_like(one).copy_((params.bias.detach() * 64).expand(shape[1:]))
    status = native.library().snn_cuba_forward(
        int(currents.dtype == torch.float64), T, layout[0], cur.data_ptr(), _ptr(bias), out.data_ptr(),
        _ptr(flags), _ptr(dts), _ptr(x_all), v.data_ptr(), u.data_ptr(), dt.data_ptr(), float(params.vth * 64),
        int(params.i_decay), int(params.v_decay), _threads())
    if status != 0:
        return None
    return out, v, u, dt, flags, dts, x_all


def _cuba_native_backward(ctx, g_spikes, g_v, g_u, flags, dts, x_all, need_bias: bool):
    p, shape, layout = ctx.params, ctx.shape, ctx.layout
    like = next(g for g in (g_spikes, g_v, g_u) if g is not None)
    T = shape[0]
    if not _native_ok(like, float(p.vth), T) or any(g is not None and g.dtype != like.dtype for g in (g_v, g_u)):
        return None
    sur, lut, f = ctx.surrogate, None, None
    if g_spikes is not None:
        g_spikes = _in_layout(g_spikes, layout, lambda: _buffer(T, shape, layout, like))
        if x_all is None:           # a function of dt alone: from a table of the 256 dt codes (NEVER: inf)
            steps = torch.arange(NEVER + 1, dtype=like.dtype)
            steps[NEVER] = math.inf
            lut = sur.grad(steps, steps).contiguous()
        else:
            f = _in_layout(_cuba_factor(sur, dts, x_all, like.dtype), layout, lambda: _buffer(T, shape, layout, like))
    g_v, g_u = (None if g is None else _in_layout(g, layout[1:], lambda: _buffer(1, shape, layout, like)[0])
                for g in (g_v, g_u))
    grad = _buffer(T, shape, layout, like)
    g_b = _buffer(1, shape, layout, like)[0] if need_bias else None
    status = native.library().snn_cuba_backward(
        int(like.dtype == torch.float64), T, layout[0], _ptr(g_spikes), _ptr(g_v), _ptr(g_u), flags.data_ptr(),
        _ptr(dts), _ptr(lut), _ptr(f), grad.data_ptr(), _ptr(g_b), float(p.vth * 64), int(p.i_decay),
        int(p.v_decay), _threads())
    if status != 0:
        return None
    return grad, g_b

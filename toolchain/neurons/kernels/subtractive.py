"""The fused IF / LIF neuron (reset by subtraction): all T steps without autograd, then the hand-derived gradient of
the unrolled loop (`_SubtractiveRun`); the same spikes, final state and gradients as autograd through
toolchain.neurons.subtractive.subtractive_step, in a fraction of the time and memory. It also applies a following
average pool or dropout mask as the neurons fire. The loops run compiled (native/, through native.calls) where
`layout.native_ok` holds and the kernel accepts its arguments, else in torch ops (same results)."""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..base import NeuronState
from .layout import (BLOCK, DT_ONLY, buffer, count_dtype, flat, in_layout, native_ok, never_code, pool_geometry,
                     pooled_buffer, pooled_strides, spike_boundary, stdb_table, step_layout, surrogate_factor)
from .native import calls


def accepts(currents: torch.Tensor, params, pool: int = 0, mask: Optional[torch.Tensor] = None) -> bool:
    """Whether the fused run takes these arguments: a scalar leak, and a scalar threshold or a tensor one without a
    gradient on the currents' device (any pool or dropout mask)."""
    if not isinstance(params.leak, (int, float)):
        return False
    th = params.threshold
    if isinstance(th, torch.Tensor):
        return not th.requires_grad and th.is_floating_point() and th.device == currents.device
    return isinstance(th, (int, float))


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


def _theta(params, like: torch.Tensor):
    th = params.threshold
    if isinstance(th, torch.Tensor):
        th = th.to(like.dtype)
        if th.numel() == 1:
            return float(th.item())
        return th
    return float(th)


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
    layout = step_layout(currents)
    n = layout[0]
    block = max(1, min(T, BLOCK // max(1, n)))
    if pool:
        B, C, H, W = shape[1:]
        out = pooled_buffer(T, shape, pool, layout, currents)
        spk_buf = buffer(block, shape, layout, currents)
    else:
        out = buffer(T, shape, layout, currents)
    last = buffer(T, shape, layout, currents, count_dtype(T))      # becomes dts
    x_all = buffer(T, shape, layout, currents) if keep_x else None
    v = buffer(1, shape, layout, currents)[0].zero_()
    scalar = not isinstance(theta, torch.Tensor)
    c = spike_boundary(theta, currents.dtype, str(currents.device)) if scalar and not keep_x else None
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
    lastf = flat(last)
    steps = torch.arange(T + 1, device=last.device, dtype=last.dtype).reshape(T + 1, 1)
    lastf.mul_(steps[1:])
    for t in range(1, T):
        torch.maximum(lastf[t - 1], lastf[t], out=lastf[t])
    dt = (T - last[-1].to(torch.int32)).to(currents.dtype).masked_fill_(last[-1] == 0, math.inf)
    never = never_code(last.dtype)
    for t in range(T - 1, 0, -1):
        torch.sub(steps[t], lastf[t - 1], out=lastf[t])
        lastf[t].masked_fill_(lastf[t - 1] == 0, never)
    lastf[0].fill_(never)
    return out, v, dt, last, x_all, count


class _SubtractiveRun(torch.autograd.Function):
    @staticmethod
    def forward(ctx, currents, theta, leak, surrogate, pool, mask):
        needs_x = surrogate.name not in DT_ONLY
        needs_dt = surrogate.needs_dt or surrogate.name in DT_ONLY
        spikes, v, dt, dts, x_all, count = _subtractive_forward(currents, theta, leak, needs_x, pool, needs_dt, mask)
        ctx.save_for_backward(dts if needs_dt else None, x_all, mask)   # freed after the backward (unless retained)
        ctx.theta, ctx.leak, ctx.surrogate, ctx.pool = theta, leak, surrogate, pool
        ctx.shape, ctx.layout = tuple(currents.shape), step_layout(currents)
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
        grad = buffer(T, shape, layout, like)
        gradf = flat(grad)
        block = max(1, min(T, BLOCK // max(1, n)))
        scalar = not isinstance(theta, torch.Tensor)
        # STDB, d spike / d x = alpha * exp(-beta * dt) (surrogates.stdb_grad): exp(-beta * dt) is evaluated in place
        # per block and alpha / theta goes into the multiply-add; any other surrogate is called as it is, per block.
        stdb = sur.name == "stdb" and scalar
        scale = sur.alpha / theta if stdb else 1.0
        sg_buf = buffer(block, shape, layout, grad)
        g_buf = buffer(block, shape, layout, grad) if g_spikes is not None else None
        if k and g_spikes is not None:                   # the pooled gradient, laid out like the un-pooled one
            gp_buf = pooled_buffer(block, shape, k, layout, grad)
        same_layout = g_spikes is not None and not k and g_spikes.stride() == grad.stride()
        t1 = T
        while t1 > 0:
            t0 = max(0, t1 - block)
            K = t1 - t0
            # the incoming gradient for these steps, in the buffers' layout
            if g_spikes is None:
                gf = flat(g_buf if g_buf is not None else sg_buf)[:0]
            elif k:                                      # un-pool: exactly avg_pool2d's own backward
                g4 = g_buf[:K].reshape((-1,) + shape[2:])
                gp = g_spikes[t0:t1].reshape((-1,) + g_spikes.shape[2:])
                if gp.stride() != gp_buf[:K].reshape(gp.shape).stride():
                    gp = gp_buf[:K].reshape(gp.shape).copy_(gp)          # in the layout of g4, else the kernel copies
                torch.ops.aten.avg_pool2d_backward.grad_input(gp, g4, [k, k], [k, k], [0, 0], False, True, None,
                                                              grad_input=g4)
                gf = flat(g_buf[:K])
            elif same_layout:                            # read in place
                gf = flat(g_spikes[t0:t1])
            else:
                g_buf[:K].copy_(g_spikes[t0:t1])
                gf = flat(g_buf[:K])
            sgf = flat(sg_buf[:K])
            if g_spikes is None:
                pass
            elif stdb:                                   # in preallocated memory
                sgf.copy_(flat(dts)[t0:t1])
                sgf.mul_(-sur.beta)
                sgf.exp_()
                sgf.masked_fill_(flat(dts)[t0:t1] == never_code(dts.dtype), 0.0)     # no spike yet: no gradient
            else:
                surrogate_factor(sur, dts, x_all, t0, t1, theta, out=sg_buf[:K])
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


def run_subtractive(currents: torch.Tensor, params, spike_fn, pool: int = 0,
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


def _native_forward(currents, theta, leak, keep_x, pool, need_dts, mask=None):
    T, shape = currents.shape[0], tuple(currents.shape)
    if not native_ok(currents, theta, T):
        return None
    layout = step_layout(currents)
    geometry = pool_geometry(shape, layout, pool) if pool else (1, 1)
    if geometry is None:
        return None
    cur = in_layout(currents, layout, lambda: buffer(T, shape, layout, currents))
    out = pooled_buffer(T, shape, pool, layout, currents) if pool else buffer(T, shape, layout, currents)
    dts = buffer(T, shape, layout, currents, torch.uint8) if need_dts else None
    x_all = buffer(T, shape, layout, currents) if keep_x else None
    v = buffer(1, shape, layout, currents)[0]
    dt = torch.empty_like(v)
    count = torch.empty_strided(v.shape, v.stride(), dtype=torch.int32)
    if mask is not None:
        mask = in_layout(mask, layout[1:], lambda: buffer(1, shape, layout, currents)[0])
    c = None if keep_x else spike_boundary(theta, currents.dtype, "cpu")
    status = calls.SubtractiveForward(
        T, layout[0], cur, out, v, count, theta, leak, boundary=c, dts=dts, x=x_all, dt=dt, mask=mask,
        width=geometry[0], channels=geometry[1], pool=pool).run()
    if status != 0:
        return None
    return out, v, dt, dts, x_all, count


def _native_backward(ctx, g_spikes, g_v, dts, x_all, mask=None):
    theta, leak, sur, k = ctx.theta, ctx.leak, ctx.surrogate, ctx.pool
    shape, layout = ctx.shape, ctx.layout
    T, n = shape[0], layout[0]
    like = g_spikes if g_spikes is not None else g_v
    if not native_ok(like, theta, T) or (g_v is not None and g_v.dtype != like.dtype):
        return None
    geometry = pool_geometry(shape, layout, k) if k else (1, 1)
    if geometry is None:
        return None
    stdb = sur.name == "stdb"
    if g_spikes is not None and ((stdb and dts is None) or (not stdb and x_all is None and dts is None)):
        return None
    grad = buffer(T, shape, layout, like)
    if g_spikes is not None:
        if k:
            g_spikes = in_layout(g_spikes, pooled_strides(shape, k, layout), lambda: pooled_buffer(T, shape, k, layout, like))
        else:
            g_spikes = in_layout(g_spikes, layout, lambda: buffer(T, shape, layout, like))
    if g_v is not None:
        g_v = in_layout(g_v, layout[1:], lambda: buffer(1, shape, layout, like)[0])
    if mask is not None:
        mask = in_layout(mask, layout[1:], lambda: buffer(1, shape, layout, like)[0])
    def call(t_lo, t_hi, lut, sg, scale):
        return calls.SubtractiveBackward(
            T, n, grad, t_lo, t_hi, leak, scale=scale, g_spikes=g_spikes, g_v=g_v, dts=dts, lut=lut, factor=sg,
            mask=mask, width=geometry[0], channels=geometry[1], pool=k).run()

    if g_spikes is None or stdb:        # exp(-beta * dt) from a table of the T values dt can take
        lut = None if g_spikes is None else stdb_table(sur.beta, like.dtype)
        return grad if call(0, T, lut, None, sur.alpha / theta if stdb else 1.0) == 0 else None
    block = max(1, min(T, BLOCK // max(1, n)))   # any other surrogate: evaluated in torch a block of steps at a time
    sg = buffer(block, shape, layout, like)
    t1 = T
    while t1 > 0:
        t0 = max(0, t1 - block)
        surrogate_factor(sur, dts, x_all, t0, t1, theta, out=sg[:t1 - t0])
        if call(t0, t1, None, sg, 1.0) != 0:
            return None
        t1 = t0
    return grad

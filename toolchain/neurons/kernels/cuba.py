"""The fused quantization-aware CUBA neuron (Loihi's current-based LIF, reset to zero, in training): all T steps
without autograd, then the hand-derived gradient of the unrolled loop of toolchain.neurons.loihi_cuba.cuba_step
(`_CubaRun`). The loops run compiled (native/, through native.calls) where `layout.native_ok` holds and the kernel
accepts its arguments, else in torch ops (the step's own arithmetic, `params.integrate`)."""
from __future__ import annotations

import math
from typing import Optional

import torch

from ...quantization.fixed_point import DECAY_UNITY, STATE_MAX
from ..base import NeuronState, initial_state, next_dt
from .layout import DT_ONLY, NEVER, buffer, count_dtype, dt_values, in_layout, native_ok, never_code, step_layout
from .native import calls


def accepts(currents: torch.Tensor, params, pool: int = 0, mask: Optional[torch.Tensor] = None) -> bool:
    """Whether the fused run takes these arguments: not the exact (integer) form, no pool or dropout mask, a scalar
    vth, integer decays, and no bias or one of the currents' dtype and device that broadcasts to a step."""
    if params.exact or pool or mask is not None:
        return False
    if not isinstance(params.vth, (int, float)) or not isinstance(params.i_decay, int) \
            or not isinstance(params.v_decay, int):
        return False
    b = params.bias
    if b is None:
        return True
    return (isinstance(b, torch.Tensor) and b.dtype == currents.dtype and b.device == currents.device
            and torch.broadcast_shapes(b.shape, currents.shape[1:]) == currents.shape[1:])


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


def _decay_factor(decay: int) -> float:
    """d decay(x) / d x as the loop's autograd takes it: 1 (no decay), 0 (full decay), else (4096 - decay) / 4096."""
    if decay == 0:
        return 1.0
    return 0.0 if decay >= DECAY_UNITY else (DECAY_UNITY - decay) / DECAY_UNITY


def run_cuba(currents: torch.Tensor, params, spike_fn, pool: int = 0, mask=None) -> tuple:
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
        keep_x = surrogate.name not in DT_ONLY
        keep_dts = surrogate.needs_dt or not keep_x
        spikes, v, u, dt, flags, dts, x_all = _cuba_forward(currents, params, True, keep_x, keep_dts)
        ctx.save_for_backward(flags, dts, x_all)
        ctx.params, ctx.surrogate = params, surrogate
        ctx.shape, ctx.layout = tuple(currents.shape), step_layout(currents)
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


def _cuba_forward(currents, params, keep_flags: bool, keep_x: bool, keep_dts: bool):
    """The loop without autograd: compiled (`_cuba_native_forward`) where it applies, else torch ops. Returns
    (spikes, final v, u, dt, flags or None, dts or None, x or None), all (T, ...) buffers in `step_layout(currents)`."""
    res = _cuba_native_forward(currents, params, keep_flags, keep_x, keep_dts)
    return res if res is not None else _cuba_torch_forward(currents, params, keep_flags, keep_x, keep_dts)


def _cuba_torch_forward(currents, params, keep_flags: bool, keep_x: bool, keep_dts: bool):
    """The loop in torch ops, `cuba_step`'s own (`params.integrate`), recording what the backward needs."""
    T, shape = currents.shape[0], tuple(currents.shape)
    layout = step_layout(currents)
    out = buffer(T, shape, layout, currents)
    flags = buffer(T, shape, layout, currents, torch.uint8) if keep_flags else None
    dts = buffer(T, shape, layout, currents, count_dtype(T)) if keep_dts else None
    x_all = buffer(T, shape, layout, currents) if keep_x else None
    state = initial_state(buffer(1, shape, layout, currents)[0])
    vth = params.vth * 64
    for t in range(T):
        v, u = params.integrate(currents[t], state)
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
            dts[t].copy_(state.dt.clamp(max=never_code(dts.dtype)))     # no spike yet (inf): the NEVER code
        state = NeuronState(v * (1.0 - s), u, next_dt(s, state.dt))
    return out, state.v, state.u, state.dt, flags, dts, x_all


def _cuba_factor(sur, dts, x_all, dtype) -> torch.Tensor:
    """surrogate'(x, dt) for all steps in `dtype`, as the spike function's backward computes it (dt in x's place
    where x is not kept, as in `surrogate_factor`)."""
    dt = None if dts is None else dt_values(dts, dtype)
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
    grad = buffer(T, shape, layout, like)
    zero = buffer(1, shape, layout, like)[0].zero_()
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

def _cuba_native_forward(currents, params, keep_flags: bool, keep_x: bool, keep_dts: bool):
    T, shape = currents.shape[0], tuple(currents.shape)
    if not native_ok(currents, float(params.vth), T):
        return None
    layout = step_layout(currents)
    cur = in_layout(currents, layout, lambda: buffer(T, shape, layout, currents))
    out = buffer(T, shape, layout, currents)
    flags = buffer(T, shape, layout, currents, torch.uint8) if keep_flags else None
    dts = buffer(T, shape, layout, currents, torch.uint8) if keep_dts else None
    x_all = buffer(T, shape, layout, currents) if keep_x else None
    one = buffer(1, shape, layout, currents)[0]
    v, u, dt = torch.empty_like(one), torch.empty_like(one), torch.empty_like(one)
    bias = None
    if params.bias is not None:         # 64 b, as the loop computes it, laid out like one step of the currents
        bias = torch.empty_like(one).copy_((params.bias.detach() * 64).expand(shape[1:]))
    status = calls.CubaForward(T, layout[0], cur, out, v, u, dt, float(params.vth * 64), params.i_decay,
                               params.v_decay, bias64=bias, flags=flags, dts=dts, x=x_all).run()
    if status != 0:
        return None
    return out, v, u, dt, flags, dts, x_all


def _cuba_native_backward(ctx, g_spikes, g_v, g_u, flags, dts, x_all, need_bias: bool):
    p, shape, layout = ctx.params, ctx.shape, ctx.layout
    like = next(g for g in (g_spikes, g_v, g_u) if g is not None)
    T = shape[0]
    if not native_ok(like, float(p.vth), T) or any(g is not None and g.dtype != like.dtype for g in (g_v, g_u)):
        return None
    sur, lut, f = ctx.surrogate, None, None
    if g_spikes is not None:
        g_spikes = in_layout(g_spikes, layout, lambda: buffer(T, shape, layout, like))
        if x_all is None:           # a function of dt alone: from a table of the 256 dt codes (NEVER: inf)
            steps = torch.arange(NEVER + 1, dtype=like.dtype)
            steps[NEVER] = math.inf
            lut = sur.grad(steps, steps).contiguous()
        else:
            f = in_layout(_cuba_factor(sur, dts, x_all, like.dtype), layout, lambda: buffer(T, shape, layout, like))
    g_v, g_u = (None if g is None else in_layout(g, layout[1:], lambda: buffer(1, shape, layout, like)[0])
                for g in (g_v, g_u))
    grad = buffer(T, shape, layout, like)
    g_b = buffer(1, shape, layout, like)[0] if need_bias else None
    status = calls.CubaBackward(T, layout[0], grad, flags, float(p.vth * 64), p.i_decay, p.v_decay,
                                g_spikes=g_spikes, g_v=g_v, g_u=g_u, dts=dts, lut=lut, factor=f, g_bias=g_b).run()
    if status != 0:
        return None
    return grad, g_b

"""Runs of spiking layers (synapse -> IF/LIF neurons -> optional pool or dropout), a block of time steps at a time.

`SnnModel` otherwise runs layer by layer over all T steps at once: each layer's synaptic currents for all T
steps (168 MB for the first conv of VGG5 at T = 20, batch 32), their gradient, and the float spikes the next
layer saves are whole tensors in memory, and each is a fresh allocation whose pages the kernel zeroes on first
touch. Here a run of conv stages goes block of steps by block of steps through all its layers (the neurons
carry their state, v and the steps since the last spike, from one block to the next), and the backward pass
goes block by block in reverse (the neurons carry the gradient of v back). Only block-sized currents,
gradients and float spikes ever exist; what the backward needs of the whole run is kept compact: the steps since
the last spike (1 byte per neuron and step, as the fused neuron keeps it anyway) and each layer's output spikes
as 1-byte integers (a pooled spike is a count of k*k; a dropped-out spike is 0/1 times the mask), decoded
exactly to the floats the forward pass used.

The mathematics is the layer-by-layer model's: identical spikes, counts and logits, and the same gradients
(the weight gradient is summed block by block, so it can differ from the one-call sum in the last bits).
A linear stage runs alone, in blocks of up to 16M currents (all steps at once for VGG5 up to T = 128): its
currents are small, and its weight gradient (the largest tensor of VGG5) is then made once and handed to the
optimizer at once, before the next layer's exists. Blocks of a conv run hold up to 4M currents (2 steps of
VGG5's first conv at batch 32): measured on VGG5, 1M-value blocks ran slower (more, smaller convolutions) and
8M-16M ones no faster.

The neurons run the compiled kernels (native/, through native.calls); where they are not available (no C
compiler, CUDA, T >= 255: toolchain.neurons.run.execution_path), `SnnModel` runs layer by layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..surrogates import Surrogate
from .layout import (DT_ONLY, buffer, in_layout, pool_geometry, pooled_buffer, pooled_strides, spike_boundary,
                     stdb_table, step_layout, surrogate_factor)
from .native import KernelError, calls

class RetainGraphError(RuntimeError):
    """A second backward pass through a run whose saved state the first one freed."""


CONV_BLOCK_VALUES = 1 << 22     # currents per block of steps in a run of conv stages (16 MB in float32)
LINEAR_BLOCK_VALUES = 1 << 24   # the same for a linear stage: all steps at once up to T*B*out = 16M


@dataclass(frozen=True)
class Stage:
    """One spiking layer: `synapse` (nn.Conv2d / nn.Linear) feeding neurons with threshold `theta` and `leak`,
    their spikes average-pooled k x k (`pool` = k) or multiplied by a dropout `mask` (B, ...) as they fire."""
    name: str
    synapse: nn.Module
    theta: float
    leak: float
    pool: int = 0
    mask: Optional[torch.Tensor] = None

    @property
    def is_conv(self) -> bool:
        return isinstance(self.synapse, nn.Conv2d)


def run_stages(x: torch.Tensor, stages: Sequence[Stage], surrogate: Surrogate):
    """x (T, B, ...) -> (the last stage's output spikes (T, B, ...), the spikes per neuron of each stage (B, ...),
    int32). Differentiable with respect to x and the synapses' parameters."""
    params = []
    for s in stages:
        params += [s.synapse.weight, s.synapse.bias]
    values = _step_values(x, stages)
    budget = CONV_BLOCK_VALUES if stages[0].is_conv else LINEAR_BLOCK_VALUES
    block = max(1, min(x.shape[0], budget // max(1, values)))
    if torch.is_grad_enabled() and (x.requires_grad or any(p is not None and p.requires_grad for p in params)):
        out, *counts = _StackRun.apply(x, tuple(stages), surrogate, block, *params)
    else:
        with torch.no_grad():
            out, counts, _ = _forward(x, stages, surrogate, block, save=False)
    return out, list(counts)


def _step_values(x: torch.Tensor, stages: Sequence[Stage]) -> int:
    """The most currents any stage has per step (B x its synapse's output size): the run's shapes as torch gives
    them, on the meta device (no data, no arithmetic)."""
    h, most = torch.empty(x.shape[1:], device="meta", dtype=x.dtype), 0
    with torch.no_grad():
        for s in stages:
            bias = None if s.synapse.bias is None else s.synapse.bias.to("meta")
            h = _synapse(s, h, s.synapse.weight.to("meta"), bias)
            most = max(most, h.numel())
            if s.pool:
                h = F.avg_pool2d(h, s.pool)
    return most


# -- the synapses, on a block of steps flattened to (K * B, ...) ------------------------------------------------
def _synapse(stage: Stage, h: torch.Tensor, w, b) -> torch.Tensor:
    m = stage.synapse
    if stage.is_conv:
        if h.dtype == torch.float32:            # oneDNN's faster layout (as SnnModel's layer-by-layer path)
            h = h.contiguous(memory_format=torch.channels_last)
        return F.conv2d(h, w, b, m.stride, m.padding, m.dilation, m.groups)
    return F.linear(h, w, b)


def _synapse_backward(stage: Stage, g, h, w, b, need):
    """(grad of h, of w, of b; each None unless `need` says so) for the currents' gradient g (K * B, ...)."""
    m = stage.synapse
    need_in, need_w, need_b = need[0], need[1], need[2] and b is not None
    if stage.is_conv:
        if not (need_in or need_w or need_b):
            return None, None, None
        if h.dtype == torch.float32:
            h = h.contiguous(memory_format=torch.channels_last)
        g = g.contiguous(memory_format=torch.channels_last) if h.dtype == torch.float32 else g.contiguous()
        gh, gw, gb = torch.ops.aten.convolution_backward(
            g, h, w, None if b is None else list(b.shape), list(m.stride), list(m.padding), list(m.dilation), False,
            [0, 0], m.groups, [need_in, need_w, need_b])
        return (gh if need_in else None), (gw if need_w else None), (gb if need_b else None)
    return (g.mm(w) if need_in else None), (g.t().mm(h) if need_w else None), (g.sum(0) if need_b else None)


# -- compact storage of a stage's output spikes -----------------------------------------------------------------
# The kernel writes them as 1-byte codes as it fires: pooled -> the count of k*k, else 0/1 (before any dropout
# mask; a dropped-out spike is the code times the mask).
def _decode(stage: Stage, code: torch.Tensor, dtype, mask) -> torch.Tensor:
    """The floats the kernel wrote, exactly (count / k^2 as it divides; code * mask as it multiplies)."""
    x = code.to(dtype)
    if stage.pool:
        return x.div_(float(stage.pool * stage.pool))
    if mask is not None:
        return x.mul_(mask)
    return x


# -- forward ------------------------------------------------------------------------------------------------------
class _StageState:
    """What one stage keeps during the forward pass: the neurons' state and counts, and per block of steps (saved
    for the backward, each freed as soon as the backward has used it) the 1-byte dts, x if the surrogate needs it,
    and the 1-byte codes of the output spikes. Block-sized buffers are small enough for the C allocator to recycle
    (see toolchain/allocator.py); whole-run ones would be fresh memory every step."""

    def __init__(self, stage: Stage, a: torch.Tensor, T: int, save: bool, keep_x: bool, keep_dts: bool, last: bool):
        shape, layout = (T,) + tuple(a.shape[1:]), step_layout(a)
        self.shape, self.layout = shape, layout
        k = stage.pool
        self.geometry = pool_geometry(shape, layout, k) if k else (1, 1)
        one = buffer(1, shape, layout, a)[0]
        self.v = torch.empty_like(one)
        self.d = torch.empty_like(one, dtype=torch.uint8)
        self.count = torch.empty_like(one, dtype=torch.int32)
        self.mask = None if stage.mask is None else in_layout(stage.mask.detach().to(a.dtype), layout[1:],
                                                                lambda: torch.empty_like(one))
        self.keep_dts, self.keep_x, self.keep_code = save and keep_dts, save and keep_x, save and not last
        self.out = (pooled_buffer(T, shape, k, layout, a) if k else buffer(T, shape, layout, a)) if last else None
        self.blocks = {}            # t0 -> _Saved
        self.c = None if keep_x else spike_boundary(stage.theta, a.dtype, "cpu")

    def new_block(self, stage: Stage, t0: int, a: torch.Tensor) -> "_Saved":
        K, k = a.shape[0], stage.pool
        shape = (K,) + self.shape[1:]
        code = None
        if self.keep_code:          # the output spikes as 1-byte codes, in the output's layout
            out_shape = shape[:3] + (shape[3] // k, shape[4] // k) if k else shape
            code = torch.empty_strided(out_shape, pooled_strides(shape, k, self.layout) if k else self.layout,
                                       dtype=torch.uint8)
        blk = _Saved(buffer(K, shape, self.layout, a, torch.uint8) if self.keep_dts else None,
                     buffer(K, shape, self.layout, a) if self.keep_x else None, code)
        if self.keep_dts or self.keep_x or self.keep_code:
            self.blocks[t0] = blk
        return blk


@dataclass
class _Saved:
    dts: Optional[torch.Tensor]
    x: Optional[torch.Tensor]
    code: Optional[torch.Tensor]


def _neurons_forward(stage: Stage, st: _StageState, a: torch.Tensor, t0: int, out: torch.Tensor) -> None:
    """Run the neurons of one block (t0 .. t0 + K - 1) on currents a (K, B, ...), from the state the previous block
    left; their (pooled / masked) spikes go to `out`."""
    K = a.shape[0]
    cur = in_layout(a, st.layout, lambda: buffer(K, st.shape, st.layout, a))
    blk = st.new_block(stage, t0, a)
    status = calls.SubtractiveForward(
        K, st.layout[0], cur, out, st.v, st.count, stage.theta, stage.leak, boundary=st.c, dts=blk.dts, x=blk.x,
        mask=st.mask, carried_dt=st.d, resume=t0 > 0, codes=blk.code, width=st.geometry[0], channels=st.geometry[1],
        pool=stage.pool).run()
    if status != 0:
        raise KernelError(f"compiled neuron kernel failed on spiking layer '{stage.name}' (status {status})")


def _forward(x, stages, surrogate, block, save: bool, params=None):
    T, B = x.shape[:2]
    keep_x = save and surrogate.name not in DT_ONLY
    keep_dts = save and (surrogate.needs_dt or surrogate.name in DT_ONLY)
    states: List[Optional[_StageState]] = [None] * len(stages)
    for t0 in range(0, T, block):
        t1 = min(T, t0 + block)
        h = x[t0:t1].reshape(((t1 - t0) * B,) + x.shape[2:])
        for i, stage in enumerate(stages):
            w, b = _params(stage, params, i)
            a = _synapse(stage, h, w, b)
            a = a.reshape((t1 - t0, B) + a.shape[1:])
            last = i == len(stages) - 1
            if states[i] is None:
                states[i] = _StageState(stage, a, T, save, keep_x, keep_dts, last)
            st = states[i]
            out = st.out[t0:t1] if last else _block_out(stage, st, a)
            _neurons_forward(stage, st, a, t0, out)
            h = out.reshape(((t1 - t0) * B,) + out.shape[2:])
    return states[-1].out, [st.count for st in states], states


def _block_out(stage: Stage, st: _StageState, a: torch.Tensor) -> torch.Tensor:
    K = a.shape[0]
    return pooled_buffer(K, st.shape, stage.pool, st.layout, a) if stage.pool else buffer(K, st.shape, st.layout, a)


def _params(stage: Stage, params, i: int):
    if params is None:
        return stage.synapse.weight, stage.synapse.bias
    return params[2 * i], params[2 * i + 1]


# -- backward -----------------------------------------------------------------------------------------------------
class _StackRun(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, stages, surrogate, block, *params):
        out, counts, states = _forward(x, stages, surrogate, block, save=True, params=params)
        for st in states:               # no reference from the saved state to the outputs: no cycle through ctx
            st.count = None
        states[-1].out = None
        ctx.stages, ctx.surrogate, ctx.block, ctx.states = stages, surrogate, block, states
        ctx.save_for_backward(x, *params)
        ctx.mark_non_differentiable(*counts)
        return (out, *counts)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out, *_g_counts):
        x, *params = ctx.saved_tensors
        stages, states, sur = ctx.stages, ctx.states, ctx.surrogate
        if states is None:
            raise RetainGraphError("the block-by-block spiking layers free what they saved in the backward pass: "
                                   "backward through them twice (retain_graph) is not supported")
        T, B = x.shape[:2]
        grads = [None] * len(params)
        g_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        carries = [None] * len(stages)
        lut = stdb_table(sur.beta, x.dtype) if sur.name == "stdb" else None   # exp(-beta dt) by dt code
        for t0 in reversed(range(0, T, ctx.block)):     # the forward's blocks, last first
            t1 = min(T, t0 + ctx.block)
            g = g_out[t0:t1] if g_out is not None else None
            for i in range(len(stages) - 1, -1, -1):
                stage, st = stages[i], states[i]
                w, b = params[2 * i], params[2 * i + 1]
                gI = _neurons_backward(stage, st, sur, g, t0, t1, T, carries[i], lut)
                carries[i] = gI[0].clone() if carries[i] is None else carries[i].copy_(gI[0])
                h = x[t0:t1] if i == 0 else _decode(stages[i - 1], states[i - 1].blocks[t0].code, x.dtype,
                                                    states[i - 1].mask)
                h = h.reshape(((t1 - t0) * B,) + h.shape[2:])
                need = (i > 0 or g_x is not None, ctx.needs_input_grad[4 + 2 * i], ctx.needs_input_grad[5 + 2 * i])
                gh, gw, gb = _synapse_backward(stage, gI.reshape(((t1 - t0) * B,) + gI.shape[2:]), h, w, b, need)
                _accumulate(grads, 2 * i, gw)
                _accumulate(grads, 2 * i + 1, gb)
                g = None if gh is None else gh.reshape((t1 - t0, B) + gh.shape[1:])
            if g_x is not None:
                g_x[t0:t1].copy_(g)
        ctx.states = None
        return (g_x, None, None, None, *grads)


def _accumulate(grads, j, g) -> None:
    if g is not None:
        grads[j] = g if grads[j] is None else grads[j].add_(g)


def _neurons_backward(stage: Stage, st: _StageState, sur: Surrogate, g, t0: int, t1: int, T: int, carry, lut):
    """The currents' gradient for steps t0 .. t1 - 1, given the incoming gradient g of the block's (pooled /
    masked) spikes and the gradient carried back from step t1."""
    K, k = t1 - t0, stage.pool
    like = st.v
    blk = st.blocks.pop(t0, None) or _Saved(None, None, None)   # the next stage has decoded its code already
    grad = buffer(K, st.shape, st.layout, like)
    if g is not None:
        strides = pooled_strides((K,) + st.shape[1:], k, st.layout) if k else st.layout
        g = in_layout(g, strides, lambda: torch.empty_strided(g.shape, strides, dtype=g.dtype))
    stdb = sur.name == "stdb"
    sg = None
    if g is not None and not stdb:
        sg = buffer(K, st.shape, st.layout, like)
        surrogate_factor(sur, blk.dts, blk.x, 0, K, stage.theta, out=sg)
    status = calls.SubtractiveBackward(
        T, st.layout[0], grad, t0, t1, stage.leak, scale=sur.alpha / stage.theta if stdb else 1.0, t_base=t0,
        g_spikes=g, dts=blk.dts, lut=lut if stdb else None, factor=sg, mask=st.mask, carry=carry,
        width=st.geometry[0], channels=st.geometry[1], pool=k).run()
    if status != 0:
        raise KernelError(f"compiled neuron kernel failed on spiking layer '{stage.name}' (status {status})")
    return grad


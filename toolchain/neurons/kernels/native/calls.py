"""The compiled kernels' calls, one typed dataclass per C function: fields by name (tensors, or None for an
optional buffer), `run()` builds the positional ctypes arguments in the C signature's order (neuron_kernels.c) and
returns the kernel's status (0, or < 0 for refused arguments / no memory). Every caller goes through these, so an
argument is named once.

Buffers are (T, n) in memory order (one step after the other; see kernels.layout.step_layout); float32 or float64,
as the first buffer's dtype says. With pooling, `pool` = k > 1 and (`width`, `channels`) the pooling blocks'
geometry (kernels.layout.pool_geometry).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch

from . import library


def threads() -> int:
    """The kernels' threads: torch's (SNNTC_KERNEL_THREADS overrides)."""
    return int(os.environ.get("SNNTC_KERNEL_THREADS", torch.get_num_threads()))


def _ptr(x: Optional[torch.Tensor]) -> Optional[int]:
    return None if x is None else x.data_ptr()


def _f64(x: torch.Tensor) -> int:
    return int(x.dtype == torch.float64)


@dataclass
class SubtractiveForward:
    """snn_subtractive_forward: the IF / LIF neuron over T steps (or one block of steps of a longer run)."""
    steps: int
    n: int                                      # values per step
    currents: torch.Tensor
    out: torch.Tensor                           # spikes (pooled if `pool`; times `mask`)
    v: torch.Tensor                             # the final (or carried) membrane voltage
    count: torch.Tensor                         # spikes per neuron (int32), added to
    theta: float
    leak: float
    boundary: Optional[float] = None            # c with (v / theta - 1 > 0) == (v > c); None: compute x
    dts: Optional[torch.Tensor] = None          # 1-byte steps since the last spike, as each step saw them
    x: Optional[torch.Tensor] = None            # x = v / theta - 1 per step
    dt: Optional[torch.Tensor] = None           # the final steps since the last spike (float; inf: none)
    mask: Optional[torch.Tensor] = None         # a dropout mask, the same at every step
    carried_dt: Optional[torch.Tensor] = None   # block runs: the 1-byte dt state carried between blocks
    resume: bool = False                        # block runs: start from v and carried_dt of the previous block
    codes: Optional[torch.Tensor] = None        # block runs: the output spikes as 1-byte codes
    width: int = 1
    channels: int = 1
    pool: int = 0

    def run(self) -> int:
        return library().snn_subtractive_forward(
            _f64(self.currents), self.steps, self.n, self.width, self.channels, int(self.pool or 1),
            self.currents.data_ptr(), self.out.data_ptr(), _ptr(self.dts), _ptr(self.x), self.v.data_ptr(),
            _ptr(self.dt), _ptr(self.mask), self.count.data_ptr(), _ptr(self.carried_dt), int(self.resume),
            _ptr(self.codes), float(self.theta), float(self.boundary if self.boundary is not None else 0.0),
            int(self.boundary is not None), float(self.leak), threads())


@dataclass
class SubtractiveBackward:
    """snn_subtractive_backward: the currents' gradient for steps t_lo .. t_hi - 1 of a T-step run (the arrays
    start at step `t_base`)."""
    steps: int                                  # T of the whole run
    n: int
    grad: torch.Tensor                          # out: the currents' gradient
    t_lo: int
    t_hi: int
    leak: float
    scale: float = 1.0                          # multiplies the surrogate factor (STDB: alpha / theta)
    t_base: int = 0
    g_spikes: Optional[torch.Tensor] = None     # the incoming gradient of the (pooled / masked) spikes
    g_v: Optional[torch.Tensor] = None          # the final voltage's gradient
    dts: Optional[torch.Tensor] = None          # 1-byte dt codes (with `lut`: STDB)
    lut: Optional[torch.Tensor] = None          # exp(-beta dt) by dt code
    factor: Optional[torch.Tensor] = None       # surrogate'(x, dt) / theta per step (any other surrogate)
    mask: Optional[torch.Tensor] = None
    carry: Optional[torch.Tensor] = None        # the gradient carried back from step t_hi (block runs)
    width: int = 1
    channels: int = 1
    pool: int = 0

    def run(self) -> int:
        return library().snn_subtractive_backward(
            _f64(self.grad), self.steps, self.n, self.width, self.channels, int(self.pool or 1), self.t_lo,
            self.t_hi, self.t_base, _ptr(self.g_spikes), _ptr(self.g_v), _ptr(self.dts), _ptr(self.lut),
            _ptr(self.factor), _ptr(self.mask), self.grad.data_ptr(), _ptr(self.carry), float(self.scale),
            float(self.leak), threads())


@dataclass
class CubaForward:
    """snn_cuba_forward: Loihi's CUBA neuron (quantization-aware) over T steps."""
    steps: int
    n: int
    currents: torch.Tensor
    out: torch.Tensor
    v: torch.Tensor
    u: torch.Tensor
    dt: torch.Tensor
    vth64: float                                # 64 vth
    i_decay: int
    v_decay: int
    bias64: Optional[torch.Tensor] = None       # 64 b, laid out like one step
    flags: Optional[torch.Tensor] = None        # 1 byte per neuron and step: bit 0 spiked, bit 1 inside the clamp
    dts: Optional[torch.Tensor] = None
    x: Optional[torch.Tensor] = None

    def run(self) -> int:
        return library().snn_cuba_forward(
            _f64(self.currents), self.steps, self.n, self.currents.data_ptr(), _ptr(self.bias64), self.out.data_ptr(),
            _ptr(self.flags), _ptr(self.dts), _ptr(self.x), self.v.data_ptr(), self.u.data_ptr(), self.dt.data_ptr(),
            float(self.vth64), int(self.i_decay), int(self.v_decay), threads())


@dataclass
class CubaBackward:
    """snn_cuba_backward: the gradient of the currents (and the bias) of a CUBA run."""
    steps: int
    n: int
    grad: torch.Tensor
    flags: torch.Tensor
    vth64: float
    i_decay: int
    v_decay: int
    g_spikes: Optional[torch.Tensor] = None
    g_v: Optional[torch.Tensor] = None
    g_u: Optional[torch.Tensor] = None
    dts: Optional[torch.Tensor] = None
    lut: Optional[torch.Tensor] = None          # surrogate'(dt) by dt code (a surrogate of dt alone)
    factor: Optional[torch.Tensor] = None       # surrogate'(x, dt) per step
    g_bias: Optional[torch.Tensor] = None       # out: the sum over steps of the clamp's input gradient

    def run(self) -> int:
        return library().snn_cuba_backward(
            _f64(self.grad), self.steps, self.n, _ptr(self.g_spikes), _ptr(self.g_v), _ptr(self.g_u),
            self.flags.data_ptr(), _ptr(self.dts), _ptr(self.lut), _ptr(self.factor), self.grad.data_ptr(),
            _ptr(self.g_bias), float(self.vth64), int(self.i_decay), int(self.v_decay), threads())


@dataclass
class SigmaDelta:
    """snn_sigma_delta: the emulator's sigma-delta neurons (hw_targets/simulators/sigma_delta.py) over a stream of
    `steps` steps of `n` neurons; int64 buffers (steps, n), contiguous."""
    steps: int
    n: int
    mode: int                                   # 0 Delta, 1 SigmaDelta, 2 Sigma
    a: torch.Tensor                             # the synaptic input at each step
    vth: int                                    # vth << 12
    messages: torch.Tensor                      # out: m >> 6 (Sigma: sigma)
    state: torch.Tensor                         # out: sigma (Delta: the residue)
    bias: Optional[torch.Tensor] = None         # SigmaDelta: bias << 12 per neuron (n,)

    def run(self) -> int:
        return library().snn_sigma_delta(self.steps, self.n, self.mode, self.a.data_ptr(), _ptr(self.bias),
                                         int(self.vth), self.messages.data_ptr(), self.state.data_ptr(), threads())


@dataclass
class LavaCuba:
    """snn_lava_cuba: the emulator's bit-exact CUBA neuron (Lava's fixed-point PyLifModelBitAcc) over T steps of b
    samples from zero state; buffers (b, T, n) contiguous (hw_targets/simulators/emulator.py `_neuron`)."""
    fast: bool                                  # the int32 version (`_fast_ok`: no int32 overflow can occur)
    act: torch.Tensor                           # (b, T, n) int32 or int64 synaptic input a
    spikes: torch.Tensor                        # out: (b, T, n) uint8
    vth: int                                    # vth << 6
    du: int
    dv: int
    bias: Optional[torch.Tensor] = None         # int64 (<< 6): n values, or n per sample (bias_stride = n)
    bias_stride: int = 0
    v_hist: Optional[torch.Tensor] = None       # out: (b, T, n) int64 v after each step (after the reset)
    u_hist: Optional[torch.Tensor] = None       # out: (b, T, n) int64 u after each step

    def run(self) -> int:
        b, T, n = self.act.shape
        return library().snn_lava_cuba(
            int(self.fast), int(self.act.dtype == torch.int64), b, T, n, self.act.data_ptr(), _ptr(self.bias),
            int(self.bias_stride), self.spikes.data_ptr(), _ptr(self.v_hist), _ptr(self.u_hist), int(self.vth),
            int(self.du), int(self.dv), threads())

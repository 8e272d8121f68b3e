"""The emulator on Lava's global time line, for networks whose state crosses the samples' windows.

The batched emulator (emulator.py) runs every sample from zero state, which is exactly what Lava computes when a
layer's state is only its neurons' u and v (reset at the start of each window). Two kinds of netx layer carry
state that the reset does not clear, so that a sample's window also sees the end of the previous sample:

* ``dense_rec`` (Lava's RecurrentDense block): a second Dense process feeds the layer's own spikes back into its
  neurons one step later, a_in[t] = W s_in[t-1] + W_rec s_out[t-1], so the first step of a window receives the
  last spikes of the window before (or of the steps before the first window);
* synaptic delays (Lava's DelayDense, ``delay`` in the file): a spike with delay d reaches the neurons d + 1 steps
  later, ``a[t] = sum_d (W_d . s[t - 1 - d]) >> -weight_exp`` (each delay's sum shifted on its own, as the
  process's a_buff accumulates them), across window boundaries.

Sigma-delta (SDNN) layers keep all their state across windows (netx does not reset them): they run over the whole
stream too (hw_targets/simulators/sigma_delta.py), sending graded messages to the next layer.

So this path runs the whole stream of N*T + L steps that Lava runs (samples back to back, the input as the Lava
runner feeds it), layer after layer: the synapse over all steps at once; the neurons of a layer without recurrence
in blocks between its resets (``t % T == (k + 1) % T`` for layer k, 1-based), each from zero state, batched by the
emulator's own neuron; a recurrent layer's neurons and feedback step by step (int64 with Lava's int32 and 24-bit
wraps). The windows are then cut out into the EmulatorTrace the batched path returns.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from toolchain.errors import SimulationError
from toolchain.quantization.fixed_point import NO_DELTA_BIAS, FxNetwork

from . import sigma_delta
from .emulator import (_M24, EmulatorTrace, _as_tensor, _default_device, _neuron, _synapse, lava_decay, prepare,
                       synaptic_bound, wrap_int16, wrap_int32)


def _shift(acc: torch.Tensor, weight_exp: int) -> torch.Tensor:
    if weight_exp > 0:
        return torch.bitwise_left_shift(acc, weight_exp)
    return torch.bitwise_right_shift(acc, -weight_exp)


def _stream_input(net: FxNetwork, x: torch.Tensor, total: int) -> torch.Tensor:
    """(total, *input_shape) int64: what the network's input receives at global steps 1..total (row t-1), as the
    Lava runner feeds it (an input neuron's a_in one step later; nothing for a bias-fed input)."""
    N, T = int(x.shape[0]), int(x.shape[1])
    out = torch.zeros((total,) + tuple(net.input_shape), dtype=torch.int64, device=x.device)
    shift = 1 if net.input_neuron else 0
    out[shift:shift + N * T] = x.reshape((N * T,) + tuple(net.input_shape))
    return out


def _bias_stream(x: torch.Tensor, T: int, total: int) -> torch.Tensor:
    """A bias-fed input neuron's bias (<< 6) at every global step: sample n's from step n*T + 2 on."""
    N = int(x.shape[0])
    if bool((x != x[:, :1]).any()):
        raise SimulationError("an input fed as the input neuron's bias takes one value per sample: every step of a "
                              "sample must be the same")
    bias = torch.as_tensor(wrap_int16(x[:, 0].cpu().numpy()) << 6, device=x.device)
    out = torch.zeros((total,) + tuple(x.shape[2:]), dtype=torch.int64, device=x.device)
    out[1:1 + N * T] = bias.repeat_interleave(T, dim=0)
    return out


def _feedforward(p, s_prev: torch.Tensor) -> torch.Tensor:
    """(total, *out) int64: the synaptic input each step from the previous layer's stream, with Lava's one step
    of buffering (and each synaptic delay's further steps)."""
    total = s_prev.shape[0]
    if p.kind == "input":                                   # the neuron's own a_in: no synapse, no buffering
        return s_prev.to(torch.int64)
    if p.kind == "input-bias":
        return torch.zeros((total,) + p.out_shape, dtype=torch.int64, device=s_prev.device)
    s = s_prev.to(torch.float64)
    a = torch.zeros((total,) + p.out_shape, dtype=torch.int64, device=s_prev.device)
    if p.delays is None:
        a[1:] = _synapse(p, s[:-1])
        return a
    flat = s.reshape(total, -1)
    for d, w_d in p.delays:                                  # DelayDense: each delay's sum shifted on its own
        if 1 + d >= total:
            continue
        acc = torch.round(flat[:total - 1 - d] @ w_d).to(torch.int64)
        a[1 + d:] += _shift(acc, p.weight_exp).reshape((total - 1 - d,) + p.out_shape)
    return wrap_int32(a)


def _neuron_stream(p, a: torch.Tensor, bias_t: Optional[torch.Tensor], k: int, T: int):
    """CUBA neurons of layer k (1-based) over the whole stream: reset at each window start, the recurrent synapse
    (if any) from the previous step's spikes. Returns (spikes uint8, v, u), each (total, *out)."""
    total = a.shape[0]
    u = torch.zeros(p.out_shape, dtype=torch.int64, device=a.device)
    v = torch.zeros_like(u)
    s_last = torch.zeros(p.out_shape, dtype=torch.float64, device=a.device)
    spikes = torch.empty((total,) + p.out_shape, dtype=torch.uint8, device=a.device)
    v_all, u_all = torch.empty_like(a), torch.empty_like(a)
    two24 = 2 * _M24
    reset_phase = (k + 1) % T
    for i in range(total):
        t = i + 1
        if t % T == reset_phase:
            u.zero_()
            v.zero_()
        a_t = a[i]
        if p.weight_rec is not None:
            rec = torch.round(s_last.reshape(1, -1) @ p.weight_rec).to(torch.int64).reshape(p.out_shape)
            a_t = wrap_int32(a_t + _shift(rec, p.weight_exp))
        dc = wrap_int32(lava_decay(u, p.du) + wrap_int32(torch.bitwise_left_shift(a_t, 6)))
        u = torch.where(dc > _M24, dc - two24, torch.where(dc <= -_M24, dc + two24, dc))
        vv = lava_decay(v, p.dv) + u
        if bias_t is not None:
            vv = vv + bias_t[i]
        elif p.bias is not None:
            vv = vv + p.bias
        vv = torch.clamp(wrap_int32(vv), -_M24 + 1, _M24 - 1)
        spk = vv > p.vth
        v = torch.where(spk, torch.zeros_like(vv), vv)
        spikes[i] = spk.to(torch.uint8)
        v_all[i], u_all[i] = v, u
        s_last = spk.to(torch.float64)
    return spikes, v_all, u_all


def _neuron_blocks(p, a: torch.Tensor, k: int, T: int, a_bound: int):
    """The same as _neuron_stream for a layer without recurrence, batched: the reset at every t = (k+1) mod T
    starts each block of T steps from zero state (and so does step 1), so the stream is a short first block and
    then full blocks, each run by the batched emulator's neuron. Returns (spikes uint8, v, u), each (total, *out)."""
    total = a.shape[0]
    first = k % T                                           # steps 1 .. first come before the first reset
    pieces = []
    if first:
        pieces.append(a[:first].unsqueeze(0))
    rest = total - first
    blocks = -(-rest // T)
    tail = torch.zeros((blocks * T - rest,) + p.out_shape, dtype=a.dtype, device=a.device)
    pieces.append(torch.cat([a[first:], tail]).reshape((blocks, T) + p.out_shape))
    outs = [_neuron(p, piece, True, False, a_bound) for piece in pieces]
    cat = lambda i: torch.cat([o[i].reshape((-1,) + p.out_shape) for o in outs])[:total]
    return cat(0), cat(1), cat(2)


def _windows(stream: torch.Tensor, k: int, N: int, T: int) -> torch.Tensor:
    """(N, T, *shape): layer k's (1-based) window of each sample, global steps n*T + k + 1 .. n*T + k + T."""
    idx = (torch.arange(N).reshape(N, 1) * T + k + torch.arange(T).reshape(1, T)).to(stream.device)
    return stream[idx]


def emulate_stream(net: FxNetwork, inputs, device=None, record_voltages: bool = False,
                   record_spikes: bool = False) -> EmulatorTrace:
    """``emulate`` on Lava's global time line (see the module docstring); the same EmulatorTrace."""
    t_start = time.perf_counter()
    x = _as_tensor(inputs)
    if x.dim() < 2 or int(np.prod(x.shape[2:])) != int(np.prod(net.input_shape)):
        raise SimulationError(f"inputs have shape {tuple(x.shape[2:])} per step; the network expects "
                              f"{tuple(net.input_shape)}")
    x = x.reshape(tuple(x.shape[:2]) + tuple(net.input_shape))
    if x.is_floating_point() and bool((x != torch.round(x)).any()):
        raise SimulationError("inputs must be integer-valued spikes")
    device = torch.device(device) if device is not None else _default_device()
    x = (torch.round(x.to(torch.float64)) if x.is_floating_point() else x).to(torch.int64).to(device)
    prepared = prepare(net, device)
    N, T, L = int(x.shape[0]), int(x.shape[1]), len(prepared)
    total = N * T + L
    stream = _stream_input(net, x, total)
    if net.input_neuron:
        s_prev = stream.to(torch.float64)
    elif net.input_bits > 0:
        s_prev = wrap_int32(stream).to(torch.float64)
    else:
        s_prev = (stream != 0).to(torch.float64)
    keep = record_spikes or record_voltages
    counts, spikes, volts, currs = [], [], [], []
    out_v = None
    with torch.no_grad():
        for k, p in enumerate(prepared, start=1):
            bias_t = None
            if p.kind == "input" and net.input_feed == "bias":
                if p.layer.sigma_delta:
                    raise SimulationError(NO_DELTA_BIAS)
                bias_t = _bias_stream(x, T, total)
                p = _as_bias_fed(p)
            a = _feedforward(p, s_prev)
            if p.layer.sigma_delta:
                s_k, v_k = sigma_delta.run_stream(p, a)
                u_k = a
            elif p.weight_rec is None and bias_t is None:
                x_max = int(s_prev.abs().max()) if (p.graded_in or k == 1 and net.input_neuron) else 1
                bound = synaptic_bound(p, x_max) + (len(p.delays) if p.delays else 0)
                s_k, v_k, u_k = _neuron_blocks(p, a, k, T, bound)
            else:
                s_k, v_k, u_k = _neuron_stream(p, a, bias_t, k, T)
            sw = _windows(s_k, k, N, T)
            counts.append((sw != 0).sum(dim=1, dtype=torch.int64).cpu())
            if keep:
                spikes.append(sw.cpu() if p.layer.sigma_delta else sw.to(torch.bool).cpu())
            if record_voltages:
                volts.append(_windows(v_k, k, N, T).cpu())
                currs.append(_windows(u_k, k, N, T).cpu())
            if k == L:
                out_v = _windows(v_k, k, N, T).cpu()
            s_prev = s_k.to(torch.float64)
    return EmulatorTrace(layer_names=[p.layer.name for p in prepared], timesteps=T, spike_counts=counts,
                         output_voltage=out_v, spikes=spikes if keep else None,
                         voltages=volts if record_voltages else None, currents=currs if record_voltages else None,
                         input_event_counts=(x != 0).sum(dim=(0, 1)).cpu(), wall_time_s=time.perf_counter() - t_start,
                         device=str(device))


def _as_bias_fed(p):
    from dataclasses import replace
    return replace(p, kind="input-bias")


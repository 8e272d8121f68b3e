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
emulator's own neuron; a recurrent layer's windows in parallel too, local step by local step (int64 with Lava's
int32 and 24-bit wraps), the feedback into each window's first step (its predecessor's last spikes) solved by
iteration (``_neuron_windows``: typically 2-3 rounds, at most _MAX_ROUNDS before it finishes window by window).
The windows are then cut out into the EmulatorTrace the batched path returns.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from toolchain.errors import SimulationError
from toolchain.quantization.fixed_point import FxNetwork

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
    a = torch.zeros((total,) + p.out_shape, dtype=torch.int64, device=s_prev.device)
    if p.delays is None:
        a[1:] = _synapse(p, s_prev[:-1])           # it converts the spikes / messages to the dtype it computes in
        return a
    flat = s_prev.to(torch.float64).reshape(total, -1)
    for d, w_d in p.delays:                                  # DelayDense: each delay's sum shifted on its own
        if 1 + d >= total:
            continue
        acc = torch.round(flat[:total - 1 - d] @ w_d).to(torch.int64)
        a[1 + d:] += _shift(acc, p.weight_exp).reshape((total - 1 - d,) + p.out_shape)
    return wrap_int32(a)


_MAX_ROUNDS = 32      # parallel rounds of _neuron_windows before it finishes window by window


def _cuba_step(p, u: torch.Tensor, v: torch.Tensor, a_t: torch.Tensor, bias):
    """One step of the CUBA neuron (int64 with Lava's int32 and 24-bit wraps): (spiked bool, v, u)."""
    two24 = 2 * _M24
    dc = wrap_int32(lava_decay(u, p.du) + wrap_int32(torch.bitwise_left_shift(a_t, 6)))
    u = torch.where(dc > _M24, dc - two24, torch.where(dc <= -_M24, dc + two24, dc))
    vv = lava_decay(v, p.dv) + u
    if bias is not None:
        vv = vv + bias
    vv = torch.clamp(wrap_int32(vv), -_M24 + 1, _M24 - 1)
    spk = vv > p.vth
    return spk, torch.where(spk, torch.zeros_like(vv), vv), u


def _with_feedback(p, a_t: torch.Tensor, s_last: torch.Tensor) -> torch.Tensor:
    """a_t plus the recurrent synapse's input from the previous step's spikes s_last (float64, like a_t):
    the sum shifted by weight_exp, then Lava's int32 channel."""
    if p.weight_rec is None:
        return a_t
    rec = torch.round(s_last.reshape(s_last.shape[0], -1) @ p.weight_rec).to(torch.int64).reshape(a_t.shape)
    return wrap_int32(a_t + _shift(rec, p.weight_exp))


def _neuron_steps(p, a: torch.Tensor, bias_t: Optional[torch.Tensor], k: int, T: int):
    """CUBA neurons of layer k (1-based) step by step from global step 1: reset at each window start, the
    recurrent synapse (if any) from the previous step's spikes. Returns (spikes uint8, v, u), each (steps, *out).
    _neuron_windows runs the first steps (before layer k's first window) with it."""
    steps = a.shape[0]
    u = torch.zeros((1,) + p.out_shape, dtype=torch.int64, device=a.device)
    v = torch.zeros_like(u)
    s_last = torch.zeros_like(u, dtype=torch.float64)
    spikes = torch.empty((steps,) + p.out_shape, dtype=torch.uint8, device=a.device)
    v_all, u_all = torch.empty_like(a), torch.empty_like(a)
    for i in range(steps):
        if (i + 1) % T == (k + 1) % T:
            u.zero_()
            v.zero_()
        bias = bias_t[i] if bias_t is not None else p.bias
        spk, v, u = _cuba_step(p, u, v, _with_feedback(p, a[i:i + 1], s_last), bias)
        spikes[i], v_all[i], u_all[i] = spk[0], v[0], u[0]
        s_last = spk.to(torch.float64)
    return spikes, v_all, u_all


def _as_windows(stream: Optional[torch.Tensor], M: int, T: int) -> Optional[torch.Tensor]:
    """(M, T, *shape): a stream that starts at a window start, zero-padded to M whole windows."""
    if stream is None:
        return None
    pad = torch.zeros((M * T - stream.shape[0],) + tuple(stream.shape[1:]), dtype=stream.dtype, device=stream.device)
    return torch.cat([stream, pad]).reshape((M, T) + tuple(stream.shape[1:]))


def _run_windows(p, aw: torch.Tensor, bw: Optional[torch.Tensor], boundary: torch.Tensor, out, idx=None):
    """Run the windows idx (all if None) in parallel, each from zero state (its first step is a reset), with the
    spikes boundary[n] (float64) of the step before it fed back at its first step; writes (spikes, v, u) into out."""
    a_w = aw if idx is None else aw[idx]
    b_w = bw if (bw is None or idx is None) else bw[idx]
    s_last = boundary if idx is None else boundary[idx]
    u = torch.zeros_like(a_w[:, 0])
    v = torch.zeros_like(u)
    s, vs, us = (torch.empty(a_w.shape, dtype=o.dtype, device=o.device) for o in out)
    for tau in range(a_w.shape[1]):
        spk, v, u = _cuba_step(p, u, v, _with_feedback(p, a_w[:, tau], s_last),
                               b_w[:, tau] if b_w is not None else p.bias)
        s[:, tau], vs[:, tau], us[:, tau] = spk, v, u
        s_last = spk.to(torch.float64)
    for o, r in zip(out, (s, vs, us)):
        if idx is None:
            o.copy_(r)
        else:
            o[idx] = r


def _boundaries_changed(out, boundary: torch.Tensor) -> torch.Tensor:
    """Indices n >= 1 of the windows whose boundary differs from window n-1's computed last spikes."""
    last = out[0][:-1, -1].to(torch.float64)
    return (last != boundary[1:]).reshape(last.shape[0], -1).any(dim=1).nonzero().reshape(-1) + 1


def _neuron_windows(p, a: torch.Tensor, bias_t: Optional[torch.Tensor], k: int, T: int,
                    max_rounds: int = _MAX_ROUNDS):
    """What _neuron_steps computes over the whole stream, with layer k's windows run in parallel.

    The steps 1..k before the first window run step by step; from step k + 1 on the stream is whole windows of T
    steps (the last one padded), each starting from the reset, so that the only coupling between them is the
    spikes of the step before a window (its boundary), fed back at its first step. Window 0's boundary is known
    exactly; the others are solved by iteration: guess zeros, run the windows, set each boundary to its
    predecessor's last spikes and re-run those that changed, until none changes (window n is exact from round
    n + 1 on, so a consistent set is the exact one). After max_rounds rounds the rest is finished window by
    window from the first unsettled one. Returns (spikes uint8, v, u), each (total, *out), and the rounds run."""
    total = a.shape[0]
    first = min(k, total)
    pre = _neuron_steps(p, a[:first], None if bias_t is None else bias_t[:first], k, T)
    M = -(-(total - first) // T)
    if M == 0:
        return pre + (0,)
    aw = _as_windows(a[first:], M, T)
    bw = _as_windows(None if bias_t is None else bias_t[first:], M, T)
    out = (torch.empty(aw.shape, dtype=torch.uint8, device=a.device), torch.empty_like(aw), torch.empty_like(aw))
    boundary = torch.zeros(aw[:, 0].shape, dtype=torch.float64, device=a.device)
    boundary[0] = pre[0][-1].to(torch.float64) if first else 0
    _run_windows(p, aw, bw, boundary, out)
    rounds = 1
    changed = _boundaries_changed(out, boundary) if p.weight_rec is not None else torch.zeros(0, dtype=torch.long)
    while changed.numel() and rounds < max_rounds:
        boundary[changed] = out[0][changed - 1, -1].to(torch.float64)
        _run_windows(p, aw, bw, boundary, out, changed)
        rounds += 1
        changed = _boundaries_changed(out, boundary)
    if changed.numel():
        _finish_by_window(p, aw, bw, boundary, out, int(changed[0]))
    cat = lambda i: torch.cat([pre[i], out[i].reshape((M * T,) + p.out_shape)])[:total]
    return cat(0), cat(1), cat(2), rounds


def _finish_by_window(p, aw, bw, boundary, out, start: int) -> None:
    """Windows start.. one after the other, each re-run only where its predecessor's last spikes differ from its
    boundary (windows before start are settled)."""
    for n in range(start, aw.shape[0]):
        last = out[0][n - 1, -1].to(torch.float64)
        if not torch.equal(last, boundary[n]):
            boundary[n] = last
            _run_windows(p, aw, bw, boundary, out, torch.tensor([n], device=aw.device))


def _neuron_blocks(p, a: torch.Tensor, k: int, T: int, a_bound: int):
    """The same as _neuron_steps for a layer without recurrence, batched: the reset at every t = (k+1) mod T
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
    return stream[k:k + N * T].reshape((N, T) + tuple(stream.shape[1:]))      # the windows are back to back: a view


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
    net.check_input_feed()
    prepared = prepare(net, device)
    N, T, L = int(x.shape[0]), int(x.shape[1]), len(prepared)
    total = N * T + L
    stream = _stream_input(net, x, total)
    if net.input_neuron:
        s_prev = stream
    elif net.input_bits > 0:
        s_prev = wrap_int32(stream)
    else:
        s_prev = (stream != 0).to(torch.uint8)
    keep = record_spikes or record_voltages
    counts, spikes, volts, currs = [], [], [], []
    out_v = None
    with torch.no_grad():
        for k, p in enumerate(prepared, start=1):
            bias_t = None
            if p.kind == "input" and net.input_feed == "bias":
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
                s_k, v_k, u_k, _ = _neuron_windows(p, a, bias_t, k, T)
            sw = _windows(s_k, k, N, T)
            counts.append((sw != 0).sum(dim=1, dtype=torch.int64).cpu())
            if keep:
                spikes.append(sw.cpu() if p.layer.sigma_delta else sw.to(torch.bool).cpu())
            if record_voltages:
                volts.append(_windows(v_k, k, N, T).cpu())
                currs.append(_windows(u_k, k, N, T).cpu())
            if k == L:
                out_v = _windows(v_k, k, N, T).cpu()
            s_prev = s_k                            # uint8 spikes or int64 messages: the next synapse converts them
    return EmulatorTrace(layer_names=[p.layer.name for p in prepared], timesteps=T, spike_counts=counts,
                         output_voltage=out_v, spikes=spikes if keep else None,
                         voltages=volts if record_voltages else None, currents=currs if record_voltages else None,
                         input_event_counts=(x != 0).sum(dim=(0, 1)).cpu(), wall_time_s=time.perf_counter() - t_start,
                         device=str(device))


def _as_bias_fed(p):
    from dataclasses import replace
    return replace(p, kind="input-bias")


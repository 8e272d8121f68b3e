"""Sigma-delta (SDNN) neurons as Lava's fixed_pt process models run them (lava-nc 0.10.0, lava/proc/sdn/models.py),
with the parameters netx gives them (spike_exp = state_exp = 6, cum_error off, ReLU):

* Delta (``PyDeltaModelFixed``, netx's input layer with an SDNN neuron):
  ``x = a_in << 12``; ``d = x - act + r``; ``m = d if |d| >= vth << 12 else 0``; ``r = d - m``; ``act = x``;
  it sends ``m >> 6``.
* SigmaDelta (``PySigmaDeltaModelFixed``): ``sigma = sigma + a_in``; ``act_new = max(sigma + (bias << 12), 0)``,
  then the same delta step against the previous ``act``; it sends ``m >> 6``.
* Sigma (``PySigmaModelFixed``, a layer with ``sigma_output``): ``sigma = sigma + a_in``; it sends ``sigma``.

Every Var is an int32 numpy array, so each sum wraps at 32 bits; ``np.abs`` of -2**31 stays negative, so that
value never passes the threshold. Nothing is reset between samples (netx ignores the reset interval for these
neurons), so a layer runs over the whole stream of Lava's global steps (hw_targets/simulators/stream.py): sigma is
a running sum (an exact int64 cumsum, wrapped), act follows from it step by step without recurrence, and only the
residue r is carried from one step to the next. What a layer "holds" for verification (its ``voltages``) is sigma
for SigmaDelta and Sigma, the residue r for Delta (its only state besides the input it just saw).
"""
from __future__ import annotations

from typing import Tuple

import torch

from toolchain.quantization.fixed_point import INT32_MIN, SDNN_EXP

from .emulator import _bias_rows, wrap_int32

_STATE_EXP = 6
_MODES = {"input": 0, "sdnn": 1, "sigma": 2}     # the compiled kernel's Delta, SigmaDelta, Sigma


def run_stream(p, a: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """A sigma-delta layer over the stream: (messages, state), (total, *out) int64; see the module docstring. The
    compiled kernel on the CPU where it can be built (one pass over memory), else torch ops step by step."""
    if a.device.type == "cpu":
        from toolchain.neurons.kernels.native import library
        if library() is not None:
            return run_stream_native(p, a)
    return run_stream_steps(p, a)


def _mode(p) -> int:
    return _MODES["input"] if p.kind == "input" else _MODES[p.layer.neuron]


def run_stream_native(p, a: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    from toolchain.errors import SimulationError
    from toolchain.neurons.kernels.native.calls import SigmaDelta
    a = a.contiguous()
    messages, state = torch.empty_like(a), torch.empty_like(a)
    total = int(a.shape[0])
    n = int(a[0].numel()) if total else 0
    bias = _bias_rows(p.bias, 1, tuple(a.shape[1:]))[0] if _mode(p) == 1 else None
    if SigmaDelta(total, n, _mode(p), a, p.vth, messages, state, bias).run() != 0:
        raise SimulationError(f"layer '{p.layer.name}': the compiled sigma-delta kernel refused its arguments")
    return messages, state


def run_stream_steps(p, a: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """run_stream in torch ops (any device): sigma as a wrapped running sum, the delta encoder step by step."""
    act, sigma = activations(p, a)
    if _mode(p) == 2:
        return sigma, sigma
    messages, residues = delta_encode_steps(act, p.vth)
    return messages, (residues if p.kind == "input" else sigma)


def activations(p, a: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(act, sigma) over the stream, (total, *out) int64 each, from the synaptic input a (int32 values, int64)."""
    if p.kind == "input":                                  # Delta: the input itself, << 12
        act = wrap_int32(torch.bitwise_left_shift(a, SDNN_EXP))
        return act, torch.zeros_like(act)
    sigma = wrap_int32(torch.cumsum(a, dim=0))                # int32 adds wrap: the wrapped running sum
    if p.layer.neuron == "sigma":
        return sigma, sigma
    biased = wrap_int32(sigma + p.bias) if p.bias is not None else sigma
    return torch.clamp_min(biased, 0), sigma


def delta_encode_steps(act: torch.Tensor, vth: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(messages m >> 6, residues r), (total, *out) int64, of the delta encoder over the stream of act."""
    total = act.shape[0]
    messages = torch.empty_like(act)
    residues = torch.empty_like(act)
    if total == 0:
        return messages, residues
    r = torch.zeros_like(act[0])
    prev = torch.zeros_like(act[0])
    for t in range(total):
        d = wrap_int32(act[t] - prev + r)
        fire = (torch.abs(d) >= vth) & (d != INT32_MIN)
        m = torch.where(fire, d, torch.zeros_like(d))
        r = d - m
        messages[t] = torch.bitwise_right_shift(m, _STATE_EXP)
        residues[t] = r
        prev = act[t]
    return messages, residues

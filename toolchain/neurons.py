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

Both carry `dt`, the time steps since the neuron's last spike, for the STDB surrogate.
`run_neurons` loops a step function over the time axis of a (T, B, ...) current tensor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Union

import torch

from .fixed_point import DECAY_UNITY, STATE_MAX

Number = Union[float, torch.Tensor]


class NeuronState(NamedTuple):
    v: torch.Tensor          # membrane voltage
    u: torch.Tensor          # synaptic current (CUBA only; zeros for the subtractive neuron)
    dt: torch.Tensor         # time steps since the last spike


def initial_state(like: torch.Tensor) -> NeuronState:
    """Zero state; dt counts from the start of the sample. (Starting dt far in the past, so that silent
    neurons pass no STDB gradient, was measured on digits: fine-tuning then collapsed to 70-80%.)"""
    z = torch.zeros_like(like)
    return NeuronState(z, z, z)


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


def cuba_step(current: torch.Tensor, state: NeuronState, params: CubaParams, spike_fn: Callable) -> tuple:
    """One step of Loihi's CUBA LIF. `current` is the synaptic input a[t] in integer units."""
    u = _wrap24(loihi_decay(state.u, params.i_decay) + current * 64)
    v = loihi_decay(state.v, params.v_decay) + u
    if params.bias is not None:
        v = v + params.bias * 64
    v = torch.clamp(v, -STATE_MAX, STATE_MAX)
    vth = params.vth * 64
    spikes = spike_fn(v / vth - 1.0, state.dt)
    v = v * (1.0 - spikes.detach())
    return spikes, NeuronState(v, u, _next_dt(spikes, state.dt))


def run_neurons(currents: torch.Tensor, step: Callable, params, spike_fn: Callable,
                state: Optional[NeuronState] = None) -> tuple:
    """Loop `step` over the leading time axis of `currents` (T, B, ...); returns spikes (T, B, ...) and the final state."""
    state = initial_state(currents[0]) if state is None else state
    out = []
    for t in range(currents.shape[0]):
        s, state = step(currents[t], state, params, spike_fn)
        out.append(s)
    return torch.stack(out), state

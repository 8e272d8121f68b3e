"""Loihi's current-based LIF neuron ("loihi-cuba"), reset to zero, in Lava's integer units (see
toolchain/quantization/fixed_point.py):

    u <- decay(u, i_decay) + (a << 6)   (24-bit wrap);  v <- decay(v, v_decay) + u + (bias << 6)  (24-bit clip)
    s = 1[v > vth << 6];  v <- 0 where s

with decay(x, d) = sign(x) * floor(|x| * (4096 - d) / 4096). The same step runs exactly (float64 state,
`exact=True`: bit for bit Lava's fixed-point model) and quantization-aware in training (rounding in the forward
pass, straight-through gradient; fused: kernels/cuba.py). Training runs it on the deployed network (the lowered
chain, quantized weights and thresholds: toolchain/snn/deployed.py), so the chip runs the trained network; its
thresholds are balanced with the IF neuron at conversion, then fine-tuned.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch

from ..quantization.fixed_point import DECAY_UNITY, STATE_MAX
from .base import ChipNeuron, NeuronModel, NeuronState, NirNeuron, next_dt
from .kernels import FusedRun
from .kernels import cuba as kernel

Number = Union[float, torch.Tensor]


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


def wrap24(u: torch.Tensor) -> torch.Tensor:
    """Lava's 24-bit current wrap: values above 2**23 or at/below -2**23 come back by 2**24."""
    m = STATE_MAX + 1
    wrapped = torch.where(u > m, u - 2 * m, u)
    return torch.where(wrapped <= -m, u + 2 * m, wrapped)


@dataclass(frozen=True)
class CubaParams:
    vth: Number                      # threshold, in synaptic-input units
    i_decay: int = DECAY_UNITY       # 1..4096
    v_decay: int = 0                 # 0..4095
    bias: Optional[torch.Tensor] = None   # synaptic-input units, broadcastable to the current
    exact: bool = False              # True: bit-exact integer arithmetic (no gradient through rounding needed)

    def integrate(self, current: torch.Tensor, state: NeuronState) -> tuple:
        """(v before the 24-bit clip, u) of one step: u = wrap24(decay(u) + 64 a), v = decay(v) + u (+ 64 bias)."""
        u = wrap24(loihi_decay(state.u, self.i_decay) + current * 64)
        v = loihi_decay(state.v, self.v_decay) + u
        if self.bias is not None:
            v = v + self.bias * 64
        return v, u


def cuba_step(current: torch.Tensor, state: NeuronState, params: CubaParams, spike_fn: Callable) -> tuple:
    """One step of Loihi's CUBA LIF. `current` is the synaptic input a[t] in integer units."""
    v, u = params.integrate(current, state)
    v = torch.clamp(v, -STATE_MAX, STATE_MAX)
    vth = params.vth * 64
    spikes = spike_fn(v / vth - 1.0, state.dt)
    v = v * (1.0 - spikes.detach())
    return spikes, NeuronState(v, u, next_dt(spikes, state.dt))


def _float_params(config, threshold):
    return CubaParams(threshold, config.i_decay, config.v_decay)


def _deployed_params(config, vth: float, bias: Optional[torch.Tensor]) -> CubaParams:
    return CubaParams(vth, config.i_decay, config.v_decay, bias)


def _chip(config) -> ChipNeuron:
    return ChipNeuron(int(config.i_decay), int(config.v_decay))


def _nir(config, if_node: str) -> NirNeuron:
    """NIR's CubaLIF: I = (1 - i_decay/4096) I + a; v = (1 - v_decay/4096) v + I (current first, Loihi's order)."""
    return NirNeuron("cuba", "I = (1 - i_decay/4096) I + a; v = (1 - v_decay/4096) v + I; s = v > v_threshold; "
                             "v = 0 where s", {"i_decay": int(config.i_decay), "v_decay": int(config.v_decay)})


FUSED = FusedRun(run=kernel.run_cuba, accepts=kernel.accepts)

LOIHI_CUBA = NeuronModel(
    name="loihi-cuba", summary="Loihi's CUBA LIF, reset to zero: trains quantization-aware on the deployed network",
    reset="zero", step=cuba_step, params=_float_params, reads=("i_decay", "v_decay"), fused=FUSED,
    trains_deployed=True, deployed_params=_deployed_params, converts_as="if", chip=_chip, nir=_nir)

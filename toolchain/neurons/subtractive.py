"""The integrate-and-fire / leaky integrate-and-fire neuron of Rathi et al., reset by subtraction:

    v <- leak * v + I;  s = 1[v > threshold];  v <- v - threshold * s

"if" is leak 1; "lif" reads the SnnConfig's leak. Both train and run on the network as written, fused
(kernels/subtractive.py) and block by block (kernels/stack.py). On Loihi they become CUBA neurons without current
memory (i_decay 4096) and v_decay = (1 - leak) * 4096, which reset to zero: the deployed network differs (a
DeploymentWarning at export), unless fine-tuned under Loihi's own neuron (loihi_cuba).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
import torch

from ..quantization.fixed_point import DECAY_UNITY
from .base import ChipNeuron, NeuronModel, NeuronState, next_dt
from .kernels import FusedRun
from .kernels import subtractive as kernel

Number = Union[float, torch.Tensor]


@dataclass(frozen=True)
class SubtractiveParams:
    threshold: Number
    leak: float = 1.0


def subtractive_step(current: torch.Tensor, state: NeuronState, params: SubtractiveParams,
                     spike_fn: Callable) -> tuple:
    v = params.leak * state.v + current
    spikes = spike_fn(v / params.threshold - 1.0, state.dt)
    v = v - params.threshold * spikes.detach()      # the reset carries no gradient (as in Rathi et al.'s code)
    return spikes, NeuronState(v, state.u, next_dt(spikes, state.dt))


def _params(config, threshold) -> SubtractiveParams:
    return SubtractiveParams(threshold, config.leak)


def _chip(config) -> ChipNeuron:
    return ChipNeuron(DECAY_UNITY, int(round((1.0 - config.leak) * DECAY_UNITY)),
                      differs=f"neuron model '{config.neuron}' resets by subtraction; Loihi resets to zero, so the "
                              f"deployed network differs: fine-tune with --neuron loihi-cuba for one that matches")


def _nir_if(nir, shape, theta: float, config, dt: float):
    return _nir(nir, shape, theta, config, dt, leaky=False)


def _nir_lif(nir, shape, theta: float, config, dt: float):
    return _nir(nir, shape, theta, config, dt, leaky=config.leak < 1.0)


def _nir(nir, shape, theta: float, config, dt: float, leaky: bool):
    """NIR's LIF (leaky) or IF node; v_reset 0 is not used (the node's "reset": "subtract" says so)."""
    full = lambda v: np.full(shape, v, dtype=np.float32)       # noqa: E731
    meta = {"neuron_model": config.neuron, "threshold": theta, "leak": float(config.leak)}
    if leaky:
        tau = dt / (1.0 - config.leak)
        meta["equations"] = "v = leak * v + I; s = v > v_threshold; v -= v_threshold where s"
        return nir.LIF(tau=full(tau), r=full(tau / dt), v_leak=full(0.0), v_threshold=full(theta),
                       v_reset=full(0.0), metadata=meta)
    meta["equations"] = "v = v + I; s = v > v_threshold; v -= v_threshold where s"
    return nir.IF(r=full(1.0 / dt), v_threshold=full(theta), v_reset=full(0.0), metadata=meta)


FUSED = FusedRun(run=kernel.run_subtractive, accepts=kernel.accepts, block=True)

IF = NeuronModel(name="if", summary="integrate-and-fire, reset by subtraction (Rathi et al.)", reset="subtract",
                 step=subtractive_step, params=_params, fused=FUSED, chip=_chip, nir=_nir_if)
LIF = NeuronModel(name="lif", summary="leaky integrate-and-fire (--leak), reset by subtraction", reset="subtract",
                  step=subtractive_step, params=_params, reads=("leak",), fused=FUSED, chip=_chip, nir=_nir_lif)

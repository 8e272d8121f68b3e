"""The integrate-and-fire / leaky integrate-and-fire neuron of Rathi et al., reset by subtraction:

    v <- leak * v + I;  s = 1[v > threshold];  v <- v - threshold * s

or, with SnnConfig.reset = "zero" (NIR's IF / LIF; networks imported from other simulators), v <- 0 where s.

"if" is leak 1; "lif" reads the SnnConfig's leak. Both train and run on the network as written, fused
(kernels/subtractive.py) and block by block (kernels/stack.py). On Loihi they become CUBA neurons without current
memory (i_decay 4096) and v_decay = (1 - leak) * 4096, which reset to zero: the deployed network differs (a
DeploymentWarning at export), unless fine-tuned under Loihi's own neuron (loihi_cuba).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import torch

from ..quantization.fixed_point import DECAY_UNITY
from .base import ChipNeuron, NeuronModel, NeuronState, NirNeuron, next_dt
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


def zero_reset_step(current: torch.Tensor, state: NeuronState, params: SubtractiveParams,
                    spike_fn: Callable) -> tuple:
    """IF / LIF with reset to zero (NIR's IF / LIF, and the networks imported from snnTorch, Norse, SpikingJelly):
    v <- leak * v + I;  s = 1[v > threshold];  v <- 0 where s."""
    v = params.leak * state.v + current
    spikes = spike_fn(v / params.threshold - 1.0, state.dt)
    v = v * (1.0 - spikes.detach())
    return spikes, NeuronState(v, state.u, next_dt(spikes, state.dt))


def _chip(config) -> ChipNeuron:
    return ChipNeuron(DECAY_UNITY, int(round((1.0 - config.leak) * DECAY_UNITY)),
                      differs=f"neuron model '{config.neuron}' resets by subtraction; Loihi resets to zero, so the "
                              f"deployed network differs: fine-tune with --neuron loihi-cuba (or --reset zero) for one "
                              f"that matches")


def _chip_zero(config) -> ChipNeuron:
    """Reset to zero is Loihi's: the chip computes this neuron (up to quantization)."""
    return ChipNeuron(DECAY_UNITY, int(round((1.0 - config.leak) * DECAY_UNITY)))


def _nir(reset: str):
    """The NIR node of IF / LIF resetting this way: NIR's LIF where the neuron leaks (or `if_node` "lif": a LIF
    node whose leak is 1 in float32, for snnTorch), else NIR's IF. NIR's IF / LIF reset to v_reset = 0; reset by
    subtraction is said in the node's metadata ("reset": "subtract")."""
    after = "v = 0 where s" if reset == "zero" else "v -= v_threshold where s"

    def node(config, if_node: str) -> NirNeuron:
        if config.neuron == "lif" and config.leak < 1.0:
            return NirNeuron("lif", f"v = leak * v + I; s = v > v_threshold; {after}", {"leak": float(config.leak)})
        if if_node == "lif":
            return NirNeuron("lif", f"v = v + I; s = v > v_threshold; {after}", {"leak": 1.0})
        return NirNeuron("if", f"v = v + I; s = v > v_threshold; {after}")
    return node


FUSED = FusedRun(run=kernel.run_subtractive, accepts=kernel.accepts, block=True)
RESETS = ("subtract", "zero")


def _model(name: str, summary: str, reads=()) -> NeuronModel:
    """The model resetting by subtraction (fused, block by block), with its reset-to-zero form (looped over time)."""
    zero = NeuronModel(name=name, summary=summary + ", reset to zero", reset="zero", step=zero_reset_step,
                       params=_params, reads=reads, chip=_chip_zero, nir=_nir("zero"), resets=RESETS)
    return NeuronModel(name=name, summary=summary + ", reset by subtraction (Rathi et al.; --reset zero: to zero)",
                       reset="subtract", step=subtractive_step, params=_params, reads=reads, fused=FUSED, chip=_chip,
                       nir=_nir("subtract"), resets=RESETS, zero_reset=zero)


IF = _model("if", "integrate-and-fire")
LIF = _model("lif", "leaky integrate-and-fire (--leak)", reads=("leak",))

"""The neuron-model interface: what one registered model gives every stage, and the state its step functions carry.

A neuron model's dynamics are a pure step function (after Norse): `step(current, state, params, spike_fn) ->
(spikes, state)`. Around it, a `NeuronModel` entry says

- `params(config, threshold)`: its step's parameters for one spiking layer, from the typed SnnConfig
  (`reads`: the settings it reads besides the thresholds);
- `fused`: its fast T-step run, if any (toolchain.neurons.kernels); `toolchain.neurons.run.execution_path`
  decides when it runs;
- `trains_deployed` / `deployed_params`: whether training runs the deployed network (lowered, quantized: QAT) and
  its step's parameters there, in integer units; `converts_as`: the model conversion balances thresholds with;
- `chip(config)`: its form on Loihi, a `ChipNeuron` (Loihi's CUBA neuron, the one neuron netx, Lava and the bit-exact
  emulator run, with the decays that reproduce it, and how the chip's neuron differs from the trained one);
- `nir(config, if_node)`: its NIR node, as a `NirNeuron` (the NIR primitive and its per-step parameters;
  toolchain.io.nir writes it);
- `resets` / `zero_reset`: the resets SnnConfig.reset may choose (IF / LIF: "subtract", theirs, or "zero", the
  reset of NIR's IF / LIF and of networks imported from snnTorch, Norse and SpikingJelly) and the same model
  resetting to zero; `with_reset` picks the one a configuration runs.

What a model lacks, `chip_form` and `nir_node` refuse in one line (NotSupportedError). Every neuron carries `dt`,
the time steps since its last spike, for the STDB surrogate; a neuron that has not fired yet in this sample has
dt = inf (its last spike is infinitely far in the past), so the STDB surrogate alpha * exp(-beta * dt) passes it no
gradient, as in Rathi et al.'s code (last spike times start at -1000 there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional, Tuple

import torch

from ..errors import ConfigError, NotSupportedError
from .kernels import FusedRun


class NeuronState(NamedTuple):
    v: torch.Tensor          # membrane voltage
    u: torch.Tensor          # synaptic current (CUBA only; zeros for the subtractive neuron)
    dt: torch.Tensor         # time steps since the last spike (inf: none yet in this sample)
    count: Optional[torch.Tensor] = None   # spikes per neuron over the run (int32; set by the fused runs)


def initial_state(like: torch.Tensor) -> NeuronState:
    """Zero potentials; no spike yet (dt = inf). Counting dt from the start of the sample instead gives every
    silent neuron the STDB gradient of one that just fired (alpha * exp(-beta * t), about alpha): the backward
    pass is then that of a network without its ReLUs, and fine-tuning degrades a converted network."""
    z = torch.zeros_like(like)
    return NeuronState(z, z, torch.full_like(like, math.inf))


def next_dt(spikes: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    return torch.where(spikes.detach() > 0, torch.zeros_like(dt), dt + 1)


@dataclass(frozen=True)
class ChipNeuron:
    """A model's form on Loihi: the CUBA LIF neuron (reset to zero; toolchain/quantization/fixed_point.py) with these
    12-bit decays. `differs`: how the chip's neuron differs from the trained one (None: it computes the same)."""
    i_decay: int
    v_decay: int
    differs: Optional[str] = None


@dataclass(frozen=True)
class NirNeuron:
    """A model's NIR node as primitives: `kind` "if", "lif" or "cuba" (NIR's IF, LIF, CubaLIF), `args` its per-step
    parameters (lif: leak; cuba: i_decay, v_decay), `equations` in words for the node's metadata."""
    kind: str
    equations: str
    args: dict = field(default_factory=dict)


@dataclass(frozen=True)
class NeuronModel:
    name: str
    summary: str                                     # one line, for the CLI
    reset: str                                       # after a spike: "subtract" (v -= threshold) or "zero"
    step: Callable                                   # (current, state, params, spike_fn) -> (spikes, state)
    params: Callable                                 # (SnnConfig, threshold) -> the step's params for one layer
    reads: Tuple[str, ...] = ()                      # SnnConfig settings it reads besides the thresholds
    fused: Optional[FusedRun] = None                 # its fast T-step run
    trains_deployed: bool = False                    # training runs the lowered, quantized chain (QAT)
    deployed_params: Optional[Callable] = None       # (SnnConfig, vth, bias) -> params on that chain (integer units)
    converts_as: Optional[str] = None                # conversion balances thresholds with this model instead
    chip: Optional[Callable] = None                  # (SnnConfig) -> ChipNeuron
    nir: Optional[Callable] = None                   # (SnnConfig, if_node) -> NirNeuron
    resets: Tuple[str, ...] = ()                     # the resets SnnConfig.reset may select (empty: its own only)
    zero_reset: Optional["NeuronModel"] = None       # this model resetting to zero (SnnConfig.reset = "zero")

    @property
    def resettable(self) -> bool:
        return bool(self.resets)

    def with_reset(self, reset: str) -> "NeuronModel":
        """The model a configuration with this reset runs (a model without a choice of reset ignores it)."""
        if not self.resets:
            return self
        if reset not in self.resets:
            raise ConfigError(f"neuron model '{self.name}' cannot reset by '{reset}'; valid: {', '.join(self.resets)}")
        return self.zero_reset if reset == "zero" and self.reset != "zero" else self

    def chip_form(self, config) -> ChipNeuron:
        if self.chip is None:
            raise NotSupportedError(f"neuron model '{self.name}' has no Loihi fixed-point form: it cannot be exported")
        return self.chip(config)

    def nir_node(self, config, if_node: str = "if") -> NirNeuron:
        if self.nir is None:
            raise NotSupportedError(f"neuron model '{self.name}' has no NIR node")
        return self.nir(config, if_node)

"""The spiking network in torch, batched, run layer by layer over all time steps at once.

Input x (B, ...) is coded into a (T, B, ...) sequence by the configuration's input coding (toolchain.coding). Each
synaptic layer is applied to all T steps as one batch; each Spike layer runs the configuration's neuron model over
T (toolchain.neurons.run_neurons). The output layer accumulates its membrane potential; the readout is that
accumulation divided by T. This layer-major order computes exactly what a time-major loop computes for a
feed-forward network, and it is what Lava computes once each layer's one-step delay is accounted for. Where
`execution_path` says BLOCK (IF/LIF on the CPU with the compiled kernels), each run of conv -> spike [-> pool /
dropout] layers goes a block of time steps at a time through all its layers, and each linear -> spike layer as one
unit (toolchain/neurons/kernels/stack.py): the same numbers, without whole-run currents.

A neuron model that `trains_deployed` (Loihi CUBA) runs on the deployed network instead (toolchain/snn/deployed.py:
the lowered chain, quantized weights and thresholds with straight-through rounding), so that the chip runs the
trained network.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import sharding
from ..coding import InputEncoder, integer_input
from ..errors import ConfigError
from ..ir import AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, Network, Residual, Spike
from ..ir.lowering import lower
from ..ir.torch_net import build_modules
from ..neurons import run_neurons
from ..neurons.kernels import stack as spiking_stack
from ..neurons.run import BLOCK, execution_path
from .config import SnnConfig
from .deployed import run_deployed
from .steps import per_sample, per_step


@dataclass
class SnnOutput:
    logits: torch.Tensor                       # (B, classes): accumulated output potential / T
    spike_counts: Dict[str, torch.Tensor]      # per spiking layer: spikes summed over time, per sample (B,)
    neurons: Dict[str, int]


class SnnModel(nn.Module):
    def __init__(self, net: Network, config: SnnConfig):
        super().__init__()
        self.net, self.config = net, config
        self.layers = build_modules(net)
        self.calibrator: Optional[Callable[[str, torch.Tensor], float]] = None

    # -- public -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, timesteps: Optional[int] = None, encoder: Optional[InputEncoder] = None) -> SnnOutput:
        T = timesteps or self.config.timesteps
        encoder = encoder or InputEncoder(self.config.coding, seed=None)
        counts, neurons = {}, {}
        if self.config.model.trains_deployed:
            scale = self.config.deployed_input_scale()
            seq = torch.stack([integer_input(encoder(x, t), scale, straight_through=True) for t in range(T)])
            out = run_deployed(self.lowered(), seq, self.config, scale, counts, neurons)
        else:
            out = self._run(self.net.layers, torch.stack([encoder(x, t) for t in range(T)]), counts, neurons)
        return SnnOutput(out.sum(0) / T, counts, neurons)

    # -- the network as written -------------------------------------------------------------------
    def _run(self, layers, h, counts, neurons):
        i = 0
        while i < len(layers):
            stages, j = self._stage_run(layers, i, h)
            if stages:                  # a run of spiking layers, a block of time steps at a time
                h, i = self._run_stages(stages, h, counts, neurons), j
                continue
            layer, nxt = layers[i], (layers[i + 1] if i + 1 < len(layers) else None)
            i += 1
            if isinstance(layer, Spike) and isinstance(nxt, AvgPool2d):   # the pool runs inside the neurons
                h, i = self._spike(layer.name, h, counts, neurons, pool=nxt.kernel_size), i + 1
            elif isinstance(layer, Spike) and isinstance(nxt, Dropout) and self.training and nxt.p > 0:
                h, i = self._spike(layer.name, h, counts, neurons, mask=self._mask(nxt, h)), i + 1
            else:
                h = self._layer(layer, h, counts, neurons)
        return h

    def _stage_run(self, layers, i, h):
        """The stages (kernels.stack) starting at layers[i]: a run of Conv2d -> Spike [-> AvgPool2d or Dropout] (or
        one Linear -> Spike [-> Dropout]) where the block-by-block path applies (`execution_path`, and no calibration:
        it reads each layer's currents whole); ([], i) if none."""
        if self.calibrator is not None:
            return [], i
        if execution_path(self.config.model.step, self.config.spike_fn(), h, stage=True) != BLOCK:
            return [], i
        stages, shape, B = [], tuple(h.shape[2:]), h.shape[1]
        while i + 1 < len(layers) and isinstance(layers[i + 1], Spike):
            syn = layers[i]
            if not isinstance(syn, Conv2d if (stages and stages[0].is_conv) else (Conv2d, Linear)):
                break
            module = self.layers[syn.name]
            shape = syn.out_shape(shape)
            nxt, j, pool, mask = (layers[i + 2] if i + 2 < len(layers) else None), i + 2, 0, None
            if isinstance(nxt, AvgPool2d):
                if nxt.kernel_size ** 2 > 255:      # the saved pooled counts are bytes: layer by layer from here
                    break
                pool, j = nxt.kernel_size, j + 1
            elif isinstance(nxt, Dropout):
                if self.training and nxt.p > 0:
                    mask = self._mask(nxt, _like((1, B) + shape, h.dtype, isinstance(syn, Conv2d)))
                j += 1
            name = layers[i + 1].name
            p = self.config.model.params(self.config, float(self.threshold(name, None)))
            stages.append(spiking_stack.Stage(name, module, p.threshold, p.leak, pool, mask))
            if pool:
                shape = shape[:1] + (shape[1] // pool, shape[2] // pool)
            i = j
            if isinstance(syn, Linear):
                break
        return stages, i

    def _run_stages(self, stages, h, counts, neurons):
        out, per_neuron = spiking_stack.run_stages(h, stages, self.config.spike_fn())
        for stage, count in zip(stages, per_neuron):
            counts[stage.name] = per_sample(count, h.dtype)
            neurons[stage.name] = count[0].numel()
        return out

    def _layer(self, layer, h, counts, neurons):
        if isinstance(layer, (Conv2d, Linear, BatchNorm2d, BatchNorm1d)):
            return per_step(self.layers[layer.name], h, channels_last=isinstance(layer, Conv2d))
        if isinstance(layer, Spike):
            return self._spike(layer.name, h, counts, neurons)
        if isinstance(layer, AvgPool2d):
            return per_step(lambda z: F.avg_pool2d(z, layer.kernel_size), h)
        if isinstance(layer, Flatten):
            return h.flatten(2)
        if isinstance(layer, Dropout):
            return h * self._mask(layer, h)
        if isinstance(layer, Residual):
            body = self._run(layer.body, h, counts, neurons)
            return body + (self._run(layer.shortcut, h, counts, neurons) if layer.shortcut else h)
        raise TypeError(f"unhandled layer {layer}")

    def _mask(self, layer: Dropout, h: torch.Tensor) -> torch.Tensor:
        """One dropout mask per sample, the same at every time step (as in Rathi et al.)."""
        if not self.training or layer.p == 0:
            return torch.ones_like(h[0])
        return sharding.dropout_mask(h[0], layer.p)        # drawn for the global batch under data parallelism

    def threshold(self, name: str, currents: torch.Tensor) -> float:
        if self.calibrator is not None and name not in self.config.thresholds:
            self.config.thresholds[name] = float(self.calibrator(name, currents.detach()))
        if name not in self.config.thresholds:
            raise ConfigError(f"spiking layer '{name}' has no threshold: convert the ANN first")
        return self.config.thresholds[name]

    def _spike(self, name, currents, counts, neurons, pool=0, mask=None):
        """The spiking layer; `pool` = k: followed by a k x k average pool, which the neurons apply as they fire
        (the full-size spike tensor is never stored; the pooled sum times k*k is the spike count); `mask`: followed
        by dropout with this mask, applied as they fire."""
        model = self.config.model
        params = model.params(self.config, self.threshold(name, currents))
        spikes, state = run_neurons(currents, model.step, params, self.config.spike_fn(), pool=pool, mask=mask)
        if state.count is not None:                                          # the neurons counted their spikes
            counts[name] = per_sample(state.count, spikes.dtype)
        else:
            by_step = spikes.detach().sum(tuple(range(2, spikes.dim())))    # (T, B), without copying the spikes
            if pool:
                by_step = by_step * (pool * pool)
            counts[name] = by_step.to(torch.int64).sum(0).to(spikes.dtype)   # exact integer counts
        neurons[name] = currents[0, 0].numel()
        return spikes

    # -- the deployed network ----------------------------------------------------------------------
    def lowered(self):
        params = dict(self.layers.named_parameters())
        params.update(dict(self.layers.named_buffers()))
        return lower(self.net, params, self.config.thresholds)


def _like(shape, dtype, channels_last: bool) -> torch.Tensor:
    """An empty tensor of this shape in the layout the layer-by-layer path gives a conv's currents (so that a
    dropout mask drawn for it is the same)."""
    x = torch.empty(shape, dtype=dtype)
    if channels_last and dtype == torch.float32:
        T, B = shape[:2]
        x = x.reshape((T * B,) + shape[2:]).contiguous(memory_format=torch.channels_last).reshape(shape)
    return x

"""The spiking network in torch, batched, run layer by layer over all time steps at once.

Input x (B, ...) is coded into a (T, B, ...) sequence (Poisson spikes, or the analog image every
step for direct coding). Each synaptic layer is applied to all T steps as one batch; each Spike
layer runs its neurons over T (`toolchain.neurons`). The output layer accumulates its membrane
potential; the readout is that accumulation divided by T. This layer-major order computes exactly
what a time-major loop computes for a feed-forward network, and it is what Lava computes once each
layer's one-step delay is accounted for. On the CPU with the compiled neuron kernels, IF/LIF networks run each
run of conv -> spike [-> pool / dropout] layers a block of time steps at a time through all its layers, and each
linear -> spike layer as one unit (toolchain/spiking_stack.py): the same numbers, without whole-run currents.

Neuron models: "if" / "lif" (reset by subtraction, Rathi et al.) run on the network as written;
"loihi-cuba" runs on the lowered chain (pooling and batch norm folded) with Loihi's CUBA dynamics
and quantized weights and thresholds (straight-through rounding), i.e. the deployed network. Its currents are
integers: a folded pool runs as a sum pool before the layer's un-repeated weights, the same currents at a
quarter of the work for 2 x 2 pools, and the neurons run fused (toolchain.neurons._CubaRun).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data.encoding import InputEncoder
from .errors import ConfigError
from .fixed_point import DECAY_UNITY, VTH_MAX
from .ir import AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, Network, Residual, Spike
from .lowering import lower
from .neurons import CubaParams, SubtractiveParams, cuba_step, run_neurons, subtractive_step, zero_reset_step
from .quantize import fake_quant_bias, fake_quant_weight, layer_scale, round_ste
from .surrogates import Surrogate, get_surrogate
from .torch_net import build_modules
from . import spiking_stack

NEURON_MODELS = ("if", "lif", "loihi-cuba")
RESETS = ("subtract", "zero")           # if / lif: reset by subtraction (Rathi et al.) or to zero (imported networks)


@dataclass
class SnnConfig:
    """Everything besides the weights that defines the SNN."""
    thresholds: Dict[str, float] = field(default_factory=dict)
    neuron: str = "if"
    leak: float = 1.0
    coding: str = "poisson"
    timesteps: int = 20
    surrogate: Dict[str, float] = field(default_factory=lambda: {"name": "stdb"})
    i_decay: int = DECAY_UNITY          # loihi-cuba current decay (4096: no current memory)
    v_decay: int = 0                    # loihi-cuba voltage decay (0: no leak)
    input_scale: float = 1.0            # loihi-cuba direct coding: integer input = round(x * input_scale)
    reset: str = "subtract"             # if / lif: "subtract" (v -= threshold) or "zero" (v = 0); loihi-cuba: zero

    def __post_init__(self):
        if self.reset not in RESETS:
            raise ConfigError(f"unknown reset {self.reset!r}; valid: {', '.join(RESETS)}")
        if self.neuron not in NEURON_MODELS:
            raise ConfigError(f"unknown neuron model {self.neuron!r}; valid: {', '.join(NEURON_MODELS)}")
        if not 0.0 < self.leak <= 1.0:
            raise ConfigError(f"leak must be in (0, 1], got {self.leak}")
        if self.timesteps < 1:
            raise ConfigError(f"timesteps must be >= 1, got {self.timesteps}")
        if not 1 <= self.i_decay <= DECAY_UNITY or not 0 <= self.v_decay < DECAY_UNITY:
            raise ConfigError(f"decays must be 1..4096 (current) and 0..4095 (voltage), got {self.i_decay}, {self.v_decay}")

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "SnnConfig":
        return SnnConfig(**d)

    def differences(self, other: Optional[dict]) -> list:
        """The settings in which `other` (a to_dict() of another config) differs from this one, sorted."""
        mine, other = self.to_dict(), {"reset": "subtract", **(other or {})}   # checkpoints from before `reset`
        return sorted(k for k in mine if other.get(k) != mine[k])

    def spike_fn(self) -> Surrogate:
        return get_surrogate(**self.surrogate)


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
        if self.config.neuron == "loihi-cuba":
            seq = torch.stack([self._integer_input(encoder(x, t)) for t in range(T)])
            out = self._run_lowered(seq, counts, neurons)
        else:
            out = self._run(self.net.layers, torch.stack([encoder(x, t) for t in range(T)]), counts, neurons)
        return SnnOutput(out.sum(0) / T, counts, neurons)

    # -- the network as written (IF / LIF) -----------------------------------------------------
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
        """The stages (toolchain.spiking_stack) starting at layers[i]: a run of Conv2d -> Spike [-> AvgPool2d or
        Dropout] (or one Linear -> Spike [-> Dropout]) where the block-by-block path applies; ([], i) if none."""
        if self.config.neuron == "loihi-cuba" or self.calibrator is not None or self.config.reset != "subtract":
            return [], i
        if not spiking_stack.supported(h, h.shape[0], self.config.spike_fn()):
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
            stages.append(spiking_stack.Stage(name, module, float(self.threshold(name, None)), self.config.leak,
                                              pool, mask))
            if pool:
                shape = shape[:1] + (shape[1] // pool, shape[2] // pool)
            i = j
            if isinstance(syn, Linear):
                break
        return stages, i

    def _run_stages(self, stages, h, counts, neurons):
        out, per_neuron = spiking_stack.run_stages(h, stages, self.config.spike_fn())
        for stage, count in zip(stages, per_neuron):
            counts[stage.name] = _per_sample(count, h.dtype)
            neurons[stage.name] = count[0].numel()
        return out

    def _layer(self, layer, h, counts, neurons):
        if isinstance(layer, (Conv2d, Linear, BatchNorm2d, BatchNorm1d)):
            return _per_step(self.layers[layer.name], h, channels_last=isinstance(layer, Conv2d))
        if isinstance(layer, Spike):
            return self._spike(layer.name, h, counts, neurons)
        if isinstance(layer, AvgPool2d):
            return _per_step(lambda z: F.avg_pool2d(z, layer.kernel_size), h)
        if isinstance(layer, Flatten):
            return h.flatten(2)
        if isinstance(layer, Dropout):
            return h * self._mask(layer, h)
        if isinstance(layer, Residual):
            body = self._run(layer.body, h, counts, neurons)
            return body + (self._run(layer.shortcut, h, counts, neurons) if layer.shortcut else h)
        raise TypeError(f"unhandled layer {layer}")

    def _if_step(self):
        """The IF / LIF step function of the configured reset (only reset by subtraction runs fused)."""
        return zero_reset_step if self.config.reset == "zero" else subtractive_step

    def _mask(self, layer: Dropout, h: torch.Tensor) -> torch.Tensor:
        """One dropout mask per sample, the same at every time step (as in Rathi et al.)."""
        if not self.training or layer.p == 0:
            return torch.ones_like(h[0])
        return F.dropout(torch.ones_like(h[0]), layer.p, True)

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
        params = SubtractiveParams(self.threshold(name, currents), self.config.leak)
        spikes, state = run_neurons(currents, self._if_step(), params, self.config.spike_fn(), pool=pool, mask=mask)
        if state.count is not None:                                          # the neurons counted their spikes
            counts[name] = _per_sample(state.count, spikes.dtype)
        else:
            per_step = spikes.detach().sum(tuple(range(2, spikes.dim())))   # (T, B), without copying the spikes
            if pool:
                per_step = per_step * (pool * pool)
            counts[name] = per_step.to(torch.int64).sum(0).to(spikes.dtype)  # exact integer counts
        neurons[name] = currents[0, 0].numel()
        return spikes

    # -- the deployed network (Loihi CUBA, quantized) -----------------------------------------
    def lowered(self):
        params = dict(self.layers.named_parameters())
        params.update(dict(self.layers.named_buffers()))
        return lower(self.net, params, self.config.thresholds)

    def _integer_input(self, x: torch.Tensor) -> torch.Tensor:
        """One step's input to the deployed network: direct coding sends round(x * input_scale) (straight-through).
        Rounded step by step, each a batch below torch's parallel grain size: no thread synchronization."""
        return round_ste(x * self.config.input_scale) if self.config.coding == "direct" else x

    def _run_lowered(self, h, counts, neurons):
        c = self.config
        spike_fn = c.spike_fn()
        chain = self.lowered()
        for i, layer in enumerate(chain):
            in_scale = c.input_scale if (i == 0 and c.coding == "direct") else 1.0
            weight = layer.weight if layer.block_weight is None else layer.block_weight   # the same values, once
            scale = layer_scale(weight, layer.threshold, in_scale, layer.name, bias=layer.bias)
            a = _quantized_currents(layer, scale, h)
            bias = None if layer.bias is None else _channel_bias(fake_quant_bias(layer.bias, scale * in_scale), a)
            if layer.threshold is None:
                return self._readout(a, bias, scale * in_scale, spike_fn)
            vth = float(round(layer.threshold * scale * in_scale))      # as convert_layer rounds it
            params = CubaParams(vth, c.i_decay, c.v_decay, bias)
            h, _ = run_neurons(a, cuba_step, params, spike_fn)
            counts[layer.spike_name] = h.detach().sum((0,) + tuple(range(2, h.dim())))   # without a copy
            neurons[layer.spike_name] = h[0, 0].numel()
        raise ConfigError("the lowered network has no output layer")


    def _readout(self, a, bias, current_scale, spike_fn):
        """The output layer as the chip runs it: CUBA neurons with the largest threshold, read as the voltage
        at the last step (24-bit clip and all). Returned per step so that the sum over T is that voltage in
        float units (v / 64 / current_scale)."""
        c = self.config
        params = CubaParams(float(VTH_MAX), c.i_decay, c.v_decay, bias)
        _, state = run_neurons(a, cuba_step, params, spike_fn)
        v_end = state.v / (64.0 * current_scale)
        out = torch.zeros_like(a)
        out[-1] = v_end
        return out


def _quantized_currents(layer, scale: float, h: torch.Tensor) -> torch.Tensor:
    """The currents (T, B, ...) of a lowered layer with fake-quantized weights (`fake_quant_weight` at `scale`) on
    its input h (T, B, ...): integer inputs and weights, so integer currents, exact in any summation order.
    Convolutions run channels-last (see `_per_step`). A layer with a k x k average pool folded in (its weight is k x k
    repeats of `block_weight`, so are its quantized ones) runs as a k x k sum pool of h, then the layer's synapse with
    `block_weight`: the same currents at 1/k^2 of the work, and the same gradient for every parameter (the sum over
    each block that the repeat's backward would make, taken by the synapse on the pooled sums)."""
    if not _sum_pool_applies(layer):
        w = fake_quant_weight(layer.weight, scale)
        return _per_step(lambda z: layer.synapse(z, w), h, channels_last=layer.kind == "conv")
    k, w = layer.pool, fake_quant_weight(layer.block_weight, scale)
    if layer.kind == "conv":
        stride, padding = tuple(s // k for s in layer.stride), tuple(p // k for p in layer.padding)
        synapse = lambda z: F.conv2d(_conv_layout(z), w, None, stride, padding)
    else:
        synapse = lambda z: F.linear(torch.flatten(z, 1), w)
    return _per_step(lambda z: synapse(F.avg_pool2d(z, k, divisor_override=1)), h)


def _sum_pool_applies(layer) -> bool:
    """Whether the layer's folded pool can run as a sum pool before its synapse (see `_quantized_currents`)."""
    k = layer.pool
    if k <= 1 or layer.block_weight is None or len(layer.input_shape) != 3 or layer.input_shape[1] % k \
            or layer.input_shape[2] % k:
        return False
    if layer.kind == "conv":
        return all(v % k == 0 for v in (*layer.stride, *layer.padding))
    return layer.flatten_before


def _per_sample(count: torch.Tensor, dtype) -> torch.Tensor:
    """Spikes per sample (B,) from spikes per neuron (B, ...), summed exactly in integers."""
    return count.reshape(count.shape[0], -1).sum(1, dtype=torch.int64).to(dtype)


def _like(shape, dtype, channels_last: bool) -> torch.Tensor:
    """An empty tensor of this shape in the layout the layer-by-layer path gives a conv's currents (so that a
    dropout mask drawn for it is the same)."""
    x = torch.empty(shape, dtype=dtype)
    if channels_last and dtype == torch.float32:
        T, B = shape[:2]
        x = x.reshape((T * B,) + shape[2:]).contiguous(memory_format=torch.channels_last).reshape(shape)
    return x


def _channel_bias(bias: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return bias.reshape((-1,) + (1,) * (like.dim() - 3)) if like.dim() > 3 else bias


def _per_step(fn, h: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """Apply a per-sample function to all T steps of h (T, B, ...) as one batch. `channels_last`: a conv; on the
    CPU in float32 it runs on (and returns) channels-last tensors, 1.2-2x faster in oneDNN than NCHW (the spiking
    layers, pooling and dropout keep that layout; values are the same up to the convolution's summation order)."""
    T, B = h.shape[:2]
    z = h.reshape((T * B,) + h.shape[2:])
    y = fn(_conv_layout(z) if channels_last else z)
    return y.reshape((T, B) + y.shape[1:])


def _conv_layout(z: torch.Tensor) -> torch.Tensor:
    """A conv's input (N, C, H, W) channels-last on the CPU in float32 (see `_per_step`), else as it is."""
    if z.dim() == 4 and z.device.type == "cpu" and z.dtype == torch.float32:
        return z.contiguous(memory_format=torch.channels_last)
    return z

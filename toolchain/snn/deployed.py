"""The deployed network in torch, for training under Loihi's own dynamics (quantization-aware: a neuron model with
`trains_deployed`, Loihi CUBA): the lowered chain (pooling and batch norm folded, toolchain.ir.lowering) with
fake-quantized weights, thresholds and biases (straight-through rounding), each layer's integer currents through the
model's step at its deployed parameters, the output read as the chip reads it. Its currents are integers: a folded
pool runs as a sum pool before the layer's un-repeated weights, the same currents at a quarter of the work for 2 x 2
pools, and the neurons run fused where execution_path allows."""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..neurons import run_neurons
from ..quantization.fixed_point import VTH_MAX
from ..ir.relays import check_relays
from ..quantization.quantize import fake_quant_bias, fake_quant_weight, layer_scale
from .steps import conv_layout, per_step


def run_deployed(chain, h: torch.Tensor, config, in_scale: Optional[float], counts: Dict, neurons: Dict) -> torch.Tensor:
    """The lowered `chain` on its input h (T, B, ...) (graded input at `in_scale`, None for spikes): per step the
    output layer's contribution to the logits (its voltage at the last step, in float units); per spiking layer its
    spikes per sample into `counts` and its neurons into `neurons`."""
    model, spike_fn = config.model, config.spike_fn()
    check_relays(chain, model.chip_form(config).i_decay)
    for i, layer in enumerate(chain):
        s_in = in_scale if (i == 0 and in_scale is not None) else 1.0
        weight = layer.weight if layer.block_weight is None else layer.block_weight   # the same values, once
        scale = layer_scale(weight, layer.threshold, s_in, layer.name, bias=layer.bias)
        a = quantized_currents(layer, scale, h)
        bias = None if layer.bias is None else channel_bias(fake_quant_bias(layer.bias, scale * s_in), a)
        if layer.threshold is None:
            return readout(a, model, config, bias, scale * s_in, spike_fn)
        vth = float(round(layer.threshold * scale * s_in))      # as convert_layer rounds it
        h, _ = run_neurons(a, model.step, model.deployed_params(config, vth, bias), spike_fn)
        own = h if not layer.relays_out else h[:, :, :layer.body_channels]    # relays are not the network's
        counts[layer.spike_name] = own.detach().sum((0,) + tuple(range(2, h.dim())))   # without a copy
        neurons[layer.spike_name] = own[0, 0].numel()
    raise ConfigError("the lowered network has no output layer")


def readout(a, model, config, bias, current_scale, spike_fn):
    """The output layer as the chip runs it: the model's neurons with the largest threshold, read as the voltage
    at the last step (24-bit clip and all). Returned per step so that the sum over T is that voltage in
    float units (v / 64 / current_scale)."""
    _, state = run_neurons(a, model.step, model.deployed_params(config, float(VTH_MAX), bias), spike_fn)
    v_end = state.v / (64.0 * current_scale)
    out = torch.zeros_like(a)
    out[-1] = v_end
    return out


def quantized_currents(layer, scale: float, h: torch.Tensor) -> torch.Tensor:
    """The currents (T, B, ...) of a lowered layer with fake-quantized weights (`fake_quant_weight` at `scale`) on
    its input h (T, B, ...): integer inputs and weights, so integer currents, exact in any summation order.
    Convolutions run channels-last (see `per_step`). A layer with a k x k average pool folded in (its weight is k x k
    repeats of `block_weight`, so are its quantized ones) runs as a k x k sum pool of h, then the layer's synapse with
    `block_weight`: the same currents at 1/k^2 of the work, and the same gradient for every parameter (the sum over
    each block that the repeat's backward would make, taken by the synapse on the pooled sums)."""
    if not sum_pool_applies(layer):
        w = fake_quant_weight(layer.weight, scale)
        return per_step(lambda z: layer.synapse(z, w), h, channels_last=layer.kind == "conv")
    k, w = layer.pool, fake_quant_weight(layer.block_weight, scale)
    if layer.kind == "conv":
        stride, padding = tuple(s // k for s in layer.stride), tuple(p // k for p in layer.padding)
        synapse = lambda z: F.conv2d(conv_layout(z), w, None, stride, padding)
    else:
        synapse = lambda z: F.linear(torch.flatten(z, 1), w)
    return per_step(lambda z: synapse(F.avg_pool2d(z, k, divisor_override=1)), h)


def sum_pool_applies(layer) -> bool:
    """Whether the layer's folded pool can run as a sum pool before its synapse (see `quantized_currents`)."""
    k = layer.pool
    if k <= 1 or layer.block_weight is None or len(layer.input_shape) != 3 or layer.input_shape[1] % k \
            or layer.input_shape[2] % k:
        return False
    if layer.kind == "conv":
        return all(v % k == 0 for v in (*layer.stride, *layer.padding))
    return layer.flatten_before


def channel_bias(bias: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return bias.reshape((-1,) + (1,) * (like.dim() - 3)) if like.dim() > 3 else bias

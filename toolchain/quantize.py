"""Quantization to Loihi fixed point: SNN checkpoint -> FxNetwork, in three named steps
(after torch.ao): `prepare` (lower the network to a deployable chain), `calibrate` (choose each
layer's scale: float value x scale = integer), `convert` (round, check ranges, report).

Each layer's spikes are binary whatever its scale, so every layer gets its own scale:
    scale = min(254 / max|W|, 131071 / threshold)      (8-bit-mantissa weights, 17-bit threshold)
    weight_int = 2 * round(W * scale / 2)  in [-256, 254]
    vth = round(threshold * scale),  bias_int = round(b * scale)
The first layer's scale also multiplies by the input scale (graded direct input). The same
`fake_quant_weight` serves quantization-aware training (straight-through rounding).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch

from .errors import QuantizationError
from .fixed_point import (BIAS_MAX, BIAS_MIN, DECAY_UNITY, VTH_MAX, WEIGHT_MAX, WEIGHT_MIN, FxLayer, FxNetwork)
from .lowering import LoweredLayer


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def layer_scale(weight: torch.Tensor, threshold: Optional[float], input_scale: float = 1.0, name: str = "?") -> float:
    """Float-to-integer scale of one layer (see the module docstring)."""
    w_max = float(weight.detach().abs().max()) if weight.numel() else 0.0
    limits = []
    if w_max > 0:
        limits.append(WEIGHT_MAX / w_max)
    if threshold is not None:
        if not np.isfinite(threshold) or threshold <= 0:
            raise QuantizationError(f"layer '{name}': threshold {threshold} cannot be represented (must be > 0)")
        limits.append(VTH_MAX / (threshold * input_scale))
    if not limits:
        return 1.0
    scale = min(limits)
    if threshold is not None and round(threshold * input_scale * scale) < 1:
        raise QuantizationError(f"layer '{name}': threshold {threshold:g} rounds to 0 at scale {scale:g}")
    return scale


def fake_quant_weight(weight: torch.Tensor, scale: float) -> torch.Tensor:
    """Integer-valued weights 2 * round(W * scale / 2), clipped to [-256, 254]; straight-through gradient."""
    return torch.clamp(2 * round_ste(weight * (scale / 2)), WEIGHT_MIN, WEIGHT_MAX)


@dataclass
class LayerReport:
    name: str
    kind: str
    scale: float
    vth: Optional[int]
    weight_bits: int
    weight_rms_error: float          # RMS of (dequantized - float) weight, relative to max |W|
    threshold_error: float           # relative error of vth / scale vs the float threshold
    zeroed_weights: int              # non-zero float weights that became 0
    clipped_weights: int
    clipped_bias: int
    source: List[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class QuantReport:
    layers: List[LayerReport]
    warnings: List[str]

    def to_json(self) -> dict:
        return {"layers": [l.to_json() for l in self.layers], "warnings": self.warnings}

    def format(self) -> str:
        head = f"{'layer':<12} {'kind':<6} {'scale':>10} {'vth':>7} {'w rms err':>10} {'th err':>8} {'zeroed':>7} {'clipped':>7}  source"
        rows = [head]
        for l in self.layers:
            vth = "-" if l.vth is None else str(l.vth)
            rows.append(f"{l.name:<12} {l.kind:<6} {l.scale:>10.4g} {vth:>7} {l.weight_rms_error:>10.2e} "
                        f"{l.threshold_error:>8.1e} {l.zeroed_weights:>7} {l.clipped_weights + l.clipped_bias:>7}  "
                        f"{' + '.join(l.source)}")
        return "\n".join(rows + [f"warning: {w}" for w in self.warnings])


def _decays(neuron: str, leak: float, i_decay: int, v_decay: int):
    if neuron == "loihi-cuba":
        return i_decay, v_decay
    return DECAY_UNITY, int(round((1.0 - leak) * DECAY_UNITY))


def convert_layer(layer: LoweredLayer, scale: float, input_scale: float, decays, is_output: bool):
    """Round one lowered layer at `scale`; returns (FxLayer, LayerReport)."""
    w = layer.weight.detach().double().cpu()
    raw = w * scale * input_scale
    w_int = torch.clamp(2 * torch.round(raw / 2), WEIGHT_MIN, WEIGHT_MAX)
    w_max = float(w.abs().max()) if w.numel() else 0.0
    err = float(((w_int / (scale * input_scale) - w) ** 2).mean().sqrt()) / w_max if w_max > 0 else 0.0
    bias = clipped_bias = None
    if layer.bias is not None:
        b = torch.round(layer.bias.detach().double().cpu() * scale * input_scale)
        clipped_bias = int(((b < BIAS_MIN) | (b > BIAS_MAX)).sum())
        bias = torch.clamp(b, BIAS_MIN, BIAS_MAX).numpy().astype(np.int64)
    if is_output:
        vth, th_err = VTH_MAX, 0.0
    else:
        exact = layer.threshold * scale * input_scale
        vth = int(round(exact))
        th_err = abs(vth - exact) / exact
    fx = FxLayer(name=layer.name, kind=layer.kind, weight=w_int.numpy().astype(np.int64),
                 input_shape=tuple(layer.input_shape), output_shape=tuple(layer.output_shape), vth=vth,
                 i_decay=decays[0], v_decay=decays[1], bias=bias, stride=tuple(layer.stride),
                 padding=tuple(layer.padding), flatten_before=layer.flatten_before, is_output=is_output,
                 scale=scale * input_scale, source="+".join(layer.source))
    used = int(np.ceil(np.log2(max(float(w_int.abs().max()), 1.0) + 1))) + 1
    report = LayerReport(layer.name, layer.kind, scale * input_scale, None if is_output else vth, min(used, 9), err,
                         th_err, int(((w != 0) & (w_int == 0)).sum()),
                         int(((raw < WEIGHT_MIN - 1) | (raw > WEIGHT_MAX + 1)).sum()), clipped_bias or 0, layer.source)
    return fx, report

"""Quantization to Loihi fixed point: SNN checkpoint -> FxNetwork, in three named steps
(after torch.ao): `prepare` (lower the network to a deployable chain), `calibrate` (choose each
layer's scale: float value x scale = integer), `convert` (round, check ranges, report).

Each layer's spikes are binary whatever its scale, so every layer gets its own scale:
    scale = min(254 / max|W|, 131071 / threshold, 4095 / max|b|)   (8-bit-mantissa weights, 17-bit threshold,
                                                                      13-bit bias: a folded batch norm's never saturates)
    weight_int = 2 * round(W * scale / 2)  in [-254, 254]
      (symmetric: Lava stores -256 differently when a matrix has no positive weight, so it is never used)
    vth = round(threshold * scale),  bias_int = round(b * scale)
The first layer's scale also multiplies by the input scale (graded direct input). The same
`fake_quant_weight` serves quantization-aware training (straight-through rounding).
"""
from __future__ import annotations

import warnings as pywarnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, Optional

import numpy as np
import torch

from ..errors import DeploymentWarning, QuantizationError, QuantizationWarning
from ..ir.lowering import LoweredLayer, lower
from ..ir.relays import check_relay_weights, check_relays
from .fixed_point import BIAS_MAX, BIAS_MIN, VTH_MAX, WEIGHT_MAX, FxLayer, FxNetwork

if TYPE_CHECKING:
    from ..snn.config import SnnConfig


def layer_scale(weight: torch.Tensor, threshold: Optional[float], input_scale: float = 1.0, name: str = "?",
                bias: Optional[torch.Tensor] = None) -> float:
    """Float-to-integer scale of one layer's weights (see the module docstring). Its currents, weights times
    (graded) inputs, are in units of scale * input_scale, and so are its threshold and bias."""
    w_max = float(weight.detach().abs().max()) if weight.numel() else 0.0
    limits = []
    if w_max > 0:
        limits.append(WEIGHT_MAX / w_max)
    if threshold is not None:
        if not np.isfinite(threshold) or threshold <= 0:
            raise QuantizationError(f"layer '{name}': threshold {threshold} cannot be represented (must be > 0)")
        limits.append(VTH_MAX / (threshold * input_scale))
    b_max = float(bias.detach().abs().max()) if bias is not None and bias.numel() else 0.0
    if b_max > 0:
        limits.append(BIAS_MAX / (b_max * input_scale))
    if not limits:
        return 1.0
    scale = min(limits)
    if threshold is not None and round(threshold * input_scale * scale) < 1:
        raise QuantizationError(f"layer '{name}': threshold {threshold:g} rounds to 0 at scale {scale:g}")
    return scale


def fake_quant_weight(weight: torch.Tensor, scale: float) -> torch.Tensor:
    """Integer-valued weights 2 * round(W * scale / 2), clipped to [-254, 254]; straight-through gradient.
    Rounded in float64, as `convert_layer` rounds for export, so training sees exactly the exported integers."""
    q = torch.clamp(2 * torch.round(weight.detach().double() * (scale / 2)), -WEIGHT_MAX, WEIGHT_MAX)
    return weight + (q.to(weight.dtype) - weight).detach()


def fake_quant_bias(bias: torch.Tensor, current_scale: float) -> torch.Tensor:
    """round(b * current_scale) in float64 as for export; straight-through gradient."""
    q = torch.clamp(torch.round(bias.detach().double() * current_scale), BIAS_MIN, BIAS_MAX)
    return bias * current_scale + (q.to(bias.dtype) - bias * current_scale).detach()


@dataclass
class LayerReport:
    name: str
    kind: str
    scale: float
    vth: Optional[int]
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
    fit: Optional[object] = None          # the Loihi 2 FitReport, once export has checked it
    categories: List[type] = field(default_factory=list)   # each warning's category (toolchain.errors)

    def add(self, message: str, category: type) -> None:
        self.warnings.append(message)
        self.categories.append(category)

    def warn(self, stacklevel: int = 2) -> None:
        """Each warning through Python's `warnings`, in its category (QuantizationWarning, DeploymentWarning)."""
        for message, category in zip(self.warnings, self.categories):
            pywarnings.warn(message, category, stacklevel=stacklevel + 1)

    def to_json(self) -> dict:
        return {"layers": [l.to_json() for l in self.layers], "warnings": self.warnings}

    def format(self, warnings: bool = True) -> str:
        head = f"{'layer':<12} {'kind':<6} {'scale':>10} {'vth':>7} {'w rms err':>10} {'th err':>8} {'zeroed':>7} {'clipped':>7}  source"
        rows = [head]
        for l in self.layers:
            vth = "-" if l.vth is None else str(l.vth)
            rows.append(f"{l.name:<12} {l.kind:<6} {l.scale:>10.4g} {vth:>7} {l.weight_rms_error:>10.2e} "
                        f"{l.threshold_error:>8.1e} {l.zeroed_weights:>7} {l.clipped_weights + l.clipped_bias:>7}  "
                        f"{' + '.join(l.source)}")
        return "\n".join(rows + ([f"warning: {w}" for w in self.warnings] if warnings else []))


def convert_layer(layer: LoweredLayer, scale: float, input_scale: float, decays, is_output: bool):
    """Round one lowered layer at `scale`; returns (FxLayer, LayerReport)."""
    w = layer.weight.detach().double().cpu()
    raw = w * scale                       # weights take `scale`; currents (weights x input) take scale * input_scale
    w_int = torch.clamp(2 * torch.round(raw / 2), -WEIGHT_MAX, WEIGHT_MAX)
    w_max = float(w.abs().max()) if w.numel() else 0.0
    err = float(((w_int / scale - w) ** 2).mean().sqrt()) / w_max if w_max > 0 else 0.0
    bias = clipped_bias = None
    if layer.bias is not None:
        b = torch.round(layer.bias.detach().double().cpu() * (scale * input_scale))   # as fake_quant_bias
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
                 scale=scale * input_scale, source="+".join(layer.source), relays_out=layer.relays_out,
                 relays_in=layer.relays_in)
    check_relay_weights(fx)
    report = LayerReport(layer.name, layer.kind, scale * input_scale, None if is_output else vth, err,
                         th_err, int(((w != 0) & (w_int == 0)).sum()),
                         int((raw.abs() > WEIGHT_MAX + 1).sum()), clipped_bias or 0, layer.source)
    return fx, report


# -- the three steps -----------------------------------------------------------------------------
def prepare(ckpt) -> List[LoweredLayer]:
    """Lower the SNN checkpoint to the deployable chain (pooling, batch norm, dropout folded)."""
    params = {k[len("layers."):] if k.startswith("layers.") else k: v for k, v in ckpt.state_dict.items()}
    return lower(ckpt.network, params, ckpt.snn.thresholds)


def calibrate(chain: List[LoweredLayer], config: SnnConfig, train_x: Optional[np.ndarray] = None):
    """(input scale, per-layer scales). Graded input (direct coding) takes the scale training on the deployed network
    fixed, else one from the training data's range; spikes are unscaled (1.0)."""
    input_scale = 1.0
    coding = config.input_coding
    if coding.graded:
        if config.model.trains_deployed and config.input_scale is not None:
            input_scale = float(config.input_scale)
        elif train_x is None:
            raise QuantizationError(f"{coding.name} input coding: the training data is needed to choose the input scale")
        else:
            input_scale = coding.input_scale(train_x)
    scales = [layer_scale(l.weight, l.threshold, input_scale if i == 0 else 1.0, l.name, bias=l.bias)
              for i, l in enumerate(chain)]
    return input_scale, scales


def convert_chain(chain, scales, input_scale, config: SnnConfig, dataset: dict, signed_input: bool):
    """Round every layer and assemble the FxNetwork with its report. The neurons take the model's Loihi form."""
    chip = config.model.chip_form(config)
    decays = (chip.i_decay, chip.v_decay)
    check_relays(chain, chip.i_decay)
    layers, rows, report = [], [], QuantReport([], [])
    for i, (layer, scale) in enumerate(zip(chain, scales)):
        fx, row = convert_layer(layer, scale, input_scale if i == 0 else 1.0, decays, layer.threshold is None)
        fx.validate()
        if fx.kind == "dense" and not np.any(fx.weight):
            raise QuantizationError(f"layer '{layer.name}': every weight rounds to 0 at scale {scale:g}; netx cannot "
                                    f"load an all-zero dense layer (its weight-exponent search divides by the maximum)")
        layers.append(fx)
        rows.append(row)
        if row.zeroed_weights:
            report.add(f"layer '{layer.name}': {row.zeroed_weights} non-zero weights round to 0", QuantizationWarning)
        if row.clipped_bias:
            report.add(f"layer '{layer.name}': {row.clipped_bias} biases saturate the 13-bit range", QuantizationWarning)
    if chip.differs:
        report.add(chip.differs, DeploymentWarning)
    coding = config.input_coding
    net = FxNetwork(input_shape=tuple(chain[0].input_shape), layers=layers, num_classes=layers[-1].output_shape[0],
                    timesteps=int(config.timesteps), input_coding=coding.name, input_bits=coding.input_bits(signed_input),
                    input_scale=input_scale, readout="voltage", mean=tuple(dataset.get("mean", ())),
                    std=tuple(dataset.get("std", ())),
                    metadata={"neuron": config.neuron, "dataset": dataset.get("name")})
    net.validate()
    report.layers = rows
    return net, report


def quantize_snn(ckpt, train_x: Optional[np.ndarray] = None):
    """SNN checkpoint -> (FxNetwork, QuantReport): prepare, calibrate, convert."""
    chain = prepare(ckpt)
    input_scale, scales = calibrate(chain, ckpt.snn, train_x)
    signed = train_x is None or float(np.min(train_x)) < 0
    return convert_chain(chain, scales, input_scale, ckpt.snn, ckpt.dataset, signed)

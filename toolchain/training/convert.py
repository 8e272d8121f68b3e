"""Stage 2: ANN checkpoint -> SNN checkpoint, by threshold balancing.

- method "spike" (Rathi et al. 2020, after Sengupta et al. 2019): layer by layer, the threshold of a
  spiking layer is the maximum (or a percentile) of the input current it receives in the spiking
  network over all time steps of a calibration batch, the layers before it already converted;
  times a scaling factor (0.7 by default; smaller trades accuracy for fewer time steps).
  The SNN runs layer by layer over all time steps, so this is one forward pass.
- method "activation" (Rueckauer et al. 2017): the threshold is a percentile (99.9 in the paper)
  of the ANN's pre-activation at that layer, times the scaling factor.

Batch norm is folded into the conv before it first. Then every layer's parameters are brought to the units of
the spikes it receives (Rueckauer et al. 2017, in threshold-balancing form): a spike of a layer with threshold
theta stands for theta times the unit of that layer's input, so a synaptic layer whose input spikes stand for U
(the product of the thresholds on the path from the input) receives the ANN's current divided by U. Its weights
are unchanged, but its bias must be divided by U too, and where two paths meet (a residual block's add) the body,
whose spikes stand for more than the block's input does, has its last synaptic layer's weights multiplied by the
ratio, so that both branches add in the same unit. With the spike method this runs as calibration proceeds
(each layer is rescaled before it first computes a current); the activation method's thresholds, percentiles of
the ANN's pre-activations, are in ANN units and become U-relative thresholds the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

import torch

from ..io.checkpoint import Checkpoint, save_checkpoint
from ..io.files import refuse_overwrite
from ..data import Dataset
from ..coding import InputEncoder
from ..errors import ConfigError
from ..ir import SYNAPTIC, Network, Residual, Spike
from ..ir.passes import fold_batch_norms
from ..neurons import NEURONS
from ..snn import SnnConfig, SnnModel
from ..ir.torch_net import AnnModel

METHODS = ("spike", "activation")
DEFAULT_TIMESTEPS = 5        # the SNN's T: what the hybrid method fine-tunes at (Rathi et al.: few steps)
MAX_QUANTILE_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class UnitPlan:
    """For one synaptic layer: the spiking layers whose thresholds multiply the unit of its input spikes
    (`input_unit`) and the unit its output current must have (`output_unit`, a prefix of the input's: shorter only
    for the last synaptic layer of a residual body)."""
    layer: str
    input_unit: Tuple[str, ...]
    output_unit: Tuple[str, ...]

    def factors(self, thresholds: Dict[str, float]) -> Tuple[float, float]:
        """(weight factor, bias factor) once the thresholds of both units are known."""
        unit_in = math.prod(thresholds[n] for n in self.input_unit)
        unit_out = math.prod(thresholds[n] for n in self.output_unit)
        return unit_in / unit_out, 1.0 / unit_out


def unit_plan(net: Network) -> Tuple[List[UnitPlan], Dict[str, Tuple[str, ...]]]:
    """Each synaptic layer's UnitPlan, and each spiking layer's input unit, in execution order."""
    plans, spike_units = [], {}

    def walk(layers, unit):
        for k, layer in enumerate(layers):
            if isinstance(layer, SYNAPTIC):
                plans.append(UnitPlan(layer.name, unit, unit))
            elif isinstance(layer, Spike):
                spike_units[layer.name] = unit
                unit = unit + (layer.name,)
            elif isinstance(layer, Residual):
                body_unit = walk(layer.body, unit)
                if walk(layer.shortcut, unit) != unit:
                    raise ConfigError(f"layer '{layer.name}': a spiking layer inside a shortcut cannot be converted")
                if body_unit != unit:
                    _align_body(layer, plans, unit)
        return unit

    walk(net.layers, ())
    return plans, spike_units


def _align_body(block: Residual, plans: List[UnitPlan], unit) -> None:
    """Make the body's last synaptic layer output in the block input's unit (see the module docstring)."""
    last = next((l for l in reversed(block.body) if isinstance(l, SYNAPTIC + (Spike,))), None)
    if not isinstance(last, SYNAPTIC):
        raise ConfigError(f"layer '{block.name}': a residual body must end in a synaptic layer to be converted "
                          f"(it ends in '{last.name if last else '-'}')")
    k = next(i for i in range(len(plans) - 1, -1, -1) if plans[i].layer == last.name)
    plans[k] = replace(plans[k], output_unit=unit)


class UnitScaler:
    """Rescales a model's synaptic layers in place (see the module docstring) as thresholds become known."""

    def __init__(self, net: Network, modules):
        self.pending, self.spike_units = unit_plan(net)
        self.modules = modules

    def apply(self, thresholds: Dict[str, float]) -> None:
        """Rescale every layer whose units are now known (each layer once)."""
        ready = [p for p in self.pending if all(n in thresholds for n in p.input_unit + p.output_unit)]
        for plan in ready:
            weight_factor, bias_factor = plan.factors(thresholds)
            module = self.modules[plan.layer]
            with torch.no_grad():
                if weight_factor != 1.0:
                    module.weight.mul_(weight_factor)
                if module.bias is not None and bias_factor != 1.0:
                    module.bias.mul_(bias_factor)
        self.pending = [p for p in self.pending if p not in ready]

    def relative_threshold(self, name: str, ann_unit_value: float, thresholds: Dict[str, float]) -> float:
        """A threshold in ANN units as a threshold in the units of this spiking layer's input."""
        return ann_unit_value / math.prod(thresholds[n] for n in self.spike_units[name])


def statistic(values: torch.Tensor, percentile: float) -> float:
    """max (percentile 100) or the given percentile of all values."""
    flat = values.flatten().float()
    if percentile >= 100.0:
        return float(flat.max())
    if flat.numel() > MAX_QUANTILE_ELEMENTS:
        idx = torch.linspace(0, flat.numel() - 1, MAX_QUANTILE_ELEMENTS, device=flat.device).long()
        flat = flat[idx]
    return float(torch.quantile(flat, percentile / 100.0))


def _spike_thresholds(model: SnnModel, scaler: UnitScaler, x: torch.Tensor, timesteps: int, scale: float,
                      percentile: float, seed: int):
    """One forward pass; each spiking layer's threshold from the currents it receives, the layers after it rescaled
    (`scaler`) before they compute theirs."""
    thresholds = model.config.thresholds

    def calibrate(name, currents):
        theta = max(statistic(currents, percentile), 1e-6) * scale
        scaler.apply({**thresholds, name: theta})
        return theta

    scaler.apply(thresholds)
    model.calibrator = calibrate
    try:
        with torch.no_grad():
            model(x, timesteps, InputEncoder(model.config.coding, seed=seed))
    finally:
        model.calibrator = None
    return dict(thresholds)


def _activation_thresholds(net: Network, state, scaler: UnitScaler, x: torch.Tensor, scale: float, percentile: float):
    """Percentiles of the ANN's pre-activations (ANN units), as thresholds relative to each layer's input unit."""
    ann = AnnModel(net).to(x.device)
    ann.load_state_dict(state)
    ann.eval()
    record = {}
    with torch.no_grad():
        ann(x, record)
    thresholds = {}
    for name in scaler.spike_units:                  # execution order: the units before each layer are known
        thresholds[name] = scaler.relative_threshold(name, max(statistic(record[name], percentile), 1e-6) * scale,
                                                     thresholds)
    scaler.apply(thresholds)
    return thresholds


def convert(ann: Checkpoint, data: Dataset, timesteps: int = DEFAULT_TIMESTEPS, method: str = "spike",
            scale: float = 0.7, percentile: float = 100.0, calib_samples: int = 256, coding: str = "poisson",
            neuron: str = "if", leak: float = 1.0, seed: int = 0, device: str = "cpu",
            calibration_steps: Optional[int] = None, out_path: Optional[str] = None,
            overwrite: bool = False) -> Checkpoint:
    """Convert an ANN checkpoint into an SNN checkpoint of `timesteps` time steps (the T that fine-tuning, evaluation
    and export then use), its thresholds from `calib_samples` training images run for `calibration_steps` steps
    (default: `timesteps`; the spike method's maximum current grows with the steps it sees, so a network calibrated
    over many steps has thresholds for many steps). With `out_path` the checkpoint is also written there (an existing
    file only with `overwrite`)."""
    refuse_overwrite(out_path, overwrite)
    calibration_steps = timesteps if calibration_steps is None else calibration_steps
    if method not in METHODS:
        raise ConfigError(f"unknown conversion method {method!r}; valid: {', '.join(METHODS)}")
    if not 0 < scale <= 10 or not 0 < percentile <= 100 or calib_samples < 1 or timesteps < 1 or calibration_steps < 1:
        raise ConfigError(f"impossible conversion settings: scale {scale}, percentile {percentile}, "
                          f"calibration samples {calib_samples}, timesteps {timesteps}, "
                          f"calibration steps {calibration_steps}")
    net, state = fold_batch_norms(ann.network, ann.state_dict, prefix="layers.")
    # thresholds are balanced with the model's `converts_as` (loihi-cuba: integrate-and-fire), then fine-tuned
    balance_as = NEURONS.get(neuron).converts_as or neuron
    config = SnnConfig(neuron=balance_as, leak=leak, coding=coding, timesteps=timesteps)
    model = SnnModel(net, config).to(device)
    model.load_state_dict(state)
    model.eval()
    scaler = UnitScaler(net, model.layers)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.train_x), generator=gen)[:calib_samples]
    x = torch.as_tensor(data.train_x[idx.numpy()]).to(device)
    if method == "spike":
        thresholds = _spike_thresholds(model, scaler, x, calibration_steps, scale, percentile, seed)
    else:
        thresholds = _activation_thresholds(net, state, scaler, x, scale, percentile)
    if scaler.pending:
        raise ConfigError(f"layers {', '.join(p.layer for p in scaler.pending)} were never reached in calibration")
    config.thresholds, config.neuron = thresholds, neuron
    conversion = {"method": method, "scale": scale, "percentile": percentile, "calibration_samples": int(len(x)),
                  "calibration_timesteps": calibration_steps, "seed": seed}
    snn = Checkpoint("snn", net, {k: v.detach().cpu() for k, v in model.state_dict().items()}, dict(ann.dataset),
                     snn=config, training={"conversion": conversion},
                     metrics={"ann_test_accuracy": ann.metrics.get("test_accuracy")})
    if out_path is not None:
        save_checkpoint(snn, out_path)
    return snn

"""Stage 2: ANN checkpoint -> SNN checkpoint, by threshold balancing.

- method "spike" (Rathi et al. 2020, after Sengupta et al. 2019): layer by layer, the threshold of a
  spiking layer is the maximum (or a percentile) of the input current it receives in the spiking
  network over all time steps of a calibration batch, the layers before it already converted;
  times a scaling factor (0.7 by default; smaller trades accuracy for fewer time steps).
  The SNN runs layer by layer over all time steps, so this is one forward pass.
- method "activation" (Rueckauer et al. 2017): the threshold is a percentile (99.9 in the paper)
  of the ANN's pre-activation at that layer, times the scaling factor.

Batch norm is folded into the conv before it first. Weights are copied unchanged.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, Tuple

import torch

from .checkpoint import Checkpoint
from .data import Dataset
from .data.encoding import InputEncoder
from .errors import ConfigError
from .ir import BATCH_NORMS, Conv2d, Linear, Network, Residual
from .lowering import fold_batch_norm
from .snn import SnnConfig, SnnModel
from .torch_net import AnnModel

METHODS = ("spike", "activation")
MAX_QUANTILE_ELEMENTS = 1 << 22


def fold_batch_norms(net: Network, state: Dict[str, torch.Tensor]) -> Tuple[Network, Dict[str, torch.Tensor]]:
    """Remove every batch norm that follows a Conv2d or Linear, folding it into that layer's weight and bias.
    `state` is a model state dict (keys 'layers.<layer>.<param>')."""
    prefix = "layers."
    state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}

    def fold_chain(layers):
        out = []
        for layer in layers:
            if isinstance(layer, BATCH_NORMS):
                conv = out[-1] if out and isinstance(out[-1], (Conv2d, Linear)) else None
                if conv is None:
                    raise ConfigError(f"layer '{layer.name}': batch norm must follow a conv or linear layer to be folded")
                w, b = fold_batch_norm(state[f"{conv.name}.weight"], state.get(f"{conv.name}.bias"), state, layer.name)
                state[f"{conv.name}.weight"], state[f"{conv.name}.bias"] = w, b
                for key in [k for k in state if k.startswith(layer.name + ".")]:
                    del state[key]
                out[-1] = replace(conv, bias=True)
            elif isinstance(layer, Residual):
                out.append(replace(layer, body=tuple(fold_chain(layer.body)), shortcut=tuple(fold_chain(layer.shortcut))))
            else:
                out.append(layer)
        return out

    folded = Network(tuple(fold_chain(net.layers)), net.input_shape, net.num_classes, net.name)
    return folded, {prefix + k: v for k, v in state.items()}


def statistic(values: torch.Tensor, percentile: float) -> float:
    """max (percentile 100) or the given percentile of all values."""
    flat = values.flatten().float()
    if percentile >= 100.0:
        return float(flat.max())
    if flat.numel() > MAX_QUANTILE_ELEMENTS:
        idx = torch.linspace(0, flat.numel() - 1, MAX_QUANTILE_ELEMENTS, device=flat.device).long()
        flat = flat[idx]
    return float(torch.quantile(flat, percentile / 100.0))


def _spike_thresholds(model: SnnModel, x: torch.Tensor, timesteps: int, scale: float, percentile: float, seed: int):
    model.calibrator = lambda name, currents: max(statistic(currents, percentile), 1e-6) * scale
    with torch.no_grad():
        model(x, timesteps, InputEncoder(model.config.coding, seed=seed))
    model.calibrator = None
    return dict(model.config.thresholds)


def _activation_thresholds(net: Network, state, x: torch.Tensor, scale: float, percentile: float):
    ann = AnnModel(net).to(x.device)
    ann.load_state_dict(state)
    ann.eval()
    record = {}
    with torch.no_grad():
        ann(x, record)
    return {name: max(statistic(v, percentile), 1e-6) * scale for name, v in record.items()}


def convert(ann: Checkpoint, data: Dataset, timesteps: int = 100, method: str = "spike", scale: float = 0.7,
            percentile: float = 100.0, calib_samples: int = 256, coding: str = "poisson", neuron: str = "if",
            leak: float = 1.0, seed: int = 0, device: str = "cpu") -> Checkpoint:
    """Convert an ANN checkpoint into an SNN checkpoint (thresholds from `calib_samples` training images)."""
    if method not in METHODS:
        raise ConfigError(f"unknown conversion method {method!r}; valid: {', '.join(METHODS)}")
    if not 0 < scale <= 10 or not 0 < percentile <= 100 or calib_samples < 1 or timesteps < 1:
        raise ConfigError(f"impossible conversion settings: scale {scale}, percentile {percentile}, "
                          f"calibration samples {calib_samples}, timesteps {timesteps}")
    net, state = fold_batch_norms(ann.network, ann.state_dict)
    # thresholds are balanced with integrate-and-fire dynamics; a loihi-cuba SNN is then fine-tuned
    config = SnnConfig(neuron="if" if neuron == "loihi-cuba" else neuron, leak=leak, coding=coding, timesteps=timesteps)
    model = SnnModel(net, config).to(device)
    model.load_state_dict(state)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.train_x), generator=gen)[:calib_samples]
    x = torch.as_tensor(data.train_x[idx.numpy()]).to(device)
    if method == "spike":
        thresholds = _spike_thresholds(model, x, timesteps, scale, percentile, seed)
    else:
        thresholds = _activation_thresholds(net, state, x, scale, percentile)
    config.thresholds, config.neuron = thresholds, neuron
    conversion = {"method": method, "scale": scale, "percentile": percentile, "calibration_samples": int(len(x)),
                  "calibration_timesteps": timesteps, "seed": seed}
    return Checkpoint("snn", net, {k: v.detach().cpu() for k, v in model.state_dict().items()}, dict(ann.dataset),
                      snn=config.to_dict(), training={"conversion": conversion},
                      metrics={"ann_test_accuracy": ann.metrics.get("test_accuracy")})

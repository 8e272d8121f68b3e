"""Measured facts of a registered network at an input: parameters, synaptic layers, neurons, and the Loihi 2 fit of
its deployed form, so that `snntc models` and the summaries cannot drift from the definitions."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from ..deploy import FIT_TARGET
from ..errors import ModelError, ToolchainError
from ..ir import BATCH_NORMS, SYNAPTIC, Conv2d, Linear, Network, Residual, iter_layers
from ..ir.lowering import lower
from ..ir.models import MODELS, build_model
from ..ir.torch_net import build_modules
from ..quantization.fixed_point import WEIGHT_MAX, FxLayer, FxNetwork
from ..targets import TARGETS


def describe(name: str, input_shape: Optional[Tuple[int, int, int]] = None, num_classes: int = 10) -> dict:
    """Measured facts of a model at an input: parameters, synaptic layers, neurons, and the Loihi 2 fit of its
    deployed form (pooling folded into the next layer, 8-bit weights: `deployed_shapes`)."""
    spec = MODELS.get(name)
    shape = tuple(input_shape or spec.input_shape)
    try:
        net = build_model(name, shape, num_classes)
    except ModelError as exc:        # its pooling does not divide this input, or it is too small
        return {"name": spec.name, "summary": spec.summary, "input_shape": list(shape), "parameters": None,
                "synaptic_layers": None, "neurons": None, "fits_loihi2": None, "loihi2_cores": None,
                "loihi2_chips": None, "fit_problem": f"does not take this input: {exc}"}
    row = {"name": spec.name, "summary": spec.summary, "input_shape": list(shape),
           "parameters": int(sum(_param_count(l) for l in iter_layers(net.layers))),
           "synaptic_layers": int(sum(isinstance(l, SYNAPTIC) for l in iter_layers(net.layers)))}
    try:
        fx = deployed_shapes(net)
    except ToolchainError as exc:       # e.g. residual blocks: not a netx chain
        return {**row, "neurons": None, "fits_loihi2": None, "loihi2_cores": None, "loihi2_chips": None,
                "fit_problem": f"not deployable as a netx chain: {exc}"}
    fit = TARGETS.get(FIT_TARGET).check_fit(fx)
    return {**row, "neurons": int(sum(l.neurons for l in fx.layers)), "fits_loihi2": fit.fits,
            "loihi2_cores": fit.total_cores, "loihi2_chips": fit.chips, "fit_problem": "; ".join(fit.problems)}


def _param_count(layer) -> int:
    if isinstance(layer, Conv2d):
        return layer.out_channels * (layer.in_channels * layer.kernel_size ** 2 + int(layer.bias))
    if isinstance(layer, Linear):
        return layer.out_features * (layer.in_features + int(layer.bias))
    if isinstance(layer, BATCH_NORMS):
        return 2 * layer.num_features
    return 0


def deployed_shapes(net: Network):
    """The network's deployed chain (pooling folded) as an FxNetwork whose weights are shapes only (every weight
    the largest 8-bit mantissa, a broadcast view: no memory), for the fit check, which depends on shapes and
    weight bits only. Lowered on torch's meta device: no weights are made. A network with residual blocks is
    lowered with real (initial) weights instead, so that its relay channels' synapses are the one-hot taps they are
    (toolchain.ir.relays), not full kernels."""
    relayed = any(isinstance(l, Residual) for l in net.layers)
    with torch.device("cpu" if relayed else "meta"):
        modules = build_modules(net)
    params = {**dict(modules.named_parameters()), **dict(modules.named_buffers())}
    with torch.no_grad():
        chain = lower(net, params, {s.name: 1.0 for s in net.spiking_layers})
    layers = [FxLayer(l.name, l.kind, _shape_weight(l.weight, relayed), tuple(l.input_shape), tuple(l.output_shape),
                      vth=1, stride=tuple(l.stride), padding=tuple(l.padding), flatten_before=l.flatten_before,
                      is_output=l.threshold is None, relays_out=l.relays_out, relays_in=l.relays_in)
              for l in chain]
    return FxNetwork(input_shape=tuple(chain[0].input_shape), layers=layers, num_classes=net.num_classes, timesteps=1)


def _shape_weight(weight: torch.Tensor, real: bool) -> np.ndarray:
    if real:
        return np.where(weight.detach().numpy() != 0, np.int64(WEIGHT_MAX), np.int64(0))
    return np.broadcast_to(np.int64(WEIGHT_MAX), tuple(weight.shape))

"""The model registry: a name -> a builder of a toolchain `Network`, with what it is meant for.

Each entry says which input it suits (the networks adapt to others where their pooling allows) and, in one line,
what it is. `describe` measures the rest for a given input (parameters, synaptic layers, Loihi 2 cores), so
`snntc models` and the `--model` help cannot drift from the definitions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from toolchain.errors import ModelError, ToolchainError
from toolchain.ir import Network

from . import resnet, vgg


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., Network]
    input_shape: Tuple[int, int, int]     # the input it is meant for (C, H, W)
    summary: str                          # one line: what it is

    @property
    def input_label(self) -> str:
        c, h, w = self.input_shape
        return f"{c}x{h}x{w}"


SPECS = [
    ModelSpec("vgg-small", vgg.vgg_small, (1, 8, 8), "2 convs (16, 32) + dense 64: the bundled 8x8 digits"),
    ModelSpec("mnist-small", vgg.mnist_small, (1, 28, 28), "3 convs (16, 32, 32) + dense 64 for 28x28; fits Loihi 2"),
    ModelSpec("mnist-vgg", vgg.mnist_vgg, (1, 28, 28), "3 convs (32, 64, 64) + dense 128 for 28x28; fits Loihi 2"),
    ModelSpec("vgg5", vgg.vgg5, (3, 32, 32), "VGG5 of Rathi et al. (convs 64, 128, 128 + dense 4096 x2)"),
    ModelSpec("vgg9", vgg.vgg9, (3, 32, 32), "VGG9 (7 convs + dense 4096 x2)"),
    ModelSpec("vgg11", vgg.vgg11, (3, 32, 32), "VGG11 (8 convs + dense 4096 x2)"),
    ModelSpec("vgg16", vgg.vgg16, (3, 32, 32), "VGG16 of Rathi et al. (13 convs + dense 4096 x2)"),
    ModelSpec("vgg-deep", vgg.vgg_deep, (1, 8, 8), "12 plain convs for 8x8: the exploding/vanishing-gradient test"),
    ModelSpec("resnet-small", resnet.resnet_small, (1, 8, 8), "ResNet of 2 basic blocks (16, 32) for 8x8 digits"),
    ModelSpec("resnet20", resnet.resnet20, (3, 32, 32), "ResNet-20, CIFAR style (3 stages x 3 blocks, 16/32/64)"),
    ModelSpec("resnet18", resnet.resnet18, (3, 32, 32), "ResNet-18 style (4 stages x 2 blocks, 64-512)"),
]
MODELS: Dict[str, ModelSpec] = {spec.name: spec for spec in SPECS}


def model_names() -> list:
    return [spec.name for spec in SPECS]


def model_help() -> str:
    """The `--model` help: every name with the input it suits."""
    return "; ".join(f"{s.name} ({s.input_label})" for s in SPECS) + " (default vgg-small; `snntc models` says more)"


def get_spec(name: str) -> ModelSpec:
    key = str(name).lower()
    if key not in MODELS:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    return MODELS[key]


def build_model(name: str, input_shape=(1, 8, 8), num_classes: int = 10, batch_norm: bool = False, **kwargs) -> Network:
    """Build the named network for inputs of `input_shape` (C, H, W) and `num_classes` outputs."""
    return get_spec(name).build(tuple(input_shape), int(num_classes), batch_norm=batch_norm, **kwargs)


def describe(name: str, input_shape: Optional[Tuple[int, int, int]] = None, num_classes: int = 10) -> dict:
    """Measured facts of a model at an input: parameters, synaptic layers, neurons, and the Loihi 2 fit of its
    deployed form (pooling folded into the next layer, 8-bit weights: `deployed_shapes`)."""
    from toolchain.ir import SYNAPTIC, iter_layers
    from hw_targets.fit import check_fit

    spec = get_spec(name)
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
    fit = check_fit(fx)
    return {**row, "neurons": int(sum(l.neurons for l in fx.layers)), "fits_loihi2": fit.fits,
            "loihi2_cores": fit.total_cores, "loihi2_chips": fit.chips, "fit_problem": "; ".join(fit.problems)}


def _param_count(layer) -> int:
    from toolchain.ir import BATCH_NORMS, Conv2d, Linear
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
    weight bits only. Lowered on torch's meta device: no weights are made."""
    import numpy as np
    import torch
    from toolchain.quantization.fixed_point import WEIGHT_MAX, FxLayer, FxNetwork
    from toolchain.ir.lowering import lower
    from toolchain.ir.torch_net import build_modules

    with torch.device("meta"):
        modules = build_modules(net)
    params = {**dict(modules.named_parameters()), **dict(modules.named_buffers())}
    chain = lower(net, params, {s.name: 1.0 for s in net.spiking_layers})
    layers = [FxLayer(l.name, l.kind, np.broadcast_to(np.int64(WEIGHT_MAX), tuple(l.weight.shape)),
                      tuple(l.input_shape), tuple(l.output_shape), vth=1, stride=tuple(l.stride),
                      padding=tuple(l.padding), flatten_before=l.flatten_before, is_output=l.threshold is None)
              for l in chain]
    return FxNetwork(input_shape=tuple(chain[0].input_shape), layers=layers, num_classes=net.num_classes, timesteps=1)

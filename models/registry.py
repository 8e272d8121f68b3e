"""The model registry: a name -> a builder of a toolchain `Network`."""
from __future__ import annotations

from typing import Callable, Dict

from toolchain.errors import ModelError
from toolchain.ir import Network

from . import resnet, vgg

MODELS: Dict[str, Callable[..., Network]] = {
    "vgg-small": vgg.vgg_small,
    "vgg5": vgg.vgg5,
    "vgg9": vgg.vgg9,
    "vgg11": vgg.vgg11,
    "vgg16": vgg.vgg16,
    "vgg-deep": vgg.vgg_deep,
    "resnet20": resnet.resnet20,
    "resnet18": resnet.resnet18,
    "resnet-small": resnet.resnet_small,
}


def model_names() -> list:
    return sorted(MODELS)


def build_model(name: str, input_shape=(1, 8, 8), num_classes: int = 10, batch_norm: bool = False, **kwargs) -> Network:
    """Build the named network for inputs of `input_shape` (C, H, W) and `num_classes` outputs."""
    key = name.lower()
    if key not in MODELS:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    return MODELS[key](tuple(input_shape), int(num_classes), batch_norm=batch_norm, **kwargs)

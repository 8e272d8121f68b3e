"""Network definitions by name: the MODELS registry. The models/ package registers its VGG and ResNet definitions
(through the `snntc.plugins` entry point); the toolchain builds them by name and never imports models/.

Each entry says which input it suits (the networks adapt to others where their pooling allows) and, in one line,
what it is; `toolchain.analysis.model_facts.describe` measures the rest for a given input, so `snntc models` and the
`--model` help cannot drift from the definitions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

from ..errors import ModelError
from ..registry import Registry
from .network import Network


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


MODELS: Registry[ModelSpec] = Registry("model", error=ModelError)


def model_help() -> str:
    """The `--model` help: every name with the input it suits."""
    return "; ".join(f"{s.name} ({s.input_label})" for s in MODELS.entries()) + \
        " (default vgg-small; `snntc models` says more)"


def build_model(name: str, input_shape=(1, 8, 8), num_classes: int = 10, batch_norm: bool = False, **kwargs) -> Network:
    """Build the named network for inputs of `input_shape` (C, H, W) and `num_classes` outputs."""
    return MODELS.get(name).build(tuple(input_shape), int(num_classes), batch_norm=batch_norm, **kwargs)

"""Graph passes on a `Network` and its parameters, written once: conversion (toolchain.training.convert), lowering
to a deployable chain (lowering.py, used by export and by quantization-aware training) and NIR export
(toolchain.io.nir) use them. All folds are exact (linear):

- `fold_batch_norms`: every batch norm into the Conv2d / Linear before it (per output channel or neuron: a
  per-channel scale cannot go into the layer's one threshold, so it goes into W), and, with `strip_dropout`, the
  Dropout layers removed (the identity at inference);
- `fold_pool_into_conv` / `fold_pool_into_dense`: a k x k average pool into the next layer's weights.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..errors import LoweringError
from .network import BATCH_NORMS, BatchNorm2d, Conv2d, Dropout, Layer, Linear, Network, Residual


def fold_batch_norm(weight, bias, bn: Mapping[str, torch.Tensor], prefix: str, eps: float = 1e-5):
    """W' = W * gamma / sigma, b' = (b - mean) * gamma / sigma + beta."""
    gamma, beta = bn[f"{prefix}.weight"], bn[f"{prefix}.bias"]
    scale = gamma / torch.sqrt(bn[f"{prefix}.running_var"] + eps)
    b = torch.zeros_like(gamma) if bias is None else bias
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return weight * scale.reshape(shape), (b - bn[f"{prefix}.running_mean"]) * scale + beta


def fold_pool_into_conv(weight: torch.Tensor, k: int) -> torch.Tensor:
    """conv(avgpool_k(x), W) == conv(x, W'), stride and padding times k."""
    return weight.repeat_interleave(k, 2).repeat_interleave(k, 3) / (k * k)


def fold_pool_into_dense(weight: torch.Tensor, pooled_shape: Tuple[int, int, int], k: int) -> torch.Tensor:
    """linear(flatten(avgpool_k(x)), W) == linear(flatten(x), W')."""
    c, h, w = pooled_shape
    grid = weight.reshape(weight.shape[0], c, h, w)
    return fold_pool_into_conv(grid, k).reshape(weight.shape[0], c * h * k * w * k)


def fold_batch_norms(net: Network, params: Mapping[str, torch.Tensor], prefix: str = "", strip_dropout: bool = False,
                     folded: Optional[Dict[str, List[str]]] = None) -> Tuple[Network, Dict[str, torch.Tensor]]:
    """`net` with every batch norm folded into the synaptic layer before it (which then has a bias) and, with
    `strip_dropout`, without its Dropout layers; and the parameters to match (keys '<prefix><layer>.<param>', e.g.
    a state dict's 'layers.'; the batch norms' entries removed, the rest as given). Residual blocks' chains too.
    A batch norm after anything but a conv or linear layer raises LoweringError naming it. `folded`, if given, gets
    each synaptic layer's folded batch norms by name."""
    params = dict(params)

    def fold_chain(layers: Sequence[Layer]) -> list:
        out = []
        for layer in layers:
            if isinstance(layer, BATCH_NORMS):
                kind, what = (Conv2d, "a conv") if isinstance(layer, BatchNorm2d) else (Linear, "a dense (Linear) layer")
                syn = out[-1] if out and isinstance(out[-1], kind) else None
                if syn is None:
                    raise LoweringError(f"layer '{layer.name}': batch norm must follow {what} to be folded")
                key = f"{prefix}{syn.name}"
                params[f"{key}.weight"], params[f"{key}.bias"] = fold_batch_norm(
                    params[f"{key}.weight"], params.get(f"{key}.bias"), params, f"{prefix}{layer.name}")
                for k in [k for k in params if k.startswith(f"{prefix}{layer.name}.")]:
                    del params[k]
                out[-1] = replace(syn, bias=True)
                if folded is not None:
                    folded.setdefault(syn.name, []).append(layer.name)
            elif isinstance(layer, Residual):
                out.append(replace(layer, body=tuple(fold_chain(layer.body)), shortcut=tuple(fold_chain(layer.shortcut))))
            elif not (strip_dropout and isinstance(layer, Dropout)):
                out.append(layer)
        return out

    return Network(tuple(fold_chain(net.layers)), net.input_shape, net.num_classes, net.name), params

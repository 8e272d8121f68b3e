"""Torch modules built from a toolchain `Network`, and the forward pass of the ANN.

The ANN and the SNN share one module set (same parameter names), so an ANN checkpoint's
state dict loads into the SNN unchanged. Parameter names are the layer names:
`<layer>.weight`, `<layer>.bias`, `<bn>.running_mean`, ...
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import sharding
from .network import AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, Network, Residual, Spike, iter_layers


def build_modules(net: Network) -> nn.ModuleDict:
    """One torch module per parametrized layer, keyed by layer name."""
    mods = {}
    for layer in iter_layers(net.layers):
        if isinstance(layer, Conv2d):
            mods[layer.name] = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                         layer.padding, bias=layer.bias)
        elif isinstance(layer, Linear):
            mods[layer.name] = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)
        elif isinstance(layer, BatchNorm2d):
            mods[layer.name] = nn.BatchNorm2d(layer.num_features)
        elif isinstance(layer, BatchNorm1d):
            mods[layer.name] = nn.BatchNorm1d(layer.num_features)
    for m in mods.values():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return nn.ModuleDict(mods)


class AnnModel(nn.Module):
    """The ANN: Spike layers are ReLUs."""

    def __init__(self, net: Network):
        super().__init__()
        self.net = net
        self.layers = build_modules(net)

    def forward(self, x: torch.Tensor, record: Dict[str, torch.Tensor] = None) -> torch.Tensor:
        return self._run(self.net.layers, x, record)

    def _run(self, layers, x, record):
        for layer in layers:
            x = self._layer(layer, x, record)
        return x

    def _layer(self, layer, x, record):
        if isinstance(layer, (Conv2d, Linear, BatchNorm2d, BatchNorm1d)):
            return self.layers[layer.name](x)
        if isinstance(layer, Spike):
            if record is not None:
                record[layer.name] = x.detach()
            return F.relu(x)
        if isinstance(layer, AvgPool2d):
            return F.avg_pool2d(x, layer.kernel_size)
        if isinstance(layer, Flatten):
            return torch.flatten(x, 1)
        if isinstance(layer, Dropout):
            if self.training and layer.p > 0 and sharding.current() is not None:   # a shard of a global batch
                return x * sharding.dropout_mask(x, layer.p)
            return F.dropout(x, layer.p, self.training)
        if isinstance(layer, Residual):
            body = self._run(layer.body, x, record)
            return body + (self._run(layer.shortcut, x, record) if layer.shortcut else x)
        raise TypeError(f"unhandled layer {layer}")

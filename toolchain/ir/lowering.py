"""Lowering: a toolchain `Network` -> a chain of deployable layers (synapse + spiking neurons).

netx runs only input, conv, flatten and dense layers in a chain, every one with neurons. Lowering
folds what netx cannot express into the layers around it, exactly (all folds are linear; the passes in
passes.py):

- batch norm (BatchNorm2d after a conv, BatchNorm1d after a dense layer: in an SNN, batch norm on a
  spiking layer's input current) into the preceding synaptic layer's weights and bias, and dropout
  removed (the identity at inference), first (`fold_batch_norms`);
- k x k average pooling into the next conv (kernel repeated k x k and divided by k^2, stride and
  padding times k) or, across a flatten, into the next dense layer's weight columns;
- flatten placed before the dense layer that follows a conv;
- a residual block into the chain, its shortcut carried by relay channels of the body's layers (relays.py).

Anything else (two synaptic layers without a spiking layer between them, a residual block the relays cannot
carry) raises LoweringError naming the layer. Weights stay torch tensors, so the same lowering serves
quantization-aware training (differentiable) and export.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from ..errors import LoweringError
from .network import AvgPool2d, Conv2d, Flatten, Linear, Network, Residual, Spike, chain_shapes
from .passes import fold_batch_norms, fold_pool_into_conv, fold_pool_into_dense
from .relays import check_body, relay_block, shortcut_conv


@dataclass
class LoweredLayer:
    name: str
    kind: str                               # "conv" | "dense"
    weight: torch.Tensor
    bias: Optional[torch.Tensor]
    input_shape: Tuple[int, ...]
    output_shape: Tuple[int, ...]
    threshold: Optional[float] = None       # None: the output layer (no spiking neuron)
    spike_name: Optional[str] = None        # the Spike layer this layer's neurons came from
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int] = (0, 0)
    flatten_before: bool = False
    source: List[str] = field(default_factory=list)
    pool: int = 1                           # k > 1: a k x k average pool folded into the weight (k x k repeats / k^2)
    block_weight: Optional[torch.Tensor] = None   # pool > 1: the weight before the repeat (bitwise each block's value)
    relays_out: int = 0                     # the last output channels are relays (a residual block's shortcut)
    relays_in: int = 0                      # the last input channels are relays

    @property
    def body_channels(self) -> int:
        """Output channels that are the network's own neurons (not relays)."""
        return self.output_shape[0] - self.relays_out

    def synapse(self, x: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Apply this layer's synapse to a batch x (N, *input_shape) (a flatten first where placed)."""
        w = self.weight if weight is None else weight
        if self.kind == "conv":
            return torch.nn.functional.conv2d(x, w, None, self.stride, self.padding)
        return torch.nn.functional.linear(torch.flatten(x, 1), w)


class _Lowerer:
    def __init__(self, net: Network, params: Mapping[str, torch.Tensor], thresholds: Mapping[str, float],
                 folded: Mapping[str, List[str]]):
        self.net, self.params, self.thresholds, self.folded = net, params, thresholds, folded
        self.out: List[LoweredLayer] = []
        self.open: Optional[LoweredLayer] = None      # a synaptic layer waiting for its neurons
        self.pool = 1                                  # pending pooling factor
        self.pre_pool_shape = tuple(net.input_shape)   # shape before the pending pools
        self.flatten = False

    def run(self) -> List[LoweredLayer]:
        for index, layer in enumerate(self.net.layers):
            self._handle(layer, self.net.shapes[index])
            nxt = self.net.layers[index + 1] if index + 1 < len(self.net.layers) else None
            if isinstance(layer, Residual) and not isinstance(nxt, Spike):
                raise LoweringError(f"layer '{layer.name}': a residual block must be followed by a spiking layer to be "
                                    f"deployed (its sum is formed in that layer's current)")
        if self.open is not None or not self.out or self.out[-1].threshold is not None:
            raise LoweringError(f"network '{self.net.name}': must end in a Linear output layer")
        return self.out

    def _handle(self, layer, shape):
        getattr(self, f"_{type(layer).__name__.lower()}")(layer, shape)

    def _start(self, layer, kind, weight, bias, out_shape):
        if self.open is not None:
            raise LoweringError(f"layer '{layer.name}': follows '{self.open.name}' with no spiking layer between them; "
                                f"netx needs neurons after every synapse")
        self.open = LoweredLayer(layer.name, kind, weight, bias, self.pre_pool_shape, out_shape, source=[layer.name])

    def _conv2d(self, layer: Conv2d, shape):
        w, b = self.params[f"{layer.name}.weight"], self.params.get(f"{layer.name}.bias")
        if self.flatten:
            raise LoweringError(f"layer '{layer.name}': a conv after a flatten cannot be deployed")
        k = self.pool
        self._start(layer, "conv", fold_pool_into_conv(w, k) if k > 1 else w, b, shape)
        self.open.stride = (layer.stride * k, layer.stride * k)
        self.open.padding = (layer.padding * k, layer.padding * k)
        self.open.source = ([f"avgpool x{k}"] if k > 1 else []) + [layer.name]
        self.open.pool, self.pool = k, 1
        if k > 1:
            self.open.block_weight = w / (k * k)

    def _linear(self, layer: Linear, shape):
        w, b = self.params[f"{layer.name}.weight"], self.params.get(f"{layer.name}.bias")
        k, source, block = self.pool, [layer.name], None
        if k > 1:
            c, h, wd = self.pre_pool_shape
            w, block = fold_pool_into_dense(w, (c, h // k, wd // k), k), w / (k * k)
            source = [f"avgpool x{k}"] + source
        self._start(layer, "dense", w, b, shape)
        self.open.flatten_before = self.flatten or len(self.pre_pool_shape) > 1
        self.open.source, self.open.pool, self.open.block_weight = source, k, block
        self.pool, self.flatten = 1, False
        if layer is self.net.layers[-1]:
            self._close(None, None, shape)

    def _spike(self, layer: Spike, shape):
        if self.open is None:
            raise LoweringError(f"layer '{layer.name}': spiking layer without a synaptic layer before it")
        if layer.name not in self.thresholds:
            raise LoweringError(f"layer '{layer.name}': no threshold (convert the network first)")
        self._close(float(self.thresholds[layer.name]), layer.name, shape)

    def _close(self, threshold, spike_name, shape):
        self.open.threshold, self.open.spike_name = threshold, spike_name
        self.open.source += self.folded.get(self.open.name, [])          # the batch norms folded into it
        self.out.append(self.open)
        self.open, self.pre_pool_shape = None, tuple(shape)

    def _avgpool2d(self, layer: AvgPool2d, shape):
        if self.open is not None:
            raise LoweringError(f"layer '{layer.name}': pooling between a synapse and its neurons cannot be folded")
        self.pool *= layer.kernel_size

    def _flatten(self, layer: Flatten, shape):
        self.flatten = True

    def _residual(self, layer: Residual, shape):
        """The block into the chain: its body lowered in place, its shortcut as relays (relays.py)."""
        if self.open is not None or not self.out:
            where = f"follows '{self.open.name}' without spiking neurons" if self.open else "reads the network input"
            raise LoweringError(f"layer '{layer.name}': a residual block that {where} cannot be deployed: its shortcut "
                                f"is relayed as spikes (put a conv -> spike layer before it)")
        if self.flatten or len(self.pre_pool_shape) != 3:
            raise LoweringError(f"layer '{layer.name}': residual blocks of dense layers cannot be deployed (conv blocks only)")
        check_body(layer)
        c, h, w = self.pre_pool_shape
        k, start = self.pool, len(self.out)
        shortcut = shortcut_conv(layer, self.params, c, k, self.out[-1].weight)
        in_shape = (c, h // k, w // k)
        for inner, inner_shape in zip(layer.body, chain_shapes(layer.body, in_shape)):
            self._handle(inner, inner_shape)
        if self.open is None:
            raise LoweringError(f"layer '{layer.name}': a residual body must end in a synaptic layer to be deployed")
        relay_block(layer, self.out[start:], self.open, shortcut)
        self.open.source += self.folded.get(shortcut.name, [])


def lower(net: Network, params: Mapping[str, torch.Tensor], thresholds: Mapping[str, float]) -> List[LoweredLayer]:
    """The deployable chain of `net`, with `params` (named parameters and buffers) and thresholds: batch norms
    folded and dropout removed first (passes.fold_batch_norms), then pools folded and the layers closed."""
    folded: Dict[str, List[str]] = {}
    net, params = fold_batch_norms(net, params, strip_dropout=True, folded=folded)
    return _Lowerer(net, params, thresholds, folded).run()

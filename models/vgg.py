"""VGG-style networks as in Rathi et al. 2020: 3x3 convs without bias, ReLU (spiking neurons in
the SNN), 2x2 average pooling, dropout, and a classifier of linear layers. Batch norm is optional:
after every conv (BatchNorm2d) and every hidden linear layer (BatchNorm1d). In an ANN it is folded
before conversion; in a directly trained SNN it normalizes each spiking layer's input current over
batch and time (Ledinauskas et al. 2020) and is folded into weights and bias at export."""
from __future__ import annotations

from typing import Sequence, Tuple, Union

from toolchain.errors import ModelError
from toolchain.ir import AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, Network, Spike

Cfg = Sequence[Union[int, str, Tuple[int, int, int, int]]]

# 'A' is a 2x2 average pool; an int is a 3x3 conv with padding 1 and that many output channels; a tuple is a conv
# (out_channels, kernel, stride, padding).
CFGS = {
    "vgg5": [64, "A", 128, 128, "A"],
    "vgg9": [64, 64, "A", 128, 128, "A", 256, 256, 256, "A"],
    "vgg11": [64, "A", 128, 256, "A", 512, 512, "A", 512, 512, "A"],
    "vgg16": [64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A", 512, 512, 512],
    # 12 plain 3x3 convs (no skip connections) for 8x8 inputs: the deep net of the gradient experiment
    "vgg-deep": [16, 16, 16, 16, "A", 32, 32, 32, 32, "A", 64, 64, 64, 64],
    # 28x28: two pooled stages then an unpadded conv (7x7 -> 5x5), so the dense layer's fan-in on the chip (pooling is
    # folded into the next layer) stays under a Loihi core's 4,096 input axons
    "mnist-vgg": [32, "A", 64, "A", (64, 3, 1, 0)],
    "mnist-small": [16, "A", 32, "A", (32, 3, 1, 0)],
}


def build_vgg(name: str, cfg: Cfg, input_shape: Tuple[int, int, int], num_classes: int, hidden: Sequence[int],
              batch_norm: bool = False, conv_dropout: float = 0.2, fc_dropout: float = 0.5) -> Network:
    """Features from `cfg`, then `hidden` linear layers, then the output layer."""
    if len(input_shape) != 3:
        raise ModelError(f"model '{name}' needs image input (C, H, W), got {input_shape}")
    layers = []
    channels, size = input_shape[0], min(input_shape[1:])
    n_pool = sum(1 for c in cfg if c == "A")
    if size < 2 ** n_pool:
        raise ModelError(f"model '{name}' pools {n_pool} times and needs inputs of at least {2 ** n_pool}x{2 ** n_pool}, "
                         f"got {input_shape[1]}x{input_shape[2]}")
    for i, item in enumerate(cfg):
        if item == "A":
            layers.append(AvgPool2d(f"pool{i}", 2))
            continue
        out, kernel, stride, padding = item if isinstance(item, tuple) else (int(item), 3, 1, 1)
        layers.append(Conv2d(f"conv{i}", channels, out, kernel, stride, padding))
        if batch_norm:
            layers.append(BatchNorm2d(f"bn{i}", out))
        layers.append(Spike(f"spike{i}"))
        nxt = cfg[i + 1] if i + 1 < len(cfg) else None
        if nxt != "A" and conv_dropout > 0:
            layers.append(Dropout(f"drop{i}", conv_dropout))
        channels = out
    layers.append(Flatten("flatten"))
    features = _flat_features(layers, input_shape)
    for j, width in enumerate(hidden):
        layers.append(Linear(f"fc{j}", features, width))
        if batch_norm:
            layers.append(BatchNorm1d(f"fc_bn{j}", width))
        layers.append(Spike(f"fc_spike{j}"))
        if fc_dropout > 0:
            layers.append(Dropout(f"fc_drop{j}", fc_dropout))
        features = width
    layers.append(Linear("out", features, num_classes))
    return Network(tuple(layers), input_shape, num_classes, name=name)


def _flat_features(layers, input_shape) -> int:
    from toolchain.ir import chain_shapes
    return chain_shapes(layers, input_shape)[-1][0]


def vgg_small(input_shape, num_classes, batch_norm=False, **kw) -> Network:
    """A small VGG for 8x8 digits (two conv stages, one hidden layer); deploys to Lava in ms per step."""
    cfg = [16, "A", 32, "A"] if min(input_shape[1:]) >= 4 else [16, 32]
    return build_vgg("vgg-small", cfg, input_shape, num_classes, hidden=kw.pop("hidden", [64]),
                     batch_norm=batch_norm, conv_dropout=kw.pop("conv_dropout", 0.1), fc_dropout=kw.pop("fc_dropout", 0.2))


def _paper_vgg(key):
    def build(input_shape, num_classes, batch_norm=False, **kw) -> Network:
        hidden = kw.pop("hidden", [4096, 4096] if key == "vgg5" else [4096, 4096])
        return build_vgg(key, CFGS[key], input_shape, num_classes, hidden=hidden, batch_norm=batch_norm, **kw)
    build.__doc__ = f"{key.upper()} as in Rathi et al. 2020 (no bias, average pooling, dropout)."
    return build


vgg5 = _paper_vgg("vgg5")
vgg9 = _paper_vgg("vgg9")
vgg11 = _paper_vgg("vgg11")
vgg16 = _paper_vgg("vgg16")


def vgg_deep(input_shape, num_classes, batch_norm=False, **kw) -> Network:
    """A deep plain VGG for 8x8 inputs: 12 convs (16/32/64 channels, two 2x2 pools), one hidden layer
    of 64, the output layer: 14 synaptic layers, for the exploding/vanishing gradient experiment."""
    return build_vgg("vgg-deep", CFGS["vgg-deep"], input_shape, num_classes, hidden=kw.pop("hidden", [64]),
                     batch_norm=batch_norm, conv_dropout=kw.pop("conv_dropout", 0.0), fc_dropout=kw.pop("fc_dropout", 0.2))


def _mnist_vgg(key, hidden):
    def build(input_shape, num_classes, batch_norm=False, **kw) -> Network:
        return build_vgg(key, CFGS[key], input_shape, num_classes, hidden=kw.pop("hidden", hidden),
                         batch_norm=batch_norm, conv_dropout=kw.pop("conv_dropout", 0.1),
                         fc_dropout=kw.pop("fc_dropout", 0.2))
    return build


mnist_vgg = _mnist_vgg("mnist-vgg", [128])
mnist_small = _mnist_vgg("mnist-small", [64])

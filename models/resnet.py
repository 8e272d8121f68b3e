"""ResNet-style networks built from residual blocks of two 3x3 convs (no bias) with an identity
or 1x1-conv shortcut, as in the ResNet-20 of Rathi et al. 2020 and the ResNet-18 used for direct
training (Ledinauskas et al. 2020). In the SNN a spiking neuron follows each block's sum."""
from __future__ import annotations

from typing import Sequence

from toolchain.errors import ModelError
from toolchain.ir import AvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, Network, Residual, Spike


def _conv_bn(name, cin, cout, k, stride, pad, batch_norm):
    layers = [Conv2d(name, cin, cout, k, stride, pad)]
    if batch_norm:
        layers.append(BatchNorm2d(f"{name}_bn", cout))
    return layers


def basic_block(name, cin, cout, stride, batch_norm) -> list:
    body = _conv_bn(f"{name}_conv1", cin, cout, 3, stride, 1, batch_norm) + [Spike(f"{name}_spike1")]
    body += _conv_bn(f"{name}_conv2", cout, cout, 3, 1, 1, batch_norm)
    shortcut = () if (stride == 1 and cin == cout) else tuple(_conv_bn(f"{name}_down", cin, cout, 1, stride, 0, batch_norm))
    return [Residual(name, tuple(body), shortcut), Spike(f"{name}_spike")]


def build_resnet(name: str, input_shape, num_classes: int, stem: int, widths: Sequence[int], blocks: Sequence[int],
                 batch_norm: bool = False, stem_stride: int = 1) -> Network:
    if len(input_shape) != 3:
        raise ModelError(f"model '{name}' needs image input (C, H, W), got {input_shape}")
    n_down = len(widths) - 1
    if min(input_shape[1:]) < 2 ** n_down * stem_stride:
        raise ModelError(f"model '{name}' downsamples {n_down} times and needs inputs of at least "
                         f"{2 ** n_down * stem_stride}x{2 ** n_down * stem_stride}, got {input_shape[1]}x{input_shape[2]}")
    layers = _conv_bn("stem", input_shape[0], stem, 3, stem_stride, 1, batch_norm) + [Spike("stem_spike")]
    cin, size = stem, (min(input_shape[1:]) - 1) // stem_stride + 1
    for s, (width, count) in enumerate(zip(widths, blocks)):
        for b in range(count):
            stride = 2 if (s > 0 and b == 0) else 1
            layers += basic_block(f"layer{s + 1}_{b}", cin, width, stride, batch_norm)
            size = (size - 1) // stride + 1
            cin = width
    layers += [AvgPool2d("global_pool", size), Flatten("flatten"), Linear("out", cin, num_classes)]
    return Network(tuple(layers), tuple(input_shape), num_classes, name=name)


def resnet20(input_shape, num_classes, batch_norm=False, **kw) -> Network:
    """ResNet-20 (CIFAR style): 3 stages of 3 basic blocks, 16/32/64 channels."""
    return build_resnet("resnet20", input_shape, num_classes, 16, [16, 32, 64], [3, 3, 3], batch_norm)


def resnet18(input_shape, num_classes, batch_norm=False, **kw) -> Network:
    """ResNet-18 style: 4 stages of 2 basic blocks, 64/128/256/512 channels."""
    return build_resnet("resnet18", input_shape, num_classes, 64, [64, 128, 256, 512], [2, 2, 2, 2], batch_norm)


def resnet_small(input_shape, num_classes, batch_norm=False, **kw) -> Network:
    """A small ResNet for 8x8 digits: 2 stages of 1 block, 16/32 channels."""
    return build_resnet("resnet-small", input_shape, num_classes, 16, [16, 32], [1, 1], batch_norm)


def mnist_resnet(input_shape, num_classes, batch_norm=False, **kw) -> Network:
    """A small ResNet for 28x28: a stride-2 stem (16 channels, 14x14), 2 stages of 1 block (16, 32)."""
    return build_resnet("mnist-resnet", input_shape, num_classes, 16, [16, 32], [1, 1], batch_norm, stem_stride=2)

"""The entries of the toolchain's model registry (toolchain.ir.models.MODELS): a name -> a builder of a
toolchain `Network`, the input it suits and one line of what it is. `register` is this package's `snntc.plugins`
entry point. A new network is a builder (vgg.py, resnet.py or a module of its own) plus one line here.
"""
from __future__ import annotations

from toolchain.ir.models import MODELS, ModelSpec

from . import resnet, vgg

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
    ModelSpec("mnist-resnet", resnet.mnist_resnet, (1, 28, 28), "ResNet of 2 basic blocks (16, 32) after a stride-2 stem, "
              "for 28x28"),
    ModelSpec("resnet20", resnet.resnet20, (3, 32, 32), "ResNet-20, CIFAR style (3 stages x 3 blocks, 16/32/64)"),
    ModelSpec("resnet18", resnet.resnet18, (3, 32, 32), "ResNet-18 style (4 stages x 2 blocks, 64-512)"),
]


def register() -> None:
    """Register the network definitions with the toolchain's model registry."""
    for spec in SPECS:
        MODELS.register(spec)

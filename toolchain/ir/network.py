"""A small typed description of a network, shared by every stage.

One frozen dataclass per primitive (after NIR). A `Network` is a chain of layers; a `Residual`
block holds two chains (body and shortcut) whose outputs are added. `Spike` marks where the ANN
has a ReLU and the SNN has a spiking neuron. Shapes are (C, H, W) or (F,) without the batch axis,
and are checked when the network is built; a mismatch raises ShapeError naming the layer.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Iterator, Sequence, Tuple, Union

from ..errors import ModelError, ShapeError

Shape = Tuple[int, ...]


def conv_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """The output size of a convolution along one axis: the one formula every stage uses."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _check_fields(layer, positive: Tuple[str, ...] = (), non_negative: Tuple[str, ...] = ()) -> None:
    """A layer's name is a string and its sizes integers in range (ModelError naming the layer and the field)."""
    if not isinstance(layer.name, str) or not layer.name:
        raise ModelError(f"a {type(layer).__name__} layer has the name {layer.name!r}; names must be non-empty strings")
    for names, low in ((positive, 1), (non_negative, 0)):
        for f in names:
            v = getattr(layer, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ModelError(f"layer '{layer.name}': {f} is {v!r}; it must be an integer >= {low}")
    if hasattr(layer, "bias") and not isinstance(layer.bias, bool):
        raise ModelError(f"layer '{layer.name}': bias is {layer.bias!r}; it must be true or false")


@dataclass(frozen=True)
class Conv2d:
    name: str
    in_channels: int
    out_channels: int
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    bias: bool = False

    def __post_init__(self):
        _check_fields(self, ("in_channels", "out_channels", "kernel_size", "stride"), ("padding",))

    def out_shape(self, shape: Shape) -> Shape:
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise ShapeError(f"layer '{self.name}': expects ({self.in_channels}, H, W), gets {shape}")
        h = conv_out_size(shape[1], self.kernel_size, self.stride, self.padding)
        w = conv_out_size(shape[2], self.kernel_size, self.stride, self.padding)
        if h < 1 or w < 1:
            raise ShapeError(f"layer '{self.name}': input {shape} is too small for a {self.kernel_size}x{self.kernel_size} kernel")
        return (self.out_channels, h, w)


@dataclass(frozen=True)
class Linear:
    name: str
    in_features: int
    out_features: int
    bias: bool = False

    def __post_init__(self):
        _check_fields(self, ("in_features", "out_features"))

    def out_shape(self, shape: Shape) -> Shape:
        if len(shape) != 1 or shape[0] != self.in_features:
            raise ShapeError(f"layer '{self.name}': expects ({self.in_features},), gets {shape}")
        return (self.out_features,)


@dataclass(frozen=True)
class AvgPool2d:
    name: str
    kernel_size: int = 2

    def __post_init__(self):
        _check_fields(self, ("kernel_size",))

    def out_shape(self, shape: Shape) -> Shape:
        k = self.kernel_size
        if len(shape) != 3 or shape[1] % k or shape[2] % k:
            raise ShapeError(f"layer '{self.name}': {k}x{k} pooling needs (C, H, W) divisible by {k}, gets {shape}")
        return (shape[0], shape[1] // k, shape[2] // k)


@dataclass(frozen=True)
class Flatten:
    name: str

    def __post_init__(self):
        _check_fields(self)

    def out_shape(self, shape: Shape) -> Shape:
        n = 1
        for s in shape:
            n *= s
        return (n,)


@dataclass(frozen=True)
class Dropout:
    name: str
    p: float = 0.2

    def __post_init__(self):
        _check_fields(self)
        if isinstance(self.p, bool) or not isinstance(self.p, (int, float)) or not 0.0 <= self.p < 1.0:
            raise ModelError(f"layer '{self.name}': dropout p={self.p!r} is outside [0, 1)")

    def out_shape(self, shape: Shape) -> Shape:
        return shape


@dataclass(frozen=True)
class BatchNorm2d:
    """Batch norm after a conv (ANN) or on a conv spiking layer's input current (SNN: statistics over
    batch, time and positions). Folded into the conv's weights and bias for export."""
    name: str
    num_features: int

    def __post_init__(self):
        _check_fields(self, ("num_features",))

    def out_shape(self, shape: Shape) -> Shape:
        if len(shape) != 3 or shape[0] != self.num_features:
            hint = " (use BatchNorm1d after a dense layer)" if len(shape) == 1 else ""
            raise ShapeError(f"layer '{self.name}': expects ({self.num_features}, H, W), gets {shape}{hint}")
        return shape


@dataclass(frozen=True)
class BatchNorm1d:
    """Batch norm after a dense layer (ANN) or on a dense spiking layer's input current (SNN: statistics
    over batch and time, per neuron). Folded into the dense layer's weights and bias for export."""
    name: str
    num_features: int

    def __post_init__(self):
        _check_fields(self, ("num_features",))

    def out_shape(self, shape: Shape) -> Shape:
        if len(shape) != 1 or shape[0] != self.num_features:
            raise ShapeError(f"layer '{self.name}': expects ({self.num_features},), gets {shape}")
        return shape


@dataclass(frozen=True)
class Spike:
    """ReLU in the ANN; a spiking neuron (threshold, leak, reset) in the SNN."""
    name: str

    def __post_init__(self):
        _check_fields(self)

    def out_shape(self, shape: Shape) -> Shape:
        return shape


@dataclass(frozen=True)
class Residual:
    """out = body(x) + shortcut(x); an empty shortcut is the identity."""
    name: str
    body: Tuple["Layer", ...]
    shortcut: Tuple["Layer", ...] = ()

    def out_shape(self, shape: Shape) -> Shape:
        a = chain_shapes(self.body, shape)[-1] if self.body else shape
        b = chain_shapes(self.shortcut, shape)[-1] if self.shortcut else shape
        if a != b:
            raise ShapeError(f"layer '{self.name}': body gives {a} but shortcut gives {b}")
        return a


Layer = Union[Conv2d, Linear, AvgPool2d, Flatten, Dropout, BatchNorm2d, BatchNorm1d, Spike, Residual]
LAYER_TYPES = {cls.__name__: cls for cls in (Conv2d, Linear, AvgPool2d, Flatten, Dropout, BatchNorm2d, BatchNorm1d, Spike,
                                             Residual)}
SYNAPTIC = (Conv2d, Linear)
BATCH_NORMS = (BatchNorm2d, BatchNorm1d)


def chain_shapes(layers: Sequence[Layer], shape: Shape) -> list:
    """Output shape after each layer of a chain."""
    out = []
    for layer in layers:
        shape = layer.out_shape(shape)
        out.append(shape)
    return out


@dataclass(frozen=True)
class Network:
    """A feed-forward network: a chain of layers from `input_shape` to `num_classes` outputs."""
    layers: Tuple[Layer, ...]
    input_shape: Shape
    num_classes: int
    name: str = "network"
    shapes: Tuple[Shape, ...] = field(default=(), compare=False)

    def __post_init__(self):
        if not self.layers:
            raise ModelError(f"network '{self.name}' has no layers")
        names = [l.name for l in iter_layers(self.layers)]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ModelError(f"network '{self.name}': duplicate layer names {sorted(dup)}")
        shapes = tuple(chain_shapes(self.layers, tuple(self.input_shape)))
        if not shapes or shapes[-1] != (self.num_classes,):
            raise ShapeError(f"network '{self.name}': last layer '{self.layers[-1].name}' gives {shapes[-1] if shapes else None}, "
                             f"expected ({self.num_classes},)")
        if not isinstance(self.layers[-1], Linear):
            raise ModelError(f"network '{self.name}': the output layer must be Linear, is '{self.layers[-1].name}'")
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "input_shape", tuple(self.input_shape))

    def in_shape_of(self, index: int) -> Shape:
        return self.input_shape if index == 0 else self.shapes[index - 1]

    @property
    def spiking_layers(self) -> list:
        return [l for l in iter_layers(self.layers) if isinstance(l, Spike)]

    def to_dict(self) -> dict:
        return {"name": self.name, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "layers": [layer_to_dict(l) for l in self.layers]}

    @staticmethod
    def from_dict(d: dict) -> "Network":
        try:
            shape = tuple(d["input_shape"])
            if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
                raise ModelError(f"input_shape {list(shape)} must be positive integers")
            if isinstance(d["num_classes"], bool) or not isinstance(d["num_classes"], int) or d["num_classes"] < 1:
                raise ModelError(f"num_classes {d['num_classes']!r} must be a positive integer")
            return Network(layers=tuple(layer_from_dict(l) for l in d["layers"]), input_shape=shape,
                           num_classes=d["num_classes"], name=str(d.get("name", "network")))
        except (KeyError, TypeError) as exc:
            raise ModelError(f"malformed network description: {type(exc).__name__} {exc}") from None


def iter_layers(layers: Sequence[Layer]) -> Iterator[Layer]:
    """Every layer, depth first, residual blocks' inner layers included (the block itself too)."""
    for layer in layers:
        yield layer
        if isinstance(layer, Residual):
            yield from iter_layers(layer.body)
            yield from iter_layers(layer.shortcut)


def layer_to_dict(layer: Layer) -> dict:
    d = {"type": type(layer).__name__}
    for f in fields(layer):
        v = getattr(layer, f.name)
        d[f.name] = [layer_to_dict(x) for x in v] if f.name in ("body", "shortcut") else v
    return d


def layer_from_dict(d: dict) -> Layer:
    if not isinstance(d, dict):
        raise ModelError(f"a layer is described by {type(d).__name__} {d!r}, not a dict")
    d = dict(d)
    kind = d.pop("type", None)
    if kind not in LAYER_TYPES:
        raise ModelError(f"unknown layer type {kind!r}; known: {', '.join(LAYER_TYPES)}")
    for key in ("body", "shortcut"):
        if key in d:
            d[key] = tuple(layer_from_dict(x) for x in d[key])
    return LAYER_TYPES[kind](**d)


__all__ = ["conv_out_size", "Conv2d", "Linear", "AvgPool2d", "Flatten", "Dropout", "BatchNorm2d", "BatchNorm1d", "Spike", "Residual", "Network",
           "Layer", "iter_layers", "chain_shapes", "asdict"]

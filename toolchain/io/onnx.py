"""Bring your own ANN: an ONNX graph -> an ANN checkpoint (the toolchain's IR + state dict).

    import_onnx("model.onnx") -> Checkpoint(kind="ann")

Operators, and what they become:

- Conv -> Conv2d (square kernel, equal strides, the same padding on all four sides, no dilation,
  group 1; a bias input sets the layer's bias flag); auto_pad VALID, or SAME with stride 1 and an
  odd kernel, are taken as their explicit padding;
- Gemm -> Linear (transB handled, alpha/beta folded into weight and bias; transA must be 0);
  MatMul with a constant right operand -> Linear, and a following Add of a constant -> its bias;
- Relu (and Clip with min 0 and no max) -> Spike: a ReLU in the ANN, a spiking neuron in the SNN;
- AveragePool -> AvgPool2d (non-overlapping: stride == kernel, no padding);
  GlobalAveragePool, and ReduceMean over H and W, -> AvgPool2d(kernel=H) (H == W);
- BatchNormalization -> folded into the Conv/Gemm/MatMul just before it (float64, then float32):
  W' = W * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta.
  Decision: batch norm is folded at import rather than kept as BatchNorm2d layers. Conversion
  folds it anyway, imported statistics are inference-only, and folding also covers batch norm
  after a dense layer. A batch norm not directly after a Conv/Gemm is rejected;
- Flatten(axis=1), and Reshape to (N, -1) / (N, C*H*W) (constant or computed from Shape ops) ->
  Flatten (left out where the input is already flat);
- Dropout -> Dropout (its ratio kept for fine-tuning); Identity, Constant -> nothing;
- Add of two branches from one value -> Residual(body, shortcut) followed by the Spike of the Relu
  that must follow the Add. The two branches are found from the graph: a value read by two
  nodes forks, each branch is followed to the Add that joins them (the longer branch is the body,
  the other the shortcut; a branch that is the value itself is the identity shortcut, an empty
  shortcut). Nested blocks inside a branch are found the same way;
- a Softmax / LogSoftmax that is the graph's last node is dropped (decision: the argmax is
  unchanged and the SNN reads out accumulated logits); anywhere else it is an error.

Anything else raises ImportModelError naming the operator and the node, with the nearest supported
alternative (MaxPool -> AveragePool, Sigmoid/Tanh/... -> Relu, Concat -> Add residuals, ...).
Layers get the toolchain's own names (conv1, spike1, fc1, pool1, block1, ...); the ONNX node each
came from is recorded in checkpoint.training["import"]["layer_sources"] with the import's notes.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .checkpoint import Checkpoint
from ..errors import DeploymentWarning, ImportModelError, LoweringError, ModelError
from ..ir import AvgPool2d, Conv2d, Dropout, Flatten, Linear, Network, Residual, Spike

SUPPORTED = ("Conv, Gemm, MatMul (+Add bias), Relu, AveragePool, GlobalAveragePool, ReduceMean (H, W), "
             "BatchNormalization (after Conv/Gemm), Flatten, Reshape (to N x features), Dropout, "
             "Add (residual sum or bias), Identity, Constant, a final Softmax (dropped)")

_RELU_HINT = "use Relu (a spiking neuron's firing rate is a ReLU of its input current)"
HINTS = {
    "MaxPool": "use AveragePool (average pooling is linear and folds into the next layer; max pooling has no "
               "spiking equivalent here)",
    "GlobalMaxPool": "use GlobalAveragePool",
    "LpPool": "use AveragePool",
    "Sigmoid": _RELU_HINT, "Tanh": _RELU_HINT, "HardSigmoid": _RELU_HINT, "HardSwish": _RELU_HINT,
    "Gelu": _RELU_HINT, "Elu": _RELU_HINT, "Selu": _RELU_HINT, "Celu": _RELU_HINT, "Softplus": _RELU_HINT,
    "Softsign": _RELU_HINT, "LeakyRelu": _RELU_HINT, "PRelu": _RELU_HINT, "Mish": _RELU_HINT, "ThresholdedRelu": _RELU_HINT,
    "Clip": "use Relu (a Clip with a maximum, e.g. ReLU6, has no spiking equivalent; Clip(min=0) alone is accepted)",
    "Concat": "concatenation is not supported: the toolchain takes chains and two-branch residual sums (Add) only",
    "Sum": "use Add of two branches (a residual block)",
    "Softmax": "a Softmax is dropped only when it is the model's last node; remove it elsewhere",
    "LogSoftmax": "a LogSoftmax is dropped only when it is the model's last node; remove it elsewhere",
    "InstanceNormalization": "use BatchNormalization (it folds into the preceding Conv/Gemm)",
    "LayerNormalization": "use BatchNormalization (it folds into the preceding Conv/Gemm)",
    "GroupNormalization": "use BatchNormalization (it folds into the preceding Conv/Gemm)",
    "LRN": "use BatchNormalization, or remove it",
    "ConvTranspose": "use Conv",
    "Resize": "no upsampling in the SNN toolchain: use strided Conv / AveragePool networks",
    "Upsample": "no upsampling in the SNN toolchain: use strided Conv / AveragePool networks",
    "Mul": "fold the scaling into the neighbouring Conv/Gemm weights, or into the data normalization (--normalize)",
    "Div": "fold the scaling into the neighbouring Conv/Gemm weights, or into the data normalization (--normalize)",
    "Sub": "fold the offset into the data normalization (--normalize) or into a bias",
    "LSTM": "feed-forward networks only", "GRU": "feed-forward networks only", "RNN": "feed-forward networks only",
    "Transpose": "the toolchain's tensors are (N, C, H, W) or (N, features): remove the Transpose",
}

# operators evaluated at import time when all their inputs are constants (shape arithmetic)
_STATIC_OPS = {"Constant", "Identity", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice",
               "Mul", "Add", "Sub", "Div", "Reshape", "Size", "Transpose"}
_BATCH = 1          # the batch size Shape() reports during shape arithmetic


def _node_name(node, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


class _Importer:
    def __init__(self, model, source: str):
        import onnx
        from onnx import numpy_helper
        self.onnx, self.numpy_helper = onnx, numpy_helper
        self.source = source
        g = model.graph
        self.graph = g
        self.nodes = list(g.node)           # one Python object per node (protobuf wrappers are not stable)
        self.consts: Dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for domain in model.opset_import:
            if domain.domain in ("", "ai.onnx"):
                self.opset = int(domain.version)
                break
        else:
            self.opset = 0
        # graph input: the one input that is not an initializer
        inputs = [i for i in g.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise ImportModelError(f"{source}: the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                                   f"exactly one image or feature input is supported")
        if len(g.output) != 1:
            raise ImportModelError(f"{source}: the model has {len(g.output)} outputs; exactly one (the class scores) "
                                   f"is supported")
        self.input_name, self.output_name = inputs[0].name, g.output[0].name
        self.input_shape = self._input_shape(inputs[0])
        # which node outputs are constants (shape arithmetic, Constant, Identity of a weight)
        self.index = {id(n): i for i, n in enumerate(self.nodes)}
        self.static_producer = {}
        static = set(self.consts)
        for node in self.nodes:
            if node.domain not in ("", "ai.onnx"):
                raise ImportModelError(f"unsupported ONNX operator {node.domain}.{node.op_type} (node "
                                       f"'{_node_name(node, self.index[id(node)])}'): only standard ONNX operators are "
                                       f"supported ({SUPPORTED})")
            ins = [i for i in node.input if i]
            if node.op_type in ("Constant", "Shape", "Size") or (
                    node.op_type in _STATIC_OPS and ins and all(i in static for i in ins)):
                for out in node.output:
                    self.static_producer[out] = node
                static.update(node.output)
        self.static = static
        self.consumers: Dict[str, list] = {}
        self.producer: Dict[str, object] = {}
        for node in self.nodes:
            if node.output and node.output[0] in self.static_producer:
                continue
            for out in node.output:
                self.producer[out] = node
            for i in node.input:
                if i and i not in static:
                    self.consumers.setdefault(i, []).append(node)
        self.shapes: Dict[str, tuple] = {self.input_name: self.input_shape}
        self.params: Dict[str, Dict[str, Optional[np.ndarray]]] = {}
        self.counters: Dict[str, int] = {}
        self.sources: Dict[str, str] = {}
        self.notes: List[str] = []
        self.visited = set()

    # -- helpers ------------------------------------------------------------------------------
    def _input_shape(self, value_info) -> tuple:
        t = value_info.type.tensor_type
        if t.elem_type not in (1, 10, 11, 16):          # float, float16, double, bfloat16
            raise ImportModelError(f"{self.source}: input '{value_info.name}' is not a float tensor")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if len(dims) not in (2, 4):
            raise ImportModelError(f"{self.source}: input '{value_info.name}' has rank {len(dims)}; expected "
                                   f"(N, C, H, W) images or (N, features)")
        if any(d is None or d < 1 for d in dims[1:]):
            raise ImportModelError(f"{self.source}: input '{value_info.name}' has symbolic dimensions {dims[1:]}; "
                                   f"export the model with a fixed input size (only the batch may vary)")
        return tuple(int(d) for d in dims[1:])

    def name_of(self, node) -> str:
        return _node_name(node, self.index[id(node)])

    def fresh(self, prefix: str, node) -> str:
        self.counters[prefix] = self.counters.get(prefix, 0) + 1
        name = f"{prefix}{self.counters[prefix]}"
        self.sources[name] = self.name_of(node)
        return name

    def err(self, node, msg: str) -> ImportModelError:
        return ImportModelError(f"{node.op_type} node '{self.name_of(node)}': {msg}")

    def attrs(self, node) -> dict:
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def const(self, name: str, node=None) -> np.ndarray:
        """The value of a constant (initializer, Constant, or shape arithmetic on known shapes)."""
        if name in self.consts:
            return self.consts[name]
        producer = self.static_producer.get(name)
        if producer is None:
            raise self.err(node, f"input '{name}' must be a constant (a weight), but it is computed from the "
                                 f"network's input") if node is not None else ImportModelError(f"'{name}' is not constant")
        self._eval_static(producer)
        return self.consts[name]

    def _eval_static(self, node) -> None:
        op, a = node.op_type, self.attrs(node)
        ins = [self.const(i, node) if i else None for i in node.input] if op not in ("Shape", "Size") else []
        if op == "Constant":
            if "value" in a:
                out = self.numpy_helper.to_array(a["value"])
            elif "value_float" in a or "value_int" in a:
                out = np.array(a.get("value_float", a.get("value_int")))
            elif "value_floats" in a or "value_ints" in a:
                out = np.array(a.get("value_floats", a.get("value_ints")))
            else:
                raise self.err(node, "unsupported kind of Constant")
        elif op in ("Shape", "Size"):
            src = node.input[0]
            if src in self.shapes:
                full = np.array((_BATCH,) + tuple(self.shapes[src]), dtype=np.int64)
            elif src in self.consts or src in self.static_producer:
                full = np.array(self.const(src, node).shape, dtype=np.int64)
            else:
                raise self.err(node, f"the shape of '{src}' is not known at this point of the graph")
            if op == "Size":
                out = np.array(np.prod(full), dtype=np.int64)
            else:
                start, end = a.get("start", 0), a.get("end", None)
                out = full[start:end]
        elif op == "Identity":
            out = ins[0]
        elif op == "Gather":
            out = np.take(ins[0], ins[1], axis=a.get("axis", 0))
        elif op == "Unsqueeze":
            axes = list(a["axes"]) if "axes" in a else list(ins[1])
            out = ins[0]
            rank = out.ndim + len(axes)
            for ax in sorted(int(x) % rank for x in axes):
                out = np.expand_dims(out, ax)
        elif op == "Squeeze":
            axes = a.get("axes", list(ins[1]) if len(ins) > 1 and ins[1] is not None else None)
            out = np.squeeze(ins[0], axis=tuple(int(x) for x in axes) if axes is not None else None)
        elif op == "Concat":
            out = np.concatenate([np.atleast_1d(x) for x in ins], axis=a.get("axis", 0))
        elif op == "Cast":
            out = ins[0].astype(self.onnx.helper.tensor_dtype_to_np_dtype(a["to"]))
        elif op == "Slice":
            data, starts, ends = ins[0], ins[1], ins[2]
            axes = ins[3] if len(ins) > 3 and ins[3] is not None else range(len(starts))
            steps = ins[4] if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
            sl = [slice(None)] * data.ndim
            for s, e, ax, st in zip(starts, ends, axes, steps):
                sl[int(ax)] = slice(int(s), int(e), int(st))
            out = data[tuple(sl)]
        elif op in ("Mul", "Add", "Sub", "Div"):
            x, y = ins
            if op == "Div" and np.issubdtype(np.asarray(x).dtype, np.integer):
                out = np.trunc(np.asarray(x) / np.asarray(y)).astype(np.asarray(x).dtype)
            else:
                out = {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract, "Div": np.divide}[op](x, y)
        elif op == "Transpose":
            perm = a.get("perm")
            out = np.transpose(ins[0], perm if perm is None else [int(p) for p in perm])
        elif op == "Reshape":
            target = [int(t) for t in ins[1]]
            target = [ins[0].shape[i] if t == 0 else t for i, t in enumerate(target)]
            out = ins[0].reshape(target)
        else:
            raise self.err(node, "cannot be evaluated at import time")
        self.consts[node.output[0]] = np.asarray(out)

    def _only_first_output_used(self, node) -> None:
        for extra in node.output[1:]:
            if extra and (self.consumers.get(extra) or extra == self.output_name):
                raise self.err(node, f"its output '{extra}' is used; only the first output of a {node.op_type} is supported")

    # -- the walk -----------------------------------------------------------------------------
    def run(self) -> Tuple[List, tuple]:
        layers, value, shape, join = self.chain(self.input_name, self.input_shape)
        if join is not None:
            raise self.err(join, "an Add of two computed values outside a residual block (its inputs do not fork "
                                 "from one value)")
        return layers, shape

    def is_join(self, node) -> bool:
        return node.op_type == "Add" and len([i for i in node.input if i and i not in self.static]) == 2

    def chain(self, value: str, shape: tuple, first=None):
        """Layers from `value` along single-consumer nodes until the graph output or a joining Add.
        Returns (layers, last value, its shape, the joining Add node or None)."""
        layers: List = []
        if first is not None:
            value, shape = self.convert(first, value, shape, layers)
        while True:
            cons = self.consumers.get(value, [])
            if value == self.output_name:
                if cons:
                    raise ImportModelError(f"{self.source}: the output '{value}' is also used inside the graph")
                return layers, value, shape, None
            if not cons:
                producer = self.producer.get(value)
                where = f" (from {producer.op_type} node '{self.name_of(producer)}')" if producer is not None else ""
                raise ImportModelError(f"{self.source}: value '{value}'{where} is not used and is not the model's "
                                       f"output: the graph must be a single path (with residual blocks) to one output")
            if len(cons) == 1:
                node = cons[0]
                if self.is_join(node):
                    return layers, value, shape, node
                value, shape = self.convert(node, value, shape, layers)
            elif len(cons) == 2:
                block, value, shape = self.residual(value, shape, cons)
                layers.append(block)
            else:
                names = ", ".join(f"{n.op_type} '{self.name_of(n)}'" for n in cons)
                raise ImportModelError(f"{self.source}: value '{value}' feeds {len(cons)} nodes ({names}); only "
                                       f"two-branch residual blocks (joined by an Add) are supported")

    def residual(self, value: str, shape: tuple, cons: list):
        if cons[0] is cons[1]:
            raise self.err(cons[0], f"uses '{value}' twice; only residual sums of two different branches are supported")
        branches = []
        for node in cons:
            if self.is_join(node):
                branches.append(([], value, shape, node))        # identity shortcut
            else:
                branches.append(self.chain(value, shape, first=node))
        joins = [b[3] for b in branches]
        if any(j is None for j in joins):
            raise ImportModelError(f"{self.source}: value '{value}' forks into two branches that do not meet again in an "
                                   f"Add; only residual blocks (two branches joined by an Add) are supported")
        add = joins[0]
        if joins[1] is not add:
            raise ImportModelError(f"{self.source}: the two branches from '{value}' end in different Adds "
                                   f"('{self.name_of(joins[0])}', '{self.name_of(joins[1])}'); only residual blocks "
                                   f"(two branches joined by one Add) are supported")
        if sorted(i for i in add.input if i) != sorted(b[1] for b in branches):
            raise self.err(add, "does not add the two branches of one residual block")
        self.visited.add(id(add))
        if branches[0][2] != branches[1][2]:
            raise self.err(add, f"adds shapes {branches[0][2]} and {branches[1][2]}")
        body, short = sorted(branches, key=lambda b: -len(b[0]))
        if not body[0]:
            raise self.err(add, "adds a value to itself")
        name = self.fresh("block", add)
        block = Residual(name, tuple(body[0]), tuple(short[0]))
        out = add.output[0]
        nxt = self.consumers.get(out, [])
        if len(nxt) != 1 or not self._is_relu(nxt[0]):
            raise self.err(add, "a residual sum must be followed by exactly one Relu: the SNN needs a spiking layer "
                                "after each sum")
        self.shapes[out] = body[2]
        return block, out, body[2]

    def _is_relu(self, node) -> bool:
        if node.op_type == "Relu":
            return True
        if node.op_type == "Clip":
            lo, hi = self._clip_bounds(node)
            return lo == 0 and hi is None
        return False

    def _clip_bounds(self, node):
        a = self.attrs(node)
        if self.opset < 11 or "min" in a or "max" in a:
            lo, hi = a.get("min", None), a.get("max", None)
        else:
            ins = list(node.input) + ["", ""]
            lo = float(self.const(ins[1], node)) if ins[1] else None
            hi = float(self.const(ins[2], node)) if ins[2] else None
        if hi is not None and not np.isfinite(hi):
            hi = None
        return lo, hi

    # -- one node -----------------------------------------------------------------------------
    def convert(self, node, value: str, shape: tuple, layers: list):
        """Append the IR layer(s) of `node` (whose activation input is `value`) to `layers`."""
        op = node.op_type
        self.visited.add(id(node))
        self._only_first_output_used(node)
        out = node.output[0]
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            hint = HINTS.get(op, f"supported operators: {SUPPORTED}")
            raise ImportModelError(f"unsupported ONNX operator {op} (node '{self.name_of(node)}'): {hint}")
        if [i for i in node.input if i and i not in self.static and i != value]:
            raise self.err(node, "combines two computed values; only an Add of two branches (a residual block) may")
        shape = handler(node, value, tuple(shape), layers)
        self.shapes[out] = tuple(shape)
        return out, tuple(shape)

    def _add(self, layers, layer, shape, node):
        try:
            new_shape = layer.out_shape(shape)
        except ModelError as exc:
            raise self.err(node, str(exc)) from None
        layers.append(layer)
        return new_shape

    def _op_Identity(self, node, value, shape, layers):
        return shape

    def _op_Relu(self, node, value, shape, layers):
        return self._add(layers, Spike(self.fresh("spike", node)), shape, node)

    def _op_Clip(self, node, value, shape, layers):
        if not self._is_relu(node):
            raise ImportModelError(f"unsupported ONNX operator Clip (node '{self.name_of(node)}'): {HINTS['Clip']}")
        return self._op_Relu(node, value, shape, layers)

    def _op_Conv(self, node, value, shape, layers):
        a = self.attrs(node)
        w = np.asarray(self.const(node.input[1], node), dtype=np.float64)
        b = np.asarray(self.const(node.input[2], node), dtype=np.float64) if len(node.input) > 2 and node.input[2] else None
        if w.ndim != 4:
            raise self.err(node, f"a {w.ndim - 2}-d convolution; only 2-d convolutions (Conv2d) are supported")
        if len(shape) != 3:
            raise self.err(node, f"gets input of shape {shape}; a 2-d convolution needs (C, H, W)")
        if a.get("group", 1) != 1:
            raise self.err(node, f"group={a['group']} (grouped / depthwise convolution); only group=1 is supported")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            raise self.err(node, f"dilations {list(a['dilations'])}; only dilation 1 is supported")
        kh, kw = w.shape[2:]
        if kh != kw:
            raise self.err(node, f"kernel {kh}x{kw}; the toolchain's Conv2d has square kernels")
        strides = list(a.get("strides", [1, 1]))
        if strides[0] != strides[1]:
            raise self.err(node, f"strides {strides}; only equal strides are supported")
        auto_pad = a.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad in ("NOTSET", ""):
            pads = list(a.get("pads", [0, 0, 0, 0]))
        elif auto_pad == "VALID":
            pads = [0, 0, 0, 0]
        elif strides[0] == 1 and kh % 2 == 1:
            pads = [kh // 2] * 4
        else:
            raise self.err(node, f"auto_pad {auto_pad} with stride {strides[0]} and kernel {kh}; give explicit pads")
        if len(set(pads)) != 1:
            raise self.err(node, f"pads {pads}; only the same padding on all four sides is supported")
        name = self.fresh("conv", node)
        layer = Conv2d(name, int(w.shape[1]), int(w.shape[0]), int(kh), int(strides[0]), int(pads[0]), bias=b is not None)
        self.params[name] = {"weight": w, "bias": b}
        return self._add(layers, layer, shape, node)

    def _linear(self, node, w, b, shape, layers):
        if len(shape) != 1:
            raise self.err(node, f"gets input of shape {shape}; a dense layer needs a flat (N, features) input "
                                 f"(add a Flatten before it)")
        name = self.fresh("fc", node)
        self.params[name] = {"weight": w, "bias": b}
        return self._add(layers, Linear(name, int(w.shape[1]), int(w.shape[0]), bias=b is not None), shape, node)

    def _op_Gemm(self, node, value, shape, layers):
        a = self.attrs(node)
        if node.input[0] != value or a.get("transA", 0):
            raise self.err(node, "the network's activation must be the first operand, untransposed (transA=0)")
        w = np.asarray(self.const(node.input[1], node), dtype=np.float64)
        w = (w if a.get("transB", 0) else w.T) * a.get("alpha", 1.0)
        b = None
        if len(node.input) > 2 and node.input[2]:
            c = np.asarray(self.const(node.input[2], node), dtype=np.float64) * a.get("beta", 1.0)
            try:
                b = np.broadcast_to(c.reshape(-1) if c.size == w.shape[0] else c, (w.shape[0],)).copy()
            except ValueError:
                raise self.err(node, f"bias of shape {c.shape} does not fit {w.shape[0]} outputs") from None
        return self._linear(node, w, b, shape, layers)

    def _op_MatMul(self, node, value, shape, layers):
        if node.input[0] != value:
            raise self.err(node, "the network's activation must be the left operand (x @ W)")
        w = np.asarray(self.const(node.input[1], node), dtype=np.float64)
        if w.ndim != 2:
            raise self.err(node, f"weight of rank {w.ndim}; only 2-d weight matrices are supported")
        return self._linear(node, w.T, None, shape, layers)

    def _op_Add(self, node, value, shape, layers):
        other = [i for i in node.input if i != value]
        if len(other) != 1 or other[0] not in self.static:
            raise self.err(node, "an Add of two computed values outside a residual block")
        c = np.asarray(self.const(other[0], node), dtype=np.float64)
        prev = layers[-1] if layers else None
        if not isinstance(prev, (Conv2d, Linear)):
            raise self.err(node, f"adds a constant after {type(prev).__name__ if prev else 'the input'}; a constant "
                                 f"may only be added as the bias of a Conv, Gemm or MatMul")
        n = prev.out_channels if isinstance(prev, Conv2d) else prev.out_features
        ok_shapes = [(n,), (1, n)] if isinstance(prev, Linear) else [(n, 1, 1), (1, n, 1, 1)]
        if c.size == 1:
            c = np.full(n, float(c.reshape(())))
        elif c.shape in ok_shapes:
            c = c.reshape(n)
        else:
            raise self.err(node, f"constant of shape {c.shape} is not a per-{'channel' if isinstance(prev, Conv2d) else 'output'} "
                                 f"bias of '{self.sources[prev.name]}'")
        p = self.params[prev.name]
        p["bias"] = c if p["bias"] is None else p["bias"] + c
        layers[-1] = replace(prev, bias=True)
        return shape

    def _op_BatchNormalization(self, node, value, shape, layers):
        a = self.attrs(node)
        if a.get("training_mode", 0):
            raise self.err(node, "is in training mode; export the model in eval mode")
        prev = layers[-1] if layers else None
        if not isinstance(prev, (Conv2d, Linear)):
            what = type(prev).__name__ if prev is not None else "the start of its branch"
            if isinstance(prev, Spike):
                what = "a Relu"
            raise self.err(node, f"follows {what}; batch norm is folded into the Conv/Gemm directly before it, so it "
                                 f"must follow one (move it before the Relu/pooling)")
        gamma, beta, mean, var = (np.asarray(self.const(i, node), dtype=np.float64) for i in node.input[1:5])
        scale = gamma / np.sqrt(var + a.get("epsilon", 1e-5))
        p = self.params[prev.name]
        w = p["weight"]
        p["weight"] = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        b = p["bias"] if p["bias"] is not None else np.zeros_like(scale)
        p["bias"] = (b - mean) * scale + beta
        layers[-1] = replace(prev, bias=True)
        self.notes.append(f"batch norm '{self.name_of(node)}' folded into '{prev.name}'")
        return shape

    def _pool(self, node, k, shape, layers):
        return self._add(layers, AvgPool2d(self.fresh("pool", node), int(k)), shape, node)

    def _op_AveragePool(self, node, value, shape, layers):
        a = self.attrs(node)
        k = list(a["kernel_shape"])
        strides = list(a.get("strides", [1] * len(k)))
        pads = list(a.get("pads", [0] * 2 * len(k)))
        auto_pad = a.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if len(k) != 2 or k[0] != k[1]:
            raise self.err(node, f"kernel {k}; only square 2-d average pooling is supported")
        if strides != k:
            raise self.err(node, f"stride {strides} differs from the kernel {k}; only non-overlapping pooling "
                                 f"(stride = kernel) is supported")
        if any(pads) or auto_pad not in ("NOTSET", "", "VALID"):
            raise self.err(node, "padded average pooling is not supported")
        if len(shape) != 3:
            raise self.err(node, f"gets input of shape {shape}; needs (C, H, W)")
        return self._pool(node, k[0], shape, layers)

    def _global_pool(self, node, shape, layers):
        if len(shape) != 3 or shape[1] != shape[2]:
            raise self.err(node, f"global pooling of a {'x'.join(map(str, shape[1:]))} map; the toolchain pools "
                                 f"square maps only (AvgPool2d with kernel = H = W)")
        return self._pool(node, shape[1], shape, layers)

    def _op_GlobalAveragePool(self, node, value, shape, layers):
        return self._global_pool(node, shape, layers)

    def _op_ReduceMean(self, node, value, shape, layers):
        a = self.attrs(node)
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = list(self.const(node.input[1], node))
        rank = len(shape) + 1
        if axes is None or sorted(int(x) % rank for x in axes) != [2, 3] or rank != 4:
            raise ImportModelError(f"unsupported ONNX operator ReduceMean (node '{self.name_of(node)}'): only the mean "
                                   f"over H and W of an (N, C, H, W) tensor (global average pooling) is supported")
        shape = self._global_pool(node, shape, layers)
        if not a.get("keepdims", 1):
            shape = self._add(layers, Flatten(self.fresh("flatten", node)), shape, node)
        return shape

    def _flatten(self, node, shape, layers):
        if len(shape) == 1:
            return shape
        return self._add(layers, Flatten(self.fresh("flatten", node)), shape, node)

    def _op_Flatten(self, node, value, shape, layers):
        axis = self.attrs(node).get("axis", 1)
        rank = len(shape) + 1
        if (axis + rank if axis < 0 else axis) != 1:
            raise self.err(node, f"axis={axis}; only flattening everything but the batch (axis=1) is supported")
        return self._flatten(node, shape, layers)

    def _op_Reshape(self, node, value, shape, layers):
        target = [int(t) for t in np.asarray(self.const(node.input[1], node)).reshape(-1)]
        n = int(np.prod(shape))
        if len(target) != 2 or target[1] not in (-1, n) or (target[1] == -1 and target[0] == -1):
            raise self.err(node, f"reshapes {shape} to {target}; only a flatten to (N, {n}) is supported")
        return self._flatten(node, shape, layers)

    def _op_Dropout(self, node, value, shape, layers):
        a = self.attrs(node)
        p = float(a.get("ratio", 0.5))
        if len(node.input) > 1 and node.input[1]:
            p = float(self.const(node.input[1], node))
        if len(node.input) > 2 and node.input[2] and bool(self.const(node.input[2], node)):
            raise self.err(node, "is in training mode; export the model in eval mode")
        if not 0.0 <= p < 1.0:
            raise self.err(node, f"ratio {p} outside [0, 1)")
        if p == 0.0:
            return shape
        return self._add(layers, Dropout(self.fresh("dropout", node), p), shape, node)

    def _softmax(self, node, value, shape, layers):
        if node.output[0] != self.output_name:
            raise ImportModelError(f"unsupported ONNX operator {node.op_type} (node '{self.name_of(node)}'): "
                                   f"{HINTS[node.op_type]}")
        self.notes.append(f"final {node.op_type} '{self.name_of(node)}' dropped (the class scores are the logits "
                          f"before it; the argmax is unchanged)")
        return shape

    _op_Softmax = _softmax
    _op_LogSoftmax = _softmax


def _load(path):
    import onnx
    if not isinstance(path, (str, os.PathLike)):
        return path, "model"
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise ImportModelError(f"{source}: no such ONNX file")
    try:
        model = onnx.load(source)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning-like errors, ...
        raise ImportModelError(f"{source}: not an ONNX model ({type(exc).__name__}: {str(exc)[:80]})") from None
    if model.ir_version < 1 or not model.graph.node or not model.graph.input:
        raise ImportModelError(f"{source}: not an ONNX model (no graph inside)")
    return model, source


def import_onnx(path, num_classes: Optional[int] = None, name: Optional[str] = None) -> Checkpoint:
    """Read an ONNX model file (or an onnx.ModelProto) into an ANN checkpoint (no dataset info yet).

    The network's input shape is the ONNX input's shape without the batch axis; its classes are the
    last Gemm/MatMul's outputs (checked against `num_classes` when given). The checkpoint's
    training["import"] holds the source, the ONNX node of each layer, notes (folded batch norms, a
    dropped Softmax) and warnings (e.g. a network that converts but cannot be exported to netx).
    """
    model, source = _load(path)
    imp = _Importer(model, source)
    layers, shape = imp.run()
    unvisited = [n for n in imp.nodes
                 if id(n) not in imp.visited and n.output and n.output[0] not in imp.static_producer]
    if unvisited:
        n = unvisited[0]
        raise ImportModelError(f"{n.op_type} node '{imp.name_of(n)}' is not on the path from the input to the output; "
                               f"the graph must be a single path (with residual blocks)")
    if not layers or not isinstance(layers[-1], Linear):
        last = f"{type(layers[-1]).__name__} (from node '{imp.sources.get(layers[-1].name, '?')}')" if layers else "nothing"
        raise ImportModelError(f"{source}: the model must end in a Gemm/MatMul output layer (the class scores), "
                               f"it ends in {last}")
    classes = layers[-1].out_features
    if num_classes is not None and int(num_classes) != classes:
        raise ImportModelError(f"{source}: the model has {classes} outputs, but {num_classes} classes were asked for")
    net_name = name or (os.path.splitext(os.path.basename(source))[0] if source != "model" else "onnx-model")
    try:
        net = Network(tuple(layers), imp.input_shape, classes, name=net_name)
    except ModelError as exc:
        raise ImportModelError(f"{source}: {exc}") from None
    from ..ir.torch_net import AnnModel
    ann = AnnModel(net)
    with torch.no_grad():
        for layer_name, p in imp.params.items():
            mod = ann.layers[layer_name]
            mod.weight.copy_(torch.as_tensor(p["weight"], dtype=torch.float32).reshape(mod.weight.shape))
            if p["bias"] is not None:
                mod.bias.copy_(torch.as_tensor(p["bias"], dtype=torch.float32))
    state = {k: v.detach().clone() for k, v in ann.state_dict().items()}
    problems = []
    try:
        from ..ir.lowering import lower
        params = {k[len("layers."):]: v for k, v in state.items()}
        lower(net, params, {s.name: 1.0 for s in net.spiking_layers})
    except LoweringError as exc:
        problems.append(f"converts and fine-tunes, but cannot be exported to netx: {exc}")
    for message in problems:
        warnings.warn(message, DeploymentWarning, stacklevel=2)
    info = {"source": os.path.abspath(source) if source != "model" else source, "format": "onnx", "opset": imp.opset,
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "layer_sources": dict(imp.sources), "notes": imp.notes, "warnings": problems}
    return Checkpoint("ann", net, state, {}, training={"import": info}, metrics={"test_accuracy": None})


def export_onnx(ckpt: Checkpoint, path: str, opset: int = 17) -> None:
    """Write the ANN of a checkpoint as ONNX (atomically): an ANN checkpoint as it is; an SNN
    checkpoint as its ANN (the same weights, ReLUs where it has spiking neurons; thresholds and
    neuron settings in the model's metadata_props). Input 'input' (N, *input_shape), output 'logits'."""
    import json

    import onnx

    from .files import atomic_write
    from ..errors import ExportError
    from ..ir.torch_net import AnnModel
    if os.path.isdir(path):
        raise ExportError(f"{path} is a directory: give a file name such as model.onnx")
    model = AnnModel(ckpt.network)
    model.load_state_dict(ckpt.state_dict)
    model.eval()
    x = torch.zeros((1,) + tuple(ckpt.network.input_shape))
    from .. import __version__
    props = {"snntc_version": __version__, "snntc_kind": ckpt.kind, "snntc_network": json.dumps(ckpt.network.to_dict())}
    if ckpt.kind == "snn" and ckpt.snn:
        props["snntc_snn"] = json.dumps(ckpt.snn.to_dict())
    if ckpt.dataset:
        props["snntc_dataset"] = json.dumps({k: ckpt.dataset.get(k) for k in ("name", "input_shape", "mean", "std", "classes")})

    def write(tmp):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), tmp, opset_version=opset, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        m = onnx.load(tmp)
        for k, v in props.items():
            entry = m.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(m, tmp)

    try:
        atomic_write(path, write)
    except OSError as exc:
        raise ExportError(f"{path}: cannot write ({exc.strerror or exc})") from None

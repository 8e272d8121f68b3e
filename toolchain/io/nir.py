"""The SNN as a NIR graph (Neuromorphic Intermediate Representation, nir >= 1.0), for other
simulators and chips.

    export_nir(snn_ckpt, "model.nir", train_x) -> nir.NIRGraph   (written atomically, HDF5)

Graph: one node per layer of the network as written, named after the toolchain's layers:

    Input -> Conv2d | Affine (bias) / Linear (no bias) | AvgPool2d | Flatten | IF / LIF / CubaLIF ... -> Output

Batch norm is folded into the conv / dense layer before it (as for netx), dropout is left out (the
identity at inference), and a Flatten of an already flat tensor is left out. Flatten nodes flatten
everything (start_dim 0: NIR shapes have no batch axis). A residual block is two paths from the
same node whose last nodes both have an edge into the node after the block: NIR sums the inputs
arriving at a node, which is the block's addition. The output layer (the last dense layer) has no
neurons: its synaptic output goes to the Output node.

Time steps (graph metadata "dt", "timesteps", "time_convention"): step t of the toolchain's SNN is
one integration step of length dt (default 1.0, one time unit per step; pass dt=1e-4 for the
convention of snnTorch's and Lava's NIR tools). Within a step every synaptic node maps its input of
that same step (no synaptic delay; netx/Lava adds one step per layer, see toolchain/quantization/fixed_point.py), and every
neuron integrates NIR's equations by one forward-Euler step of dt. Each neuron model gives its own node
(NeuronModel.nir, toolchain/neurons/): for the built-in ones

    IF       (neuron "if"):    v += I                     r = 1/dt
    LIF      (neuron "lif"):   v = leak * v + I           tau = dt / (1 - leak), r = tau / dt, v_leak = 0
    CubaLIF  ("loihi-cuba"):   I = (1 - i_decay/4096) I + a;   v = (1 - v_decay/4096) v + I
                               tau_syn = 4096 dt / i_decay, w_in = tau_syn / dt,
                               tau_mem = 4096 dt / v_decay, r = tau_mem / dt (both inf when v_decay = 0:
                               the limit, v += I, no leak); the current is updated first (Loihi's order)

then s = 1[v > v_threshold] (strict), then the reset. Reset semantics (node metadata "reset",
graph metadata "reset_mode"): the toolchain's IF/LIF neurons reset by SUBTRACTION, v -= v_threshold
(Rathi et al. 2020; it is what makes a converted network's rates match the ANN). NIR's IF/LIF
define a reset TO v_reset, which cannot say this, so v_reset is written as 0 and "reset":
"subtract" tells a consumer to subtract instead (one that resets to 0 computes lower rates).
Loihi's CUBA neurons ("loihi-cuba") reset to zero, v = v_reset = 0, as NIR's CubaLIF does.

Inputs and outputs: the Input node receives, each step, the coded sample (graph metadata
"input_coding", and "input_values" in words from the coding's entry: "poisson": signed spikes
sign(x) * 1[u < |x|] of the normalized image, u uniform; "direct": the normalized image itself;
normalization x = (pixel - mean) / std from metadata "dataset"). The Output node receives the output layer's synaptic output each step; the class
scores are its sum over "timesteps" steps divided by that number, and the prediction their argmax.

Fixed point (metadata "fixed_point", from toolchain.quantize.quantize_snn, where the network is
deployable): each synaptic node carries its Loihi layer (integer weights, pooling and batch norm
folded in as netx holds them; bias; scale: integer = float x scale; stride, padding, source),
each neuron node the integer vth and the decays (i_decay 1..4096, v_decay 0..4095), the graph
the input scale and coding. Integer semantics are those of toolchain/quantization/fixed_point.py (Lava's
bit-accurate CUBA: state << 6, decays truncate toward zero, 24-bit current wrap, bias added to v).
A residual network has no fixed-point form (netx runs chains only): its graph metadata says why.
"""
from __future__ import annotations

import io
import json
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .checkpoint import Checkpoint
from .files import atomic_write_bytes
from ..errors import ExportError, LoweringError, QuantizationError
from ..ir import AvgPool2d, Conv2d, Flatten, Linear, Residual, Spike, iter_layers
from ..ir.passes import fold_batch_norms

TIME_CONVENTION = ("one toolchain time step = one forward-Euler step of length dt of NIR's neuron equations; "
                   "synaptic nodes map their input of the same step (no delay); a neuron integrates its input, "
                   "spikes where v > v_threshold, then resets; several edges into one node are summed")
RESET_SEMANTICS = {
    "subtract": "reset by subtraction: v -= v_threshold after a spike (v_reset is not used; NIR's IF/LIF "
                "reset to v_reset, which cannot express this)",
    "zero": "reset to zero: v = v_reset = 0 after a spike (Loihi CUBA)",
}


def _require_nir():
    try:
        import nir
    except ImportError:
        raise ExportError("NIR export needs the 'nir' package (pip install 'snntc[nir]' or pip install nir)") from None
    return nir


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


class _GraphBuilder:
    def __init__(self, nir, config, params, dt: float):
        self.nir, self.config, self.params, self.dt = nir, config, params, dt
        self.nodes: Dict[str, object] = {}
        self.edges: List[Tuple[str, str]] = []
        self.kinds: Dict[str, str] = {}

    def emit(self, name: str, node, frontier: List[str]) -> List[str]:
        if len(set(frontier)) != len(frontier):
            raise ExportError(f"layer '{name}': receives the same value twice (a residual block with two empty branches)")
        self.nodes[name] = node
        self.edges.extend((src, name) for src in frontier)
        return [name]

    def walk(self, layers, frontier: List[str], shape: tuple):
        for layer in layers:
            if isinstance(layer, Residual):
                body, bshape = self.walk(layer.body, frontier, shape) if layer.body else (frontier, shape)
                short, _ = self.walk(layer.shortcut, frontier, shape) if layer.shortcut else (frontier, shape)
                frontier, shape = body + short, bshape
                continue
            out_shape = layer.out_shape(shape)
            if isinstance(layer, Conv2d):
                frontier = self.emit(layer.name, self.conv(layer, shape), frontier)
            elif isinstance(layer, Linear):
                frontier = self.emit(layer.name, self.dense(layer), frontier)
            elif isinstance(layer, AvgPool2d):
                k = layer.kernel_size
                frontier = self.emit(layer.name, self.nir.AvgPool2d(
                    kernel_size=np.array([k, k]), stride=np.array([k, k]), padding=np.array([0, 0]),
                    metadata={"toolchain_layer": "AvgPool2d", "note": f"mean over non-overlapping {k}x{k} windows"}),
                    frontier)
            elif isinstance(layer, Flatten):
                if len(shape) > 1:
                    frontier = self.emit(layer.name, self.nir.Flatten(
                        input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1,
                        metadata={"toolchain_layer": "Flatten"}), frontier)
            elif isinstance(layer, Spike):
                frontier = self.emit(layer.name, self.neuron(layer.name, out_shape), frontier)
            else:
                raise ExportError(f"layer '{layer.name}': {type(layer).__name__} has no NIR equivalent here")
            shape = out_shape
        return frontier, shape

    def conv(self, layer: Conv2d, shape):
        w = _np(self.params[f"{layer.name}.weight"])
        b = self.params.get(f"{layer.name}.bias")
        self.kinds[layer.name] = "conv"
        return self.nir.Conv2d(input_shape=(int(shape[1]), int(shape[2])), weight=w, stride=layer.stride,
                               padding=layer.padding, dilation=1, groups=1,
                               bias=_np(b) if b is not None else np.zeros(w.shape[0], np.float32),
                               metadata={"toolchain_layer": "Conv2d", "has_bias": b is not None})

    def dense(self, layer: Linear):
        w = _np(self.params[f"{layer.name}.weight"])
        b = self.params.get(f"{layer.name}.bias")
        self.kinds[layer.name] = "dense"
        meta = {"toolchain_layer": "Linear", "has_bias": b is not None}
        if b is not None:
            return self.nir.Affine(weight=w, bias=_np(b), metadata=meta)
        return self.nir.Linear(weight=w, metadata=meta)

    def neuron(self, name: str, shape: tuple):
        c = self.config
        if name not in c.thresholds:
            raise ExportError(f"spiking layer '{name}' has no threshold: convert the ANN first")
        self.kinds[name] = "neuron"
        model = c.model
        node = model.nir_node(self.nir, shape, float(c.thresholds[name]), c, self.dt)
        node.metadata.update(reset=model.reset, reset_semantics=RESET_SEMANTICS[model.reset])
        return node


def _unique(base: str, taken: set) -> str:
    name, i = base, 0
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def _fixed_point(ckpt: Checkpoint, train_x, builder: _GraphBuilder) -> dict:
    """Attach the quantized network's integer parameters to the nodes; returns the graph-level summary."""
    from ..quantization.quantize import prepare, quantize_snn
    try:
        fx, report = quantize_snn(ckpt, train_x)
        chain = prepare(ckpt)
    except (LoweringError, QuantizationError) as exc:
        return {"available": False, "reason": str(exc)}
    spike_of = {l.name: l.spike_name for l in chain}
    for layer in fx.layers:
        node = builder.nodes.get(layer.name)
        if node is None:
            return {"available": False, "reason": f"lowered layer '{layer.name}' has no node in the graph"}
        info = {"kind": layer.kind, "weight": np.asarray(layer.weight).astype(np.int16), "scale": float(layer.scale),
                "stride": np.array(layer.stride), "padding": np.array(layer.padding),
                "input_shape": np.array(layer.input_shape), "output_shape": np.array(layer.output_shape),
                "flatten_before": bool(layer.flatten_before), "is_output": bool(layer.is_output),
                "source": layer.source, "i_decay": int(layer.i_decay), "v_decay": int(layer.v_decay)}
        if layer.bias is not None:
            info["bias"] = np.asarray(layer.bias).astype(np.int16)
        if layer.is_output:
            info["vth"] = int(layer.vth)
        node.metadata["fixed_point"] = info
        spike = spike_of.get(layer.name)
        if spike and spike in builder.nodes:
            builder.nodes[spike].metadata["fixed_point"] = {"vth": int(layer.vth), "i_decay": int(layer.i_decay),
                                                            "v_decay": int(layer.v_decay), "layer": layer.name}
    return {"available": True, "input_coding": fx.input_coding, "input_bits": int(fx.input_bits),
            "input_scale": float(fx.input_scale), "readout": fx.readout, "timesteps": int(fx.timesteps),
            "layers": ",".join(l.name for l in fx.layers),
            "units": "integer = float x scale per layer; weights are Loihi's 8-bit mantissas x 2; vth and bias in "
                     "synaptic-input units (Lava shifts state by 6 bits)",
            "warnings": "; ".join(report.warnings)}


def build_nir(snn_ckpt: Checkpoint, train_x: Optional[np.ndarray] = None, dt: float = 1.0):
    """The NIR graph of an SNN checkpoint (not written)."""
    nir = _require_nir()
    from .. import __version__
    if snn_ckpt.kind != "snn" or not snn_ckpt.snn:
        raise ExportError("NIR export needs an SNN checkpoint (convert the ANN first: snntc convert)")
    if not dt > 0:
        raise ExportError(f"dt must be > 0, got {dt}")
    config = snn_ckpt.snn
    net = snn_ckpt.network
    params = {k[len("layers."):] if k.startswith("layers.") else k: v.detach().cpu()
              for k, v in snn_ckpt.state_dict.items()}
    folded, params = fold_batch_norms(net, params, strip_dropout=True)
    layers = folded.layers
    taken = {l.name for l in iter_layers(net.layers)}
    input_name, output_name = _unique("input", taken), _unique("output", taken)
    builder = _GraphBuilder(nir, config, params, dt)
    builder.nodes[input_name] = nir.Input(input_type={"input": np.array(net.input_shape)})
    frontier, shape = builder.walk(layers, [input_name], tuple(net.input_shape))
    builder.emit(output_name, nir.Output(output_type={"output": np.array(shape)}), frontier)
    fixed = _fixed_point(snn_ckpt, train_x, builder)
    reset = config.model.reset
    ds = snn_ckpt.dataset or {}
    meta = {"producer": f"snntc {__version__}", "network": net.name, "neuron_model": config.neuron,
            "reset_mode": reset, "reset_semantics": RESET_SEMANTICS[reset], "dt": float(dt),
            "time_convention": TIME_CONVENTION, "timesteps": int(config.timesteps), "input_coding": config.coding,
            "input_values": config.input_coding.nir,
            "input_shape": np.array(net.input_shape), "num_classes": int(net.num_classes),
            "readout": "class scores = sum over the time steps of the Output node's input, divided by the number "
                       "of steps; prediction = argmax",
            "spike_condition": "v > v_threshold", "snn_config": json.dumps(config.to_dict()),
            "dataset": {"name": str(ds.get("name") or ""), "mean": np.array(ds.get("mean") or [], dtype=np.float64),
                        "std": np.array(ds.get("std") or [], dtype=np.float64),
                        "normalize": str(ds.get("normalize") or "standard")},
            "fixed_point": fixed}
    try:
        return nir.NIRGraph(nodes=builder.nodes, edges=builder.edges, metadata=meta, type_check=True)
    except (ValueError, AssertionError, NotImplementedError) as exc:
        raise ExportError(f"NIR rejects the graph: {exc}") from None


def export_nir(snn_ckpt: Checkpoint, path: str, train_x: Optional[np.ndarray] = None, dt: float = 1.0):
    """Write an SNN checkpoint as a NIR file (HDF5, atomically); returns the nir.NIRGraph written.
    `train_x` (normalized training images) sets the fixed-point input scale for direct coding."""
    nir = _require_nir()
    if os.path.isdir(path):
        raise ExportError(f"{path} is a directory: give a file name such as model.nir")
    parent = os.path.dirname(os.path.abspath(path))
    probe = parent
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if probe and not os.path.isdir(probe):
        raise ExportError(f"{path}: cannot write there ({probe} is a file, not a directory)")
    graph = build_nir(snn_ckpt, train_x, dt)
    buffer = io.BytesIO()          # serialized in memory: a full disk is then one plain write's one-line error
    try:
        nir.write(buffer, graph)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{path}: NIR could not serialize the graph ({type(exc).__name__}: {exc})") from None
    atomic_write_bytes(path, buffer.getvalue())
    return graph

"""The SNN as a NIR graph (Neuromorphic Intermediate Representation, nir >= 1.0.6: files written by nir 1.0.8
carry node metadata (nir >= 1.0.5) and IF.v_reset (nir >= 1.0.6); Sinabs 3.1.3 pins nir <= 1.0.4, which cannot
read them), for other simulators and chips.

    export_nir(snn_ckpt, "model.nir", train_x, NirOptions(...)) -> nir.NIRGraph   (written atomically, HDF5)

Graph: one node per layer of the network as written, named after the toolchain's layers:

    Input -> Conv2d | Affine / Linear | SumPool2d / AvgPool2d | Flatten | IF / LIF / CubaLIF ... -> Output

Batch norm is folded into the conv / dense layer before it (as for netx), dropout is left out (the
identity at inference), and a Flatten of an already flat tensor is left out. Flatten nodes flatten
all of a sample's axes, counted from the end (start_dim = -3 for (C, H, W): NIR shapes have no batch axis, and
start_dim 0 is read as the batch axis by Norse and as the first sample axis by SpikingJelly and Sinabs). A residual block is two paths from the
same node whose last nodes both have an edge into the node after the block: NIR sums the inputs
arriving at a node, which is the block's addition. The output layer (the last dense layer) has no
neurons: its synaptic output goes to the Output node.

Choices for consumers (NirOptions): `pool` "sum" (default) writes each k x k average pool as a SumPool2d and divides
the next conv / dense layer's weights by k^2 (exact in floating point for k a power of two; Norse and Sinabs read
SumPool2d only) or "avg" an AvgPool2d; `dense` "affine" (default) writes every dense layer as an Affine (a zero bias
where it has none; Sinabs reads Affine only) or "linear" a Linear where it has no bias; `if_node` "lif" writes IF
neurons as LIF nodes of time constant dt * 2**26, whose leak 1 - 2**-26 is 1.0 in float32 (snnTorch runs LIF nodes
but not IF nodes); `quantized` writes the deployed network instead (below).

Time steps (graph metadata "dt", "timesteps", "time_convention"): step t of the toolchain's SNN is one forward-Euler
step of length dt (default 1e-4 s, the value SpikingJelly's import assumes and snnTorch's hard-codes) of NIR's neuron
equations. Within a step every synaptic node maps its input of that same step (no synaptic delay; netx/Lava adds
one step per layer, see toolchain/quantization/fixed_point.py), and every neuron integrates its input by one step of dt
(each neuron model gives its NIR primitive, NeuronModel.nir in toolchain/neurons/; for the built-in ones):

    IF       (neuron "if"):    v += dt r I = I            r = 1/dt
    LIF      (neuron "lif"):   v = leak * v + I           tau = dt / (1 - leak), r = tau / dt, v_leak = 0
    CubaLIF  ("loihi-cuba"):   I = (1 - i_decay/4096) I + a;   v = (1 - v_decay/4096) v + I
                               tau_syn = 4096 dt / i_decay, w_in = tau_syn / dt,
                               tau_mem = 4096 dt / v_decay (dt * 2**26 where v_decay = 0: no leak in float32),
                               r = tau_mem / dt; the current is updated first (Loihi's order)

then s = 1[v > v_threshold] (strict), then the reset. Every constant is finite, and a time constant is rounded up
to the next float32 at or above its value, so that it is never below dt once stored (SpikingJelly refuses
tau_syn < dt). Reset semantics (node metadata "reset", graph metadata "reset_mode"): the toolchain's IF/LIF neurons
reset by SUBTRACTION, v -= v_threshold (Rathi et al. 2020), unless the network was imported with reset to zero
(SnnConfig.reset). NIR's IF/LIF always reset TO v_reset; a recurrent edge can add -v_threshold * s[t - 1] to the
next step's input but cannot undo that reset, so subtraction would need a neuron that does not reset (NIR's I
plus a Threshold node), which none of snnTorch, Norse, SpikingJelly and Sinabs imports. So v_reset is written as
0 and "reset": "subtract" tells a consumer to subtract instead; `reset_to_zero_effect` measures what a consumer
that resets to zero changes. Loihi's CUBA neurons ("loihi-cuba") reset to zero, v = v_reset = 0, as NIR's CubaLIF.

Inputs and outputs: the Input node receives, each step, the coded sample (graph metadata "input": "poisson": signed
spikes sign(x) * 1[u < |x|] of the normalized image, u uniform; "direct": the normalized image itself;
normalization x = (pixel - mean) / std; metadata "dataset" holds the data split: name, seed, fractions, sizes and
its fingerprint, see toolchain/data/datasets.py). The Output node receives the output layer's synaptic output
each step; the class scores are its sum over "timesteps" steps divided by that number, and the prediction their
argmax.

Quantized (`quantized=True`, where the network is deployable): the graph is the deployed chain, as netx holds it
(pooling and batch norm folded into the weights): Conv2d / Affine nodes with Loihi's integer weights (even integers
in [-256, 254]) and biases, CubaLIF nodes with the integer decays and v_threshold = vth + 0.5 (the potentials are
integers, so this crosses where Loihi's v > vth does, for a consumer's > and >= alike). Direct coding: the Input
node receives round(x * input_scale) (metadata "input"). It computes Lava's integer network exactly where that is
float arithmetic on integers: i_decay 4096 and v_decay 0 (the defaults), no 24-bit wrap or clip reached, no bias
with a current decay. Otherwise (metadata "fixed_point") each node of the float graph carries its Loihi layer
(integer weights, scale, vth, decays) for a reader that wants them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import ExportError, LoweringError, QuantizationError
from ..ir import AvgPool2d, Conv2d, Flatten, Linear, Residual, Spike, iter_layers
from ..ir.passes import fold_batch_norms
from ..quantization.fixed_point import DECAY_UNITY
from .checkpoint import Checkpoint
from .files import atomic_write

MIN_NIR_VERSION = "1.0.6"
DEFAULT_DT = 1e-4
NO_LEAK_STEPS = 2 ** 26            # tau = dt * 2**26: the leak 1 - 2**-26 rounds to 1.0 in float32
POOLS, DENSE_NODES, IF_NODES = ("sum", "avg"), ("affine", "linear"), ("if", "lif")

TIME_CONVENTION = ("one toolchain time step = one forward-Euler step of length dt of NIR's neuron equations; "
                   "synaptic nodes map their input of the same step (no delay); a neuron integrates its input, "
                   "spikes where v > v_threshold, then resets; several edges into one node are summed")
RESET_SEMANTICS = {
    "subtract": "reset by subtraction: v -= v_threshold after a spike (v_reset is not used; NIR's IF/LIF "
                "reset to v_reset, which cannot express this)",
    "zero": "reset to zero: v = v_reset = 0 after a spike",
}
# What the four consumers do with IF / LIF nodes (measured, see README "NIR"): all but Sinabs reset to v_reset.
ZERO_RESET_CONSUMERS = "snnTorch, Norse and SpikingJelly"


@dataclass(frozen=True)
class NirOptions:
    """How the graph is written (see the module docstring)."""
    dt: float = DEFAULT_DT
    pool: str = "sum"
    dense: str = "affine"
    if_node: str = "if"
    quantized: bool = False

    def check(self) -> None:
        if not (isinstance(self.dt, (int, float)) and np.isfinite(self.dt) and self.dt > 0):
            raise ExportError(f"dt must be a finite number > 0, got {self.dt}")
        for name, value, valid in (("pool", self.pool, POOLS), ("dense", self.dense, DENSE_NODES),
                                   ("if_node", self.if_node, IF_NODES)):
            if value not in valid:
                raise ExportError(f"{name} must be one of {', '.join(valid)}, got {value!r}")


def _require_nir():
    try:
        import nir
    except ImportError:
        raise ExportError(f"NIR export needs the 'nir' package >= {MIN_NIR_VERSION} "
                          f"(pip install 'snntc[nir]')") from None
    return nir


def _fold(net, params: Dict[str, torch.Tensor]):
    """Batch norm folded into the synaptic layer before it, dropout removed (toolchain.ir.passes)."""
    try:
        return fold_batch_norms(net, params, strip_dropout=True)
    except LoweringError as exc:
        raise ExportError(str(exc)) from None


def _np(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    return np.asarray(t).astype(np.float32)


def f32_at_least(value: float) -> np.float32:
    """The smallest float32 >= value (a time constant stored in float32 never falls below its value)."""
    v = np.float32(value)
    return v if float(v) >= value else np.nextafter(v, np.float32(np.inf))


# -- neuron parameters: NIR's continuous-time constants for the toolchain's discrete neurons ---------------------
def if_params(theta: float, dt: float) -> dict:
    return {"r": np.float32(1.0 / dt), "v_threshold": np.float32(theta), "v_reset": np.float32(0.0)}


def lif_params(theta: float, leak: float, dt: float) -> dict:
    """LIF of leak per step `leak` (1.0: no leak, tau = dt * 2**26)."""
    tau = f32_at_least(dt / (1.0 - leak) if leak < 1.0 else dt * NO_LEAK_STEPS)
    return {"tau": tau, "r": np.float32(float(tau) / dt), "v_leak": np.float32(0.0), "v_threshold": np.float32(theta),
            "v_reset": np.float32(0.0)}


def cuba_params(threshold: float, i_decay: int, v_decay: int, dt: float) -> dict:
    tau_syn = f32_at_least(dt * DECAY_UNITY / i_decay)
    tau_mem = f32_at_least(dt * DECAY_UNITY / v_decay if v_decay else dt * NO_LEAK_STEPS)
    return {"tau_syn": tau_syn, "tau_mem": tau_mem, "r": np.float32(float(tau_mem) / dt),
            "w_in": np.float32(float(tau_syn) / dt), "v_leak": np.float32(0.0), "v_threshold": np.float32(threshold),
            "v_reset": np.float32(0.0)}


def _neuron_node(nir, kind: str, params: dict, shape: tuple, meta: dict):
    full = {k: np.full(shape, v, dtype=np.float32) for k, v in params.items()}
    cls = {"if": nir.IF, "lif": nir.LIF, "cuba": nir.CubaLIF}[kind]
    return cls(**full, metadata=meta)


def _node_params(spec, theta: float, dt: float) -> dict:
    """NIR's continuous-time constants of a neuron model's NirNeuron (toolchain.neurons)."""
    if spec.kind == "cuba":
        return cuba_params(theta, spec.args["i_decay"], spec.args["v_decay"], dt)
    if spec.kind == "lif":
        return lif_params(theta, spec.args["leak"], dt)
    return if_params(theta, dt)


def flatten_node(nir, shape: tuple, meta: dict):
    """Flatten of all of a sample's axes, counted from the end (start_dim = -len(shape)): NIR shapes have no batch
    axis, and consumers disagree whether start_dim 0 is the batch (Norse) or not (SpikingJelly, Sinabs); negative
    dims mean the same to all of them."""
    return nir.Flatten(input_type={"input": np.array(shape)}, start_dim=-len(shape), end_dim=-1, metadata=meta)


class _GraphBuilder:
    """The float graph of the network as written."""

    def __init__(self, nir, config, params, options: NirOptions):
        self.nir, self.config, self.params, self.options = nir, config, params, options
        self.nodes: Dict[str, object] = {}
        self.edges: List[Tuple[str, str]] = []
        self.pending_pool: Optional[AvgPool2d] = None      # a sum pool whose 1 / k^2 goes into the next synapse

    def emit(self, name: str, node, frontier: List[str]) -> List[str]:
        if len(set(frontier)) != len(frontier):
            raise ExportError(f"layer '{name}': receives the same value twice (a residual block with two empty branches)")
        self.nodes[name] = node
        self.edges.extend((src, name) for src in frontier)
        return [name]

    def walk(self, layers, frontier: List[str], shape: tuple):
        for layer in layers:
            if self.pending_pool is not None and not isinstance(layer, (Conv2d, Linear, Flatten)):
                raise ExportError(f"pool '{self.pending_pool.name}': a sum pool needs a conv or dense layer after it "
                                  f"(its 1/k^2 goes into that layer's weights), not '{layer.name}'; use --pool avg")
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
                frontier = self.emit(layer.name, self.pool(layer), frontier)
            elif isinstance(layer, Flatten):
                if len(shape) > 1:
                    frontier = self.emit(layer.name, flatten_node(self.nir, shape, {"toolchain_layer": "Flatten"}),
                                         frontier)
            elif isinstance(layer, Spike):
                frontier = self.emit(layer.name, self.neuron(layer.name, out_shape), frontier)
            else:
                raise ExportError(f"layer '{layer.name}': {type(layer).__name__} has no NIR equivalent here")
            shape = out_shape
        return frontier, shape

    def pool(self, layer: AvgPool2d):
        k = layer.kernel_size
        size = dict(kernel_size=np.array([k, k]), stride=np.array([k, k]), padding=np.array([0, 0]))
        if self.options.pool == "avg":
            return self.nir.AvgPool2d(**size, metadata={"toolchain_layer": "AvgPool2d",
                                                        "note": f"mean over non-overlapping {k}x{k} windows"})
        self.pending_pool = layer
        return self.nir.SumPool2d(**size, metadata={"toolchain_layer": "AvgPool2d",
                                                    "note": f"the toolchain's {k}x{k} average pool as a sum; the "
                                                            f"next synaptic node's weights are divided by {k * k}"})

    def _weight(self, name: str, meta: dict) -> np.ndarray:
        """The layer's float weight, divided by k^2 when a sum pool stands for the average pool before it."""
        w = self.params[f"{name}.weight"].detach().cpu().to(torch.float32)
        if self.pending_pool is not None:
            k2 = self.pending_pool.kernel_size ** 2
            meta["weight_divided_by"] = k2
            meta["divided_for"] = f"sum pool '{self.pending_pool.name}'"
            w, self.pending_pool = w / k2, None
        return _np(w)

    def conv(self, layer: Conv2d, shape):
        b = self.params.get(f"{layer.name}.bias")
        meta = {"toolchain_layer": "Conv2d", "has_bias": b is not None}
        w = self._weight(layer.name, meta)
        return self.nir.Conv2d(input_shape=(int(shape[1]), int(shape[2])), weight=w, stride=layer.stride,
                               padding=layer.padding, dilation=1, groups=1,
                               bias=_np(b) if b is not None else np.zeros(w.shape[0], np.float32), metadata=meta)

    def dense(self, layer: Linear):
        b = self.params.get(f"{layer.name}.bias")
        meta = {"toolchain_layer": "Linear", "has_bias": b is not None}
        w = self._weight(layer.name, meta)
        if b is None and self.options.dense == "linear":
            return self.nir.Linear(weight=w, metadata=meta)
        return self.nir.Affine(weight=w, bias=_np(b) if b is not None else np.zeros(w.shape[0], np.float32),
                               metadata=meta)

    def neuron(self, name: str, shape: tuple):
        c = self.config
        if name not in c.thresholds:
            raise ExportError(f"spiking layer '{name}' has no threshold: convert the ANN first")
        theta = float(c.thresholds[name])
        model = c.model
        spec = model.nir_node(c, self.options.if_node)
        meta = {"equations": spec.equations, "neuron_model": c.neuron, "reset": model.reset,
                "reset_semantics": RESET_SEMANTICS[model.reset], "threshold": theta, "leak": float(c.leak),
                **{k: v for k, v in spec.args.items() if k != "leak"}}
        return _neuron_node(self.nir, spec.kind, _node_params(spec, theta, self.options.dt), shape, meta)


def _unique(base: str, taken: set) -> str:
    name, i = base, 0
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def _quantize(ckpt: Checkpoint, train_x):
    """(FxNetwork, report, lowered chain), or the reason there is none."""
    from ..quantization.quantize import prepare, quantize_snn
    try:
        fx, report = quantize_snn(ckpt, train_x)
        return fx, report, prepare(ckpt)
    except (LoweringError, QuantizationError) as exc:
        return str(exc)


def _fixed_point(quantized, builder: _GraphBuilder) -> dict:
    """Attach the quantized network's integer parameters to the float graph's nodes; returns the graph-level
    summary."""
    if isinstance(quantized, str):
        return {"available": False, "reason": quantized}
    fx, report, chain = quantized
    if any(l.relays_out for l in fx.layers):
        return {"available": False, "reason": "residual blocks are deployed as relay channels inside a chain "
                                              "(toolchain.ir.relays), which this graph keeps as blocks: export netx "
                                              "for the fixed-point network"}
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
    return {"available": True, **_fixed_point_summary(fx, report)}


def _fixed_point_summary(fx, report) -> dict:
    return {"input_coding": fx.input_coding, "input_bits": int(fx.input_bits), "input_scale": float(fx.input_scale),
            "readout": fx.readout, "timesteps": int(fx.timesteps), "layers": ",".join(l.name for l in fx.layers),
            "units": "integer = float x scale per layer; weights are Loihi's 8-bit mantissas x 2; vth and bias in "
                     "synaptic-input units (Lava shifts state by 6 bits)",
            "warnings": "; ".join(report.warnings)}


def _quantized_nodes(nir, fx, options: NirOptions, input_name: str, output_name: str):
    """(nodes, edges, notes) of the deployed chain with Loihi's integer parameters in the standard fields."""
    nodes, edges, notes, prev = {}, [], [], input_name
    for layer in fx.layers:
        meta = {"source": layer.source, "scale": float(layer.scale), "units": "Loihi integers"}
        if layer.flatten_before and len(layer.input_shape) > 1:
            name = f"{layer.name}_flatten"
            nodes[name] = flatten_node(nir, tuple(layer.input_shape), {})
            edges.append((prev, name))
            prev = name
        w = np.asarray(layer.weight).astype(np.float32)
        b = np.asarray(layer.bias).astype(np.float32) if layer.bias is not None else np.zeros(w.shape[0], np.float32)
        if layer.bias is not None and layer.i_decay != DECAY_UNITY:
            notes.append(f"layer '{layer.name}': Loihi adds the bias to v, NIR to the decaying current (i_decay "
                         f"{layer.i_decay}): the graph differs there")
        if layer.kind == "conv":
            nodes[layer.name] = nir.Conv2d(input_shape=tuple(int(s) for s in layer.input_shape[1:]), weight=w,
                                           stride=tuple(layer.stride), padding=tuple(layer.padding), dilation=1,
                                           groups=1, bias=b, metadata=meta)
        else:
            nodes[layer.name] = nir.Affine(weight=w, bias=b, metadata=meta)
        edges.append((prev, layer.name))
        prev = layer.name
        if layer.is_output:
            break
        name = f"{layer.name}_neurons"
        params = cuba_params(layer.vth + 0.5, layer.i_decay, layer.v_decay, options.dt)
        nodes[name] = _neuron_node(nir, "cuba", params, tuple(layer.output_shape),
                                   {"vth": int(layer.vth), "i_decay": int(layer.i_decay), "v_decay": int(layer.v_decay),
                                    "reset": "zero", "threshold_note": "v_threshold = vth + 0.5 (integer potentials)"})
        edges.append((prev, name))
        prev = name
        if layer.i_decay != DECAY_UNITY or layer.v_decay:
            notes.append(f"layer '{layer.name}': Loihi truncates the decayed state to integers, a float consumer "
                         f"does not (decays {layer.i_decay}/{layer.v_decay})")
    edges.append((prev, output_name))
    return nodes, edges, notes


def _plain(value):
    """A metadata value NIR can write to HDF5: dicts recursively, lists as arrays or one string, no None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in value):
            return np.asarray(value, dtype=np.float64 if any(isinstance(v, float) for v in value) else np.int64)
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return int(value)
    return value


def input_metadata(config, dataset: dict, fx=None) -> dict:
    """How a consumer rebuilds the inputs: the coding, the normalization, and for a quantized graph the rounding."""
    meta = {"coding": config.coding, "per_step": config.input_coding.nir, "normalization": "x = (pixel - mean) / std per channel",
            "mean": list(dataset.get("mean") or []), "std": list(dataset.get("std") or []),
            "normalize": dataset.get("normalize") or "standard"}
    if fx is not None and config.input_coding.graded:
        meta.update({"input_scale": float(fx.input_scale), "quantized": "round(x * input_scale) every step"})
    return meta


def _graph_metadata(ckpt: Checkpoint, config, options: NirOptions, fx=None) -> dict:
    from .. import __version__
    reset = config.model.reset if fx is None else "zero"
    return {"producer": f"snntc {__version__}", "network": ckpt.network.name, "neuron_model": config.neuron,
            "weights": "quantized" if fx is not None else "float", "reset_mode": reset,
            "reset_semantics": RESET_SEMANTICS[reset], "dt": float(options.dt), "time_convention": TIME_CONVENTION,
            "timesteps": int(config.timesteps), "input_coding": config.coding,
            "input": _plain(input_metadata(config, ckpt.dataset or {}, fx)),
            "input_shape": np.array(ckpt.network.input_shape), "num_classes": int(ckpt.network.num_classes),
            "readout": "class scores = sum over the time steps of the Output node's input, divided by the number "
                       "of steps; prediction = argmax",
            "spike_condition": "v > v_threshold", "snn_config": json.dumps(config.to_dict()),
            "pool": options.pool, "dataset": _plain(dict(ckpt.dataset or {}))}


def build_nir(snn_ckpt: Checkpoint, train_x: Optional[np.ndarray] = None, options: NirOptions = NirOptions()):
    """The NIR graph of an SNN checkpoint (not written)."""
    nir = _require_nir()
    options.check()
    if snn_ckpt.kind != "snn" or not snn_ckpt.snn:
        raise ExportError("NIR export needs an SNN checkpoint (convert the ANN first: snntc convert)")
    config = snn_ckpt.snn
    net = snn_ckpt.network
    taken = {l.name for l in iter_layers(net.layers)}
    input_name, output_name = _unique("input", taken), _unique("output", taken)
    quantized = _quantize(snn_ckpt, train_x)
    if options.quantized:
        if isinstance(quantized, str):
            raise ExportError(f"--quantized: the network has no fixed-point form ({quantized})")
        fx, report, _ = quantized
        nodes, edges, notes = _quantized_nodes(nir, fx, options, input_name, output_name)
        shape = fx.layers[-1].output_shape
        meta = {**_graph_metadata(snn_ckpt, config, options, fx), "fixed_point": {"available": True,
                **_fixed_point_summary(fx, report)}, "notes": "; ".join(notes)}
        nodes[input_name] = nir.Input(input_type={"input": np.array(fx.input_shape)})
    else:
        params = {k[len("layers."):] if k.startswith("layers.") else k: v.detach().cpu()
                  for k, v in snn_ckpt.state_dict.items()}
        builder = _GraphBuilder(nir, config, params, options)
        builder.nodes[input_name] = nir.Input(input_type={"input": np.array(net.input_shape)})
        folded, builder.params = _fold(net, params)
        frontier, shape = builder.walk(folded.layers, [input_name], tuple(net.input_shape))
        builder.emit(output_name, None, frontier)
        nodes, edges = builder.nodes, builder.edges
        meta = {**_graph_metadata(snn_ckpt, config, options), "fixed_point": _fixed_point(quantized, builder)}
    nodes[output_name] = nir.Output(output_type={"output": np.array(shape)})
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=True)
    except (ValueError, AssertionError, NotImplementedError, TypeError) as exc:
        raise ExportError(f"NIR rejects the graph: {exc}") from None


@torch.no_grad()
def reset_to_zero_effect(snn_ckpt: Checkpoint, x: np.ndarray, y: Optional[np.ndarray] = None,
                         seed: int = 0) -> Optional[dict]:
    """What running this IF/LIF network's neurons with reset to zero (as NIR's IF/LIF and most consumers do)
    changes: the share of the samples x whose prediction changes, and the accuracies on y. None for networks that
    already reset to zero."""
    from ..training.evaluate import load_snn
    if snn_ckpt.snn.model.reset == "zero" or not len(x):
        return None
    preds = {}
    for reset in ("subtract", "zero"):
        model = load_snn(snn_ckpt, reset=reset)
        preds[reset] = torch.cat([model(torch.as_tensor(x[i:i + 256])).logits.argmax(1)
                                  for i in range(0, len(x), 256)]).numpy()
    out = {"samples": int(len(x)), "changed": int(np.sum(preds["subtract"] != preds["zero"]))}
    if y is not None:
        out.update({f"accuracy_{k}": float(np.mean(v == y)) for k, v in preds.items()})
    return out


def reset_warning(neuron: str, effect: dict) -> str:
    text = (f"{neuron.upper()} neurons reset by subtraction here; NIR's IF/LIF reset to v_reset = 0, and so do "
            f"{ZERO_RESET_CONSUMERS} (Sinabs subtracts but fires several spikes per step): reset to zero changes "
            f"{effect['changed']} of {effect['samples']} test predictions")
    if "accuracy_zero" in effect:
        text += f" (accuracy {effect['accuracy_subtract']:.2%} -> {effect['accuracy_zero']:.2%})"
    return text


def export_nir(snn_ckpt: Checkpoint, path: str, train_x: Optional[np.ndarray] = None,
               options: NirOptions = NirOptions(), reset_effect: Optional[dict] = None):
    """Write an SNN checkpoint as a NIR file (HDF5, atomically); returns the nir.NIRGraph written.
    `train_x` (normalized training images) sets the fixed-point input scale for direct coding; `reset_effect`
    (from `reset_to_zero_effect`) is recorded in the metadata."""
    nir = _require_nir()
    if os.path.isdir(path):
        raise ExportError(f"{path} is a directory: give a file name such as model.nir")
    parent = os.path.dirname(os.path.abspath(path))
    probe = parent
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if probe and not os.path.isdir(probe):
        raise ExportError(f"{path}: cannot write there ({probe} is a file, not a directory)")
    graph = build_nir(snn_ckpt, train_x, options)
    if reset_effect:
        graph.metadata["reset_to_zero_effect"] = _plain(reset_effect)
    try:
        atomic_write(path, lambda tmp: nir.write(tmp, graph))
    except OSError as exc:
        raise ExportError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{path}: NIR could not serialize the graph ({type(exc).__name__}: {exc})") from None
    return graph

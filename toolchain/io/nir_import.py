"""A spiking network from a NIR graph -> an SNN checkpoint (the toolchain's IR + state dict + SnnConfig), so that a
network trained in snnTorch, Norse or SpikingJelly (or exported by snntc) is fine-tuned, quantized, exported to
netx and simulated like one converted here.

    import_nir("model.nir", dt=None, timesteps=None, coding=None) -> Checkpoint(kind="snn")

The graph must be a chain Input -> ... -> Output (no branches, no recurrent edges). Nodes, and what they become:

- Conv2d -> Conv2d (square kernel, equal strides and paddings, dilation 1, groups 1); Affine / Linear -> Linear
  (a bias that is all zeros is dropped);
- AvgPool2d -> AvgPool2d (stride == kernel, no padding); SumPool2d -> AvgPool2d with the next conv / dense layer's
  weights times k^2 (exact for k a power of two);
- Flatten (all of a sample's axes) -> Flatten; an Input of C*H*W values followed by a dense layer takes the
  dataset's (C, H, W) images flattened;
- IF / LIF / CubaLIF -> Spike, with the neuron parameters below. The toolchain's neurons have one threshold per
  layer and one model, leak and decays per network, so v_threshold must be uniform within a node and the time
  constants across nodes; v_leak and v_reset must be 0 (reset to zero), except in snntc's own files, whose
  metadata says "reset": "subtract".

Neurons follow NIR's equations integrated by forward Euler with the time step dt (graph metadata "dt" where the
file has it, else the `dt` argument, else 1e-4 s, SpikingJelly's default; Norse's is 1e-3 s):

    IF:      v += dt r I                                      -> "if",   input gain dt r
    LIF:     v += dt / tau (v_leak - v + r I)                 -> "lif",  leak 1 - dt / tau, input gain dt r / tau
    CubaLIF: I += dt / tau_syn (-I + w_in a); v += dt / tau_mem (v_leak - v + r I)
                                                              -> "loihi-cuba", i_decay = 4096 dt / tau_syn,
                                                                 v_decay = 4096 dt / tau_mem, gain the product

An input gain is folded into the weights and bias of the synaptic layer before the neuron (through pools and
flattens, which are linear), so every imported neuron integrates its current unscaled, as the toolchain's do.
IF/LIF neurons that reset to zero run with SnnConfig.reset = "zero"; CubaLIF neurons become Loihi's CUBA neuron,
which the toolchain runs quantized (as deployed). The output layer must be the last dense layer, feeding Output
directly: its summed output over the time steps is the readout (a neuron layer after it is refused, naming it).

Anything else raises ImportModelError in one line naming the nodes. Layer names are the graph's node names, made
into identifiers; the node each layer came from is in checkpoint.training["import"]["layer_sources"].
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .checkpoint import Checkpoint
from ..errors import ConfigError, ImportModelError, ModelError
from ..quantization.fixed_point import DECAY_UNITY
from ..ir import AvgPool2d, Conv2d, Flatten, Linear, Network, Spike

DEFAULT_DT = 1e-4
NODE_KINDS = {"Input", "Output", "Conv2d", "Affine", "Linear", "AvgPool2d", "SumPool2d", "Flatten", "IF", "LIF",
              "CubaLIF"}
SUPPORTED = "Input, Output, Conv2d, Affine, Linear, AvgPool2d, SumPool2d, Flatten, IF, LIF, CubaLIF"
_SYNAPSES, _POOLS, _NEURONS = ("Conv2d", "Affine", "Linear"), ("AvgPool2d", "SumPool2d"), ("IF", "LIF", "CubaLIF")


def _require_nir():
    try:
        import nir
    except ImportError:
        raise ImportModelError("NIR import needs the 'nir' package >= 1.0.6 (pip install 'snntc[nir]')") from None
    return nir


def read_graph(path: str) -> Tuple[object, Optional[str]]:
    """(graph, note). A graph whose node types NIR's own check rejects (Norse 1.1 writes its Input with a batch
    axis) is read without that check, with a note: the import checks every shape itself."""
    nir = _require_nir()
    if not os.path.isfile(path):
        raise ImportModelError(f"{path}: no such file")
    try:
        return nir.read(path), None
    except ValueError as exc:
        if "type" not in str(exc).lower():
            raise ImportModelError(f"{path}: not a readable NIR graph (ValueError: {str(exc)[:100]})") from None
        first = str(exc).splitlines()[0][:120]
    except Exception as exc:        # h5py and nir raise many types for files that are not NIR graphs
        raise ImportModelError(f"{path}: not a readable NIR graph ({type(exc).__name__}: {str(exc)[:100]})") from None
    try:
        return nir.read(path, type_check=False), f"NIR's type check fails ({first}); read without it"
    except Exception as exc:
        raise ImportModelError(f"{path}: not a readable NIR graph ({type(exc).__name__}: {str(exc)[:100]})") from None


def is_nir_file(path: str) -> bool:
    """An HDF5 file with a NIR 'node' group (what nir.write produces)."""
    try:
        import h5py
        with h5py.File(path, "r") as f:
            return "node" in f and "version" in f
    except (OSError, ImportError):
        return False


# -- the graph as a chain ------------------------------------------------------------------------------------------
def chain_of(graph, path: str) -> List[Tuple[str, object]]:
    """The nodes from Input to Output in order; one line naming what is not a supported chain."""
    kinds = {name: type(node).__name__ for name, node in graph.nodes.items()}
    bad = sorted(f"'{n}' ({k})" for n, k in kinds.items() if k not in NODE_KINDS)
    if bad:
        raise ImportModelError(f"{path}: unsupported NIR nodes {', '.join(bad)}; supported: {SUPPORTED}")
    succ: Dict[str, List[str]] = {n: [] for n in graph.nodes}
    pred: Dict[str, List[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        succ[src].append(dst)
        pred[dst].append(src)
    branching = sorted(n for n in graph.nodes if len(succ[n]) > 1 or len(pred[n]) > 1)
    if branching:
        raise ImportModelError(f"{path}: nodes {', '.join(branching)} branch or join (residual or recurrent edges): "
                               f"only chains Input -> ... -> Output are imported")
    inputs = [n for n, k in kinds.items() if k == "Input"]
    if len(inputs) != 1:
        raise ImportModelError(f"{path}: needs exactly one Input node, has {len(inputs)}")
    order, name = [], inputs[0]
    while True:
        order.append((name, graph.nodes[name]))
        if kinds[name] == "Output" or not succ[name] or len(order) > len(graph.nodes):
            break
        name = succ[name][0]
    if kinds[order[-1][0]] != "Output" or len(order) != len(graph.nodes):
        left = sorted(set(graph.nodes) - {n for n, _ in order})
        raise ImportModelError(f"{path}: the chain from Input does not reach Output through every node "
                               f"(not on it: {', '.join(left) or 'none'}; ends at '{order[-1][0]}')")
    return order


# -- neuron parameters --------------------------------------------------------------------------------------------
@dataclass
class NeuronSpec:
    """One NIR neuron node in the toolchain's terms."""
    kind: str                      # "if" | "lif" | "loihi-cuba"
    threshold: float
    gain: float                    # input scale folded into the synapse before it
    leak: float = 1.0
    i_decay: int = DECAY_UNITY
    v_decay: int = 0
    reset: str = "zero"


def _uniform(node_name: str, node, field_name: str) -> float:
    values = np.unique(np.asarray(getattr(node, field_name), dtype=np.float64))
    if values.size != 1:
        raise ImportModelError(f"node '{node_name}' ({type(node).__name__}): {field_name} differs between neurons "
                               f"({values.min():g} .. {values.max():g}); the toolchain has one per layer")
    if not np.isfinite(values[0]):
        raise ImportModelError(f"node '{node_name}' ({type(node).__name__}): {field_name} is {values[0]}, "
                               f"not a finite number")
    return float(values[0])


def _leak(node_name: str, node, tau: float, dt: float, what: str) -> float:
    leak = 1.0 - dt / tau
    if np.float32(leak) == 1.0:          # no leak that float32 arithmetic sees (snntc writes IF as LIF this way)
        leak = 1.0
    if not 0.0 < leak <= 1.0:
        raise ImportModelError(f"node '{node_name}' ({type(node).__name__}): {what} = {tau:g} s gives a decay per step "
                               f"1 - dt / {what} = {leak:g}, outside (0, 1] at dt = {dt:g} s: import with the dt it "
                               f"was trained with (--dt)")
    return leak


def _recorded(node, key: str, value: float) -> float:
    """snntc's own float64 value of a parameter from the node metadata, where it rounds to the float32 one."""
    exact = (getattr(node, "metadata", None) or {}).get(key)
    if exact is not None and np.float32(exact) == np.float32(value):
        return float(exact)
    return value


def _threshold(node_name: str, node) -> float:
    """v_threshold, or snntc's own float64 threshold from the node metadata where it rounds to it."""
    theta = _recorded(node, "threshold", _uniform(node_name, node, "v_threshold"))
    if not theta > 0:
        raise ImportModelError(f"node '{node_name}' ({type(node).__name__}): v_threshold {theta:g} must be > 0")
    return theta


def _reset(node_name: str, node) -> str:
    """'subtract' where snntc's metadata says so (v_reset is then unused), else reset to v_reset, which must be 0."""
    if (getattr(node, "metadata", None) or {}).get("reset") == "subtract":
        return "subtract"
    for field_name in ("v_reset", "v_leak"):
        if hasattr(node, field_name) and _uniform(node_name, node, field_name) != 0.0:
            raise ImportModelError(f"node '{node_name}' ({type(node).__name__}): {field_name} must be 0 (the "
                                   f"toolchain's neurons reset to 0 and leak towards 0), got "
                                   f"{_uniform(node_name, node, field_name):g}")
    return "zero"


def neuron_spec(node_name: str, node, dt: float) -> NeuronSpec:
    kind = type(node).__name__
    theta, reset = _threshold(node_name, node), _reset(node_name, node)
    if kind == "IF":
        return NeuronSpec("if", theta, dt * _uniform(node_name, node, "r"), reset=reset)
    if kind == "LIF":
        tau, r = _uniform(node_name, node, "tau"), _uniform(node_name, node, "r")
        leak = _recorded(node, "leak", _leak(node_name, node, tau, dt, "tau"))
        return NeuronSpec("lif" if leak < 1.0 else "if", theta, dt * r / tau, leak=leak, reset=reset)
    tau_syn, tau_mem = _uniform(node_name, node, "tau_syn"), _uniform(node_name, node, "tau_mem")
    i_keep, v_keep = _leak(node_name, node, tau_syn, dt, "tau_syn"), _leak(node_name, node, tau_mem, dt, "tau_mem")
    gain = (dt / tau_syn) * _uniform(node_name, node, "w_in") * (dt / tau_mem) * _uniform(node_name, node, "r")
    i_decay = max(1, int(round(DECAY_UNITY * (1.0 - i_keep))))
    v_decay = min(DECAY_UNITY - 1, int(round(DECAY_UNITY * (1.0 - v_keep))))
    return NeuronSpec("loihi-cuba", theta, gain, i_decay=i_decay, v_decay=v_decay, reset="zero")


def _network_neuron(specs: Dict[str, NeuronSpec], path: str) -> NeuronSpec:
    """The one neuron model, leak, decays and reset of the network; one line naming the nodes that differ."""
    if not specs:
        raise ImportModelError(f"{path}: has no neuron nodes (IF, LIF, CubaLIF): not a spiking network")
    keys = {name: (s.kind, round(s.leak, 9), s.i_decay, s.v_decay, s.reset) for name, s in specs.items()}
    distinct = sorted(set(keys.values()), key=str)
    if len(distinct) > 1:
        parts = [f"{', '.join(n for n, k in keys.items() if k == d)}: {d[0]}, leak {d[1]:g}, decays {d[2]}/{d[3]}, "
                 f"reset {d[4]}" for d in distinct]
        raise ImportModelError(f"{path}: the neurons differ ({'; '.join(parts)}); the toolchain runs one neuron "
                               f"model, leak, decay and reset per network")
    return next(iter(specs.values()))


# -- layers -------------------------------------------------------------------------------------------------------
def _pair(value, what: str, node_name: str) -> int:
    arr = np.atleast_1d(np.asarray(value)).astype(np.int64)
    if arr.size == 0 or np.any(arr != arr.flat[0]):
        raise ImportModelError(f"node '{node_name}': {what} {arr.tolist()} differs between height and width; "
                               f"the toolchain takes square ones")
    return int(arr.flat[0])


def _identifier(name: str, taken: set) -> str:
    clean = re.sub(r"\W", "_", str(name)) or "node"
    if clean[0].isdigit():
        clean = f"n{clean}"
    base, i = clean, 0
    while clean in taken:
        clean, i = f"{base}_{i}", i + 1
    taken.add(clean)
    return clean


@dataclass
class _Builder:
    path: str
    dt: float
    layers: list = field(default_factory=list)
    params: Dict[str, torch.Tensor] = field(default_factory=dict)
    sources: Dict[str, str] = field(default_factory=dict)
    specs: Dict[str, NeuronSpec] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    taken: set = field(default_factory=set)
    last_synapse: Optional[str] = None
    pool_gain: float = 1.0
    shape: Tuple[int, ...] = ()

    def add(self, layer, node_name: str):
        self.shape = layer.out_shape(self.shape)
        self.layers.append(layer)
        self.sources[layer.name] = node_name

    def synapse(self, node_name: str, node):
        kind = type(node).__name__
        w = torch.as_tensor(np.asarray(node.weight, dtype=np.float32))
        b = getattr(node, "bias", None)
        b = None if b is None else torch.as_tensor(np.asarray(b, dtype=np.float32)).reshape(-1)
        if b is not None and not bool(torch.any(b != 0)):
            b = None
        if self.pool_gain != 1.0:
            w = w * self.pool_gain
            self.pool_gain = 1.0
        name = _identifier(node_name, self.taken)
        if kind == "Conv2d":
            if w.dim() != 4:
                raise ImportModelError(f"node '{node_name}' (Conv2d): weight of shape {tuple(w.shape)}, not 2-d")
            if w.shape[2] != w.shape[3]:
                raise ImportModelError(f"node '{node_name}' (Conv2d): kernel {tuple(w.shape[2:])} is not square")
            if isinstance(node.padding, str):
                raise ImportModelError(f"node '{node_name}' (Conv2d): padding '{node.padding}' (give it in numbers)")
            if _pair(node.dilation, "dilation", node_name) != 1 or int(np.asarray(node.groups).flat[0]) != 1:
                raise ImportModelError(f"node '{node_name}' (Conv2d): dilation and groups must be 1")
            layer = Conv2d(name, int(w.shape[1]), int(w.shape[0]), int(w.shape[2]),
                           _pair(node.stride, "stride", node_name), _pair(node.padding, "padding", node_name),
                           bias=b is not None)
        else:
            if len(self.shape) > 1:         # a dense layer on an image: NIR consumers flatten implicitly, we say so
                self.add(Flatten(_identifier(f"{name}_flatten", self.taken)), node_name)
            layer = Linear(name, int(w.shape[1]), int(w.shape[0]), bias=b is not None)
        self.add(layer, node_name)
        self.params[f"{name}.weight"] = w
        if b is not None:
            self.params[f"{name}.bias"] = b
        self.last_synapse = name

    def pool(self, node_name: str, node):
        k = _pair(node.kernel_size, "kernel_size", node_name)
        if _pair(node.stride, "stride", node_name) != k or _pair(getattr(node, "padding", 0), "padding", node_name):
            raise ImportModelError(f"node '{node_name}' ({type(node).__name__}): only non-overlapping pools "
                                   f"(stride == kernel, no padding) are imported")
        if type(node).__name__ == "SumPool2d":
            self.pool_gain *= k * k
        self.add(AvgPool2d(_identifier(node_name, self.taken), k), node_name)

    def neuron(self, node_name: str, node):
        if self.last_synapse is None:
            raise ImportModelError(f"node '{node_name}' ({type(node).__name__}): a neuron needs a conv or dense "
                                   f"layer before it")
        spec = neuron_spec(node_name, node, self.dt)
        spec.gain *= self.pool_gain          # a sum pool right before the neuron: its k^2 goes to the synapse too
        self.pool_gain = 1.0
        if not math.isclose(spec.gain, 1.0, rel_tol=1e-6):
            for key in (f"{self.last_synapse}.weight", f"{self.last_synapse}.bias"):
                if key in self.params:
                    self.params[key] = self.params[key] * spec.gain
            self.notes.append(f"node '{node_name}': input gain {spec.gain:.6g} folded into '{self.last_synapse}'")
        spec.gain = 1.0
        name = _identifier(node_name, self.taken)
        self.specs[name] = spec
        self.add(Spike(name), node_name)
        self.last_synapse = None


def _input_shape(node, dataset_shape: Optional[tuple]) -> Tuple[tuple, Optional[str]]:
    """The Input node's shape without a batch axis of 1 (SpikingJelly's and Norse's tracing keep it); a flat input
    of as many values as the dataset's images have is taken as those images, flattened (with a note)."""
    shape = tuple(int(s) for s in np.asarray(node.input_type["input"]).reshape(-1))
    if len(shape) in (2, 4) and shape[0] == 1:
        shape = shape[1:]
    if dataset_shape and len(shape) == 1 and len(dataset_shape) > 1 and shape[0] == int(np.prod(dataset_shape)):
        return tuple(dataset_shape), f"input of {shape[0]} values taken as the dataset's {tuple(dataset_shape)} " \
                                     f"images, flattened"
    return shape, None


def _metadata(graph) -> dict:
    meta = getattr(graph, "metadata", None)
    return meta if isinstance(meta, dict) else {}


def import_nir(path: str, dt: Optional[float] = None, timesteps: Optional[int] = None, coding: Optional[str] = None,
               dataset_shape: Optional[tuple] = None) -> Checkpoint:
    """Read a NIR file into an SNN checkpoint (no dataset recorded yet: the caller adds it)."""
    graph, read_note = read_graph(path)
    meta = _metadata(graph)
    file_dt = meta.get("dt")
    dt = _positive(dt if dt is not None else file_dt if file_dt is not None else DEFAULT_DT, "dt", path)
    order = chain_of(graph, path)
    b = _Builder(path, dt)
    b.shape, note = _input_shape(order[0][1], dataset_shape)
    input_shape = b.shape
    b.notes += [n for n in (read_note, note) if n]
    _build_layers(b, order, path)
    neuron = _network_neuron(b.specs, path)
    net = _network(b, input_shape, path, meta)
    config = _config(b, neuron, meta, timesteps, coding)
    state = _state_dict(net, config, b.params, path)
    info = {"source": str(path), "format": "nir", "producer": str(meta.get("producer") or "unknown"), "dt": dt,
            "layer_sources": b.sources, "notes": b.notes, "warnings": []}
    ckpt = Checkpoint("snn", net, state, {}, snn=config, training={"import": info}, metrics={"test_accuracy": None})
    ckpt.validate(path)             # finite weights (a NaN in a file would otherwise evaluate to chance)
    return ckpt


def _positive(value, what: str, path: str) -> float:
    """A finite number > 0 (dt), from the arguments or the file's metadata; ImportModelError otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise ImportModelError(f"{path}: {what} must be a finite number > 0 (seconds per time step), got {value!r}")
    return number


def _build_layers(b: _Builder, order, path: str) -> None:
    """The toolchain's layers of the chain's nodes between Input and Output."""
    for node_name, node in order[1:-1]:
        kind = type(node).__name__
        try:
            if kind in _SYNAPSES:
                b.synapse(node_name, node)
            elif kind in _POOLS:
                b.pool(node_name, node)
            elif kind == "Flatten":
                if len(b.shape) > 1:
                    b.add(Flatten(_identifier(node_name, b.taken)), node_name)
            else:
                b.neuron(node_name, node)
        except ModelError as exc:
            raise ImportModelError(f"{path}: node '{node_name}' ({kind}): {exc}") from None
    if not b.layers or not isinstance(b.layers[-1], Linear):
        last = order[-2]
        raise ImportModelError(f"{path}: node '{last[0]}' ({type(last[1]).__name__}) feeds Output; the toolchain reads "
                               f"the last dense layer's output summed over the time steps, so that layer must feed "
                               f"Output directly")


def _state_dict(net: Network, config, params: Dict[str, torch.Tensor], path: str) -> dict:
    """The SNN's state dict (its own key names) holding the imported weights."""
    from ..snn import SnnModel
    state = SnnModel(net, config).state_dict()
    for key, value in params.items():
        target = state[f"layers.{key}"]
        if tuple(target.shape) != tuple(value.shape):
            raise ImportModelError(f"{path}: '{key}' has shape {tuple(value.shape)}, the layer needs "
                                   f"{tuple(target.shape)}")
        state[f"layers.{key}"] = value.to(target.dtype)
    return state


def _network(b: _Builder, input_shape: tuple, path: str, meta: dict) -> Network:
    try:
        return Network(tuple(b.layers), input_shape, int(b.layers[-1].out_features),
                       name=str(meta.get("network") or "imported"))
    except ModelError as exc:
        raise ImportModelError(f"{path}: {exc}") from None


def _config(b: _Builder, neuron: NeuronSpec, meta: dict, timesteps: Optional[int], coding: Optional[str]):
    from ..snn import SnnConfig
    recorded = {}
    if meta.get("snn_config"):
        try:
            recorded = json.loads(meta["snn_config"])
        except (TypeError, ValueError):
            recorded = {}
    if not isinstance(recorded, dict):
        recorded = {}
    T = timesteps or meta.get("timesteps") or recorded.get("timesteps") or 0
    T = int(T) if isinstance(T, np.integer) or (isinstance(T, float) and T.is_integer()) else T   # HDF5's numbers
    if not T:
        raise ImportModelError(f"{b.path}: the file does not say how many time steps the network runs: pass "
                               f"--timesteps")
    coding = coding or meta.get("input_coding") or recorded.get("coding") or "direct"
    base = {k: v for k, v in recorded.items() if k in ("surrogate", "input_scale")}
    if recorded.get("version", 1) == 1 and base.get("input_scale") == 1.0:     # written before 'unset' was None
        base["input_scale"] = None
    try:                            # the file's metadata checked like any configuration (T, coding, scale ...)
        return SnnConfig(thresholds={name: s.threshold for name, s in b.specs.items()}, neuron=neuron.kind,
                         leak=neuron.leak, coding=coding, timesteps=T, i_decay=neuron.i_decay, v_decay=neuron.v_decay,
                         reset=neuron.reset if neuron.kind != "loihi-cuba" else "subtract", **base)
    except (ConfigError, TypeError) as exc:
        raise ImportModelError(f"{b.path}: its metadata: {exc}") from None

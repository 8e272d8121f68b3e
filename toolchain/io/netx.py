"""Lava-DL netx HDF5 files: write an FxNetwork so that the stock loader runs it, read any netx file.

File layout (what ``lava.lib.dl.slayer``'s own ``export_hdf5`` writes, and what
``lava.lib.dl.netx.hdf5.Network`` reads)::

    /layer/0      input:   type (1,) 'S10' b'input', shape (C, H, W) or (F,)   [no neuron]
    /layer/i      flatten: type b'flatten', shape [C*H*W, 1, 1]               [optional]
    /layer/i      dense:   type b'dense', shape (out,), inFeatures, outFeatures,
                           weight (out, in) float32, [bias (out,)],
                           neuron/{type 'CUBA', iDecay, vDecay, vThMant, refDelay 1, gradedSpike False}
    /layer/i      conv:    type b'conv', shape (C, H, W), inChannels, outChannels,
                           kernelSize (kh, kw), stride (sy, sx), padding (py, px),
                           dilation (dy, dx), groups, weight (out, in/groups, kh, kw) float32,
                           [bias (out,)], neuron/{...}

Shapes are stored in (C, H, W) order and conv parameters in (y, x) order; netx reverses both.
Weights and biases are stored as float32, like slayer (exact for every integer below 2**24);
netx converts them with ``astype(int)``, and so does ``read_netx``.

The toolchain's own metadata lives in attributes of the root group (the stock loader ignores
them): ``snntc_version``, ``input_coding``, ``input_bits``, ``input_scale``, ``timesteps``,
``readout``, ``num_classes``, ``mean``, ``std`` (float arrays), ``layers`` (JSON list of
{name, scale, source, is_output, relays_in, relays_out: the trailing channels that relay a residual
block's shortcut, toolchain.ir.relays}), ``metadata`` (JSON of FxNetwork.metadata) and
``extra_metadata`` (JSON of the ``extra_metadata`` argument).
"""
from __future__ import annotations

import json
import os

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from .. import __version__
from ..errors import ExportError, NetxError, ToolchainError
from .files import atomic_write
from ..ir import conv_out_size
from ..quantization.fixed_point import FxLayer, FxNetwork

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_TIMESTEPS = 16           # used by read_netx when neither the caller nor the file says
SUPPORTED_NEURONS = ("CUBA", "LOIHI")   # netx maps both to Lava's LIF
# netx's default neuron for a dense layer without a 'neuron' group (non-leaky integrator that
# practically never spikes): {'iDecay': 0, 'vDecay': 4096, 'vThMant': 1 << 18 - 1 (= 1 << 17)}
NETX_DEFAULT_NEURON = {"iDecay": 0, "vDecay": 4096, "vThMant": 1 << 17}


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------

def _type_dataset(group, name: str) -> None:
    group.create_dataset("type", (1,), "S10", [name.encode("ascii", "ignore")])


def _json(value: Any, what: str) -> str:
    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, (Path, tuple, set)):
            return str(o) if isinstance(o, Path) else list(o)
        raise TypeError(f"{type(o).__name__} is not JSON serializable")
    try:
        return json.dumps(value, default=default, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ExportError(f"cannot store {what} in the netx file: {e}") from None


def _conv_out_hw(layer: FxLayer, h: int, w: int) -> Tuple[int, int]:
    kh, kw = np.asarray(layer.weight).shape[2:4]
    (sy, sx), (py, px), (dy, dx) = layer.stride, layer.padding, layer.dilation
    return int(conv_out_size(h, kh, sy, py, dy)), int(conv_out_size(w, kw, sx, px, dx))


def _check_layer(i: int, layer: FxLayer, in_shape: Tuple[int, ...]) -> None:
    """Structural checks, so that a written file is one the stock loader can build."""
    w = np.asarray(layer.weight)
    where = f"layer {i} ('{layer.name}')"
    if tuple(layer.input_shape) != tuple(in_shape):
        raise ExportError(f"{where}: input shape {tuple(layer.input_shape)} does not match the "
                          f"previous output shape {tuple(in_shape)}")
    if w.size and not np.all(np.isfinite(w)):
        raise ExportError(f"{where}: weights are not finite")
    if w.size and np.max(np.abs(w)) >= 2 ** 24:
        raise ExportError(f"{where}: weights exceed 2**24 and cannot be stored exactly")
    if layer.kind == "dense":
        if len(in_shape) != 1 and not layer.flatten_before and i > 0:
            raise ExportError(f"{where}: a dense layer after a {len(in_shape)}-D output needs "
                              f"flatten_before=True")
        if len(layer.output_shape) != 1:
            raise ExportError(f"{where}: dense output shape must be 1-D, not {tuple(layer.output_shape)}")
        expected = (int(layer.output_shape[0]), int(np.prod(in_shape)))
        if w.shape != expected:
            raise ExportError(f"{where}: dense weight shape {w.shape} does not match {expected}")
    elif layer.kind == "conv":
        if len(in_shape) != 3 or len(layer.output_shape) != 3:
            raise ExportError(f"{where}: conv needs (C, H, W) shapes, got {tuple(in_shape)} -> "
                              f"{tuple(layer.output_shape)}")
        if layer.flatten_before:
            raise ExportError(f"{where}: flatten_before is only valid for dense layers")
        if w.ndim != 4:
            raise ExportError(f"{where}: conv weight must be 4-D (out, in/groups, kh, kw), got {w.shape}")
        c, h, wd = in_shape
        g = int(layer.groups)
        if g < 1 or c % g or w.shape[0] % g or w.shape[1] != c // g:
            raise ExportError(f"{where}: conv weight {w.shape} does not fit {c} input channels "
                              f"in {g} groups")
        out = (int(w.shape[0]),) + _conv_out_hw(layer, h, wd)
        if out != tuple(layer.output_shape):
            raise ExportError(f"{where}: conv output shape {tuple(layer.output_shape)} does not "
                              f"match the computed {out}")
    else:
        raise ExportError(f"{where}: unknown layer kind {layer.kind!r} (expected 'dense' or 'conv')")
    if layer.bias is not None:
        b = np.asarray(layer.bias)
        n_out = int(layer.output_shape[0])
        if b.size not in (n_out, int(np.prod(layer.output_shape))):
            raise ExportError(f"{where}: bias of size {b.size} fits neither {n_out} channels nor "
                              f"{int(np.prod(layer.output_shape))} neurons")


def _write_neuron(group, layer: FxLayer) -> None:
    group.create_dataset("neuron/type", data="CUBA")
    group.create_dataset("neuron/iDecay", data=int(layer.i_decay))
    group.create_dataset("neuron/vDecay", data=int(layer.v_decay))
    group.create_dataset("neuron/vThMant", data=int(layer.vth))
    group.create_dataset("neuron/refDelay", data=1)
    group.create_dataset("neuron/gradedSpike", data=False)


def _bias_dataset(layer: FxLayer) -> np.ndarray:
    b = np.asarray(layer.bias)
    if layer.kind == "conv" and b.size != int(layer.output_shape[0]):
        # neuron-wise conv bias: netx wants it in its own (W, H, C) order
        b = b.reshape(layer.output_shape).transpose(2, 1, 0)
    else:
        b = b.reshape(-1)
    return b.astype(np.float32)


def _write_layers(f, net: FxNetwork) -> None:
    group = f.create_group("layer")
    idx = 0

    def new():
        nonlocal idx
        g = group.create_group(str(idx))
        idx += 1
        return g

    g = new()
    _type_dataset(g, "input")
    g.create_dataset("shape", data=np.array(net.input_shape, dtype=np.int64))

    in_shape = tuple(int(s) for s in net.input_shape)
    for i, layer in enumerate(net.layers):
        _check_layer(i, layer, in_shape)
        w = np.asarray(layer.weight)
        if layer.flatten_before:
            g = new()
            _type_dataset(g, "flatten")
            g.create_dataset("shape", data=np.array([int(np.prod(in_shape)), 1, 1], dtype=np.int64))
        g = new()
        if layer.kind == "dense":
            _type_dataset(g, "dense")
            g.create_dataset("shape", data=np.array(layer.output_shape, dtype=np.int64))
            g.create_dataset("inFeatures", data=int(w.shape[1]))
            g.create_dataset("outFeatures", data=int(w.shape[0]))
            g.create_dataset("weight", data=w.astype(np.float32))
        else:
            _type_dataset(g, "conv")
            g.create_dataset("shape", data=np.array(layer.output_shape, dtype=np.int64))
            g.create_dataset("inChannels", data=int(in_shape[0]))
            g.create_dataset("outChannels", data=int(w.shape[0]))
            g.create_dataset("kernelSize", data=np.array(w.shape[2:4], dtype=np.int64))
            g.create_dataset("stride", data=np.array(layer.stride, dtype=np.int64))
            g.create_dataset("padding", data=np.array(layer.padding, dtype=np.int64))
            g.create_dataset("dilation", data=np.array(layer.dilation, dtype=np.int64))
            g.create_dataset("groups", data=int(layer.groups))
            g.create_dataset("weight", data=w.astype(np.float32))
        if layer.bias is not None:
            g.create_dataset("bias", data=_bias_dataset(layer))
        _write_neuron(g, layer)
        in_shape = tuple(int(s) for s in layer.output_shape)


def _write_attrs(f, net: FxNetwork, extra_metadata: Optional[dict]) -> None:
    a = f.attrs
    a["snntc_version"] = __version__
    a["input_coding"] = str(net.input_coding)
    a["input_bits"] = int(net.input_bits)
    a["input_scale"] = float(net.input_scale)
    a["timesteps"] = int(net.timesteps)
    a["readout"] = str(net.readout)
    a["num_classes"] = int(net.num_classes)
    a["mean"] = np.asarray(net.mean, dtype=np.float64).reshape(-1)
    a["std"] = np.asarray(net.std, dtype=np.float64).reshape(-1)
    a["layers"] = _json([{"name": l.name, "scale": float(l.scale), "source": l.source,
                          "is_output": bool(l.is_output), "relays_in": int(l.relays_in),
                          "relays_out": int(l.relays_out)} for l in net.layers], "layer names")
    a["metadata"] = _json(dict(net.metadata), "the network metadata")
    a["extra_metadata"] = _json(dict(extra_metadata or {}), "extra_metadata")


def write_netx(net: FxNetwork, path: PathLike, extra_metadata: Optional[dict] = None) -> Path:
    """Write ``net`` as a Lava-DL netx HDF5 file at ``path`` (atomically) and return the path.

    The file is written to a temporary file in the target directory and moved into place with
    ``os.replace``; on any failure the temporary file is removed, no file is created and an
    existing file at ``path`` is left untouched. Raises ExportError.
    """
    import h5py

    path = Path(path)
    if not net.layers:
        raise ExportError("cannot export a network without layers")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ExportError(f"cannot write {path}: directory {directory} does not exist")
    def write(tmp):
        with h5py.File(tmp, "w") as f:
            _write_layers(f, net)
            _write_attrs(f, net, extra_metadata)

    try:
        atomic_write(path, write)
    except ToolchainError:
        raise
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ExportError(f"cannot write netx file {path}: {msg}") from None
    return path


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------

_NETX_CANNOT_RUN = {
    "pool": "pooling", "average": "average", "concat": "concatenation",
    "convT": "transposed convolution", "unpool": "unpooling",
}


def _str(ds) -> str:
    """A string dataset as netx's NetDict decodes it (first element if it is an array)."""
    value = ds[()]
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else b""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value)


def _arr(group, key) -> np.ndarray:
    return np.asarray(group[key][()])


def _int(group, key) -> int:
    v = np.asarray(group[key][()]).reshape(-1)
    return int(v[0])


def _pair(group, key, default: int) -> Tuple[int, int]:
    """netx's expand(): a scalar s -> (s, s); an array stored (y, x)."""
    if key not in group:
        return (default, default)
    v = np.asarray(group[key][()])
    if v.ndim == 0:
        return (int(v), int(v))
    v = v.reshape(-1)
    if v.size == 1:
        return (int(v[0]), int(v[0]))
    return (int(v[0]), int(v[1]))


def _read_neuron(group, where: str) -> Dict[str, int]:
    if "neuron" not in group:
        return dict(NETX_DEFAULT_NEURON)
    n = group["neuron"]
    if "type" not in n:
        raise NetxError(f"{where}: neuron has no 'type'")
    ntype = _str(n["type"])
    if ntype not in SUPPORTED_NEURONS:
        raise NetxError(f"{where}: neuron type '{ntype}' is not supported (only CUBA/LOIHI "
                        f"current-based LIF neurons)")
    out = {}
    for key in ("iDecay", "vDecay", "vThMant"):
        if key not in n:
            raise NetxError(f"{where}: CUBA neuron has no '{key}'")
        out[key] = _int(n, key)
    return out


def _bias(group, out_shape: Tuple[int, ...], kind: str, where: str) -> Optional[np.ndarray]:
    if "bias" not in group:
        return None
    b = _arr(group, "bias").astype(int)
    n_out = int(out_shape[0])
    if kind == "conv":
        lava_shape = tuple(out_shape[::-1])
        if list(b.shape) == list(lava_shape):           # neuron-wise, netx's (W, H, C) order
            return b.transpose(2, 1, 0).copy()
        if b.ndim >= 1 and b.shape[0] == n_out:          # channel-wise
            return b.reshape(n_out)
        raise NetxError(f"{where}: bias of shape {b.shape} fits neither {n_out} channels nor "
                        f"the neurons {lava_shape}")
    if b.size == 1:
        return np.full(n_out, int(b.reshape(-1)[0]))
    if b.size != n_out:
        raise NetxError(f"{where}: bias has {b.size} values for {n_out} neurons")
    return b.reshape(n_out)


def _attr_str(attrs, key, default):
    if key not in attrs:
        return default
    v = attrs[key]
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return str(v)


def _attr_json(attrs, key, default):
    if key not in attrs:
        return default
    try:
        return json.loads(_attr_str(attrs, key, ""))
    except ValueError:
        raise NetxError(f"attribute '{key}' is not valid JSON") from None


def read_netx(path: PathLike, timesteps: Optional[int] = None,
              input_shape: Optional[Tuple[int, ...]] = None) -> FxNetwork:
    """Read a netx HDF5 file (ours or any other with input/flatten/dense/conv layers and CUBA
    neurons) into an FxNetwork. Raises NetxError with a one-line message.

    Without the toolchain's attributes: input coding 'poisson' (binary spikes), input_bits 0,
    readout 'spikes', layer names 'layer{i}' (i = index of the layer in the file),
    num_classes = output neurons, timesteps = ``timesteps`` or DEFAULT_TIMESTEPS. An explicit
    ``timesteps`` argument always wins over the file's. ``input_shape`` ((C, H, W) or (F,)) is
    needed only for a file whose first layer is a conv without an 'input' layer (as slayer's
    blocks export it; the stock loader then needs ``Network(input_shape=...)`` too, which
    ``hw_targets.simulators.lava`` passes).
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise NetxError(f"netx file not found: {path}")
    if path.is_dir():
        raise NetxError(f"{path} is a directory, not a netx file")
    try:
        ok = h5py.is_hdf5(str(path))
    except OSError as e:
        raise NetxError(f"cannot read {path}: {e}") from None
    if not ok:
        raise NetxError(f"{path} is not an HDF5 file (not a netx network)")
    try:
        with h5py.File(str(path), "r") as f:
            return _read(f, path, timesteps, input_shape)
    except NetxError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise NetxError(f"{path} is corrupt or truncated: {msg}") from None


def _read(f, path: Path, timesteps: Optional[int],
          given_input_shape: Optional[Tuple[int, ...]]) -> FxNetwork:
    if "layer" not in f or not hasattr(f["layer"], "keys"):
        raise NetxError(f"{path} has no 'layer' group: not a netx network description")
    lg = f["layer"]
    n = len(lg)
    if n == 0:
        raise NetxError(f"{path}: the 'layer' group is empty")
    for i in range(n):
        if str(i) not in lg:
            raise NetxError(f"{path}: layers must be numbered 0..{n - 1}; layer {i} is missing")

    attrs = f.attrs
    infos = _attr_json(attrs, "layers", None)

    input_shape: Optional[Tuple[int, ...]] = None
    if given_input_shape is not None:
        input_shape = tuple(int(s) for s in given_input_shape)
    cur_shape: Optional[Tuple[int, ...]] = input_shape
    flatten_next = False
    layers: List[FxLayer] = []
    for i in range(n):
        g = lg[str(i)]
        if "type" not in g:
            raise NetxError(f"{path}: layer {i} has no 'type'")
        ltype = _str(g["type"])
        where = f"{path}: layer {i} ({ltype})"
        if ltype == "input":
            if "neuron" in g:
                raise NetxError(f"{where}: an input layer with a neuron is driven only by its bias "
                                f"in netx (the network input is not connected to it); not supported")
            if "shape" not in g:
                raise NetxError(f"{where}: input layer has no 'shape'")
            if layers:
                raise NetxError(f"{where}: an input layer must come before the other layers")
            input_shape = tuple(int(s) for s in _arr(g, "shape").reshape(-1))
            cur_shape = input_shape
            continue
        if ltype == "flatten":
            flatten_next = True
            continue
        if ltype in _NETX_CANNOT_RUN:
            raise NetxError(f"{where}: {_NETX_CANNOT_RUN[ltype]} layers are not supported: "
                            f"netx cannot run '{ltype}' (its loader raises NotImplementedError)")
        if ltype in ("dense_rec", "dense_comp"):
            raise NetxError(f"{where}: recurrent/complex dense layers are not supported by this "
                            f"toolchain")
        if ltype not in ("dense", "conv"):
            raise NetxError(f"{where}: unknown layer type '{ltype}'; netx cannot run it")
        if "weight" not in g or "shape" not in g:
            raise NetxError(f"{where}: missing 'weight' or 'shape'")
        if "delay" in g:
            raise NetxError(f"{where}: synaptic delays are not supported")
        neuron = _read_neuron(g, where)
        w = _arr(g, "weight").astype(int)       # netx: astype(int) (truncation)
        if ltype == "dense":
            n_out = int(np.prod(_arr(g, "shape")))
            if w.ndim == 1:
                if n_out == 0 or w.size % n_out:
                    raise NetxError(f"{where}: dense weight has {w.size} values, not a multiple "
                                    f"of {n_out} output neurons")
                w = w.reshape(n_out, -1)
            if w.ndim != 2 or w.shape[0] != n_out:
                raise NetxError(f"{where}: dense weight shape {w.shape} does not match "
                                f"{n_out} output neurons")
            if cur_shape is None:
                cur_shape = (int(w.shape[1]),)
                input_shape = cur_shape
            n_in = int(np.prod(cur_shape))
            if w.shape[1] != n_in:
                raise NetxError(f"{where}: dense weight count {w.size} does not match "
                                f"{n_out} x {n_in} (outputs x inputs of {cur_shape})")
            out_shape: Tuple[int, ...] = (n_out,)
            layer = FxLayer(name=f"layer{i}", kind="dense", weight=w, input_shape=cur_shape,
                            output_shape=out_shape, vth=neuron["vThMant"],
                            i_decay=neuron["iDecay"], v_decay=neuron["vDecay"],
                            flatten_before=flatten_next)
        else:
            if cur_shape is None:
                raise NetxError(f"{where}: the input shape cannot be inferred (no input layer "
                                f"before the first conv); pass input_shape=(C, H, W)")
            if len(cur_shape) != 3:
                raise NetxError(f"{where}: conv after a {len(cur_shape)}-D output {cur_shape}")
            if w.ndim == 5 and w.shape[4] == 1:
                w = w[..., 0]
            if w.ndim != 4:
                raise NetxError(f"{where}: conv weight must be (out, in/groups, kh, kw), got {w.shape}")
            groups = _int(g, "groups") if "groups" in g else 1
            out_shape = tuple(int(s) for s in _arr(g, "shape").reshape(-1))
            c = cur_shape[0]
            if groups < 1 or c % groups or w.shape[0] % groups or w.shape[1] != c // groups:
                raise NetxError(f"{where}: conv weight {w.shape} does not fit {c} input channels "
                                f"in {groups} groups")
            layer = FxLayer(name=f"layer{i}", kind="conv", weight=w, input_shape=cur_shape,
                            output_shape=out_shape, vth=neuron["vThMant"],
                            i_decay=neuron["iDecay"], v_decay=neuron["vDecay"],
                            stride=_pair(g, "stride", 1), padding=_pair(g, "padding", 0),
                            dilation=_pair(g, "dilation", 1), groups=groups)
            computed = (int(w.shape[0]),) + _conv_out_hw(layer, cur_shape[1], cur_shape[2])
            if len(out_shape) != 3 or computed != out_shape:
                raise NetxError(f"{where}: stored shape {out_shape} does not match the conv "
                                f"output {computed}")
        layer.bias = _bias(g, out_shape, ltype, where)
        flatten_next = False
        layers.append(layer)
        cur_shape = out_shape

    if not layers:
        raise NetxError(f"{path}: no dense or conv layer")
    if infos is not None and len(infos) == len(layers):
        for layer, info in zip(layers, infos):
            layer.name = str(info.get("name", layer.name))
            layer.scale = float(info.get("scale", 1.0))
            layer.source = str(info.get("source", ""))
            layer.is_output = bool(info.get("is_output", False))
            layer.relays_in, layer.relays_out = int(info.get("relays_in", 0)), int(info.get("relays_out", 0))
    else:
        layers[-1].is_output = True

    metadata = dict(_attr_json(attrs, "metadata", {}) or {})
    metadata.update(_attr_json(attrs, "extra_metadata", {}) or {})
    if timesteps is None:
        timesteps = int(attrs["timesteps"]) if "timesteps" in attrs else DEFAULT_TIMESTEPS
    num_classes = int(attrs["num_classes"]) if "num_classes" in attrs else layers[-1].neurons
    return FxNetwork(
        input_shape=tuple(input_shape),
        layers=layers,
        num_classes=num_classes,
        timesteps=int(timesteps),
        input_coding=_attr_str(attrs, "input_coding", "poisson"),
        input_bits=int(attrs["input_bits"]) if "input_bits" in attrs else 0,
        input_scale=float(attrs["input_scale"]) if "input_scale" in attrs else 1.0,
        readout=_attr_str(attrs, "readout", "spikes"),
        mean=tuple(float(x) for x in np.asarray(attrs.get("mean", ())).reshape(-1)),
        std=tuple(float(x) for x in np.asarray(attrs.get("std", ())).reshape(-1)),
        metadata=metadata,
    )

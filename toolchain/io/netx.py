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
    sigma-delta neurons (slayer's sigma_delta blocks): neuron/{type 'SDNN', activation 'relu', vThMant
                           [, sigma_output True on a Sigma layer]}; an input layer with one is Lava's Delta

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

import io
import json
import math
import os
import warnings

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from .. import __version__
from ..errors import DeploymentWarning, ExportError, NetxError, QuantizationError, ToolchainError
from ..limits import MAX_TIMESTEPS
from .files import atomic_write_bytes
from ..ir import conv_out_size
from ..quantization.fixed_point import READOUTS, FxLayer, FxNetwork

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_TIMESTEPS = 16           # used by read_netx when neither the caller nor the file says
SUPPORTED_NEURONS = ("CUBA", "LOIHI")   # netx maps both to Lava's LIF
MAX_INPUT_BITS = 24              # graded spikes carry at most 24 bits on Loihi 2


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
    if layer.sigma_delta:                        # slayer's sigma-delta blocks: device_params of the SDNN neuron
        group.create_dataset("neuron/type", data="SDNN")
        group.create_dataset("neuron/activation", data="relu")
        group.create_dataset("neuron/vThMant", data=int(layer.vth))
        if layer.neuron == "sigma":
            group.create_dataset("neuron/sigma_output", data=True)
        return
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
    exact = not b.size or np.abs(b).max() < 2 ** 24       # float32 holds every integer below 2**24
    return b.astype(np.float32 if exact else np.float64)


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
        if layer.kind == "input":
            if i != 0 or tuple(layer.input_shape) != in_shape or tuple(layer.output_shape) != in_shape:
                raise ExportError(f"layer {i} ('{layer.name}'): an input layer with a neuron must be the first "
                                  f"layer, of the network's input shape {in_shape}")
            _write_neuron(g, layer)              # the input layer's own neuron (netx's Input block)
            continue
        _check_layer(i, layer, in_shape)
        w = np.asarray(layer.weight)
        if layer.flatten_before:
            g = new()
            _type_dataset(g, "flatten")
            g.create_dataset("shape", data=np.array([int(np.prod(in_shape)), 1, 1], dtype=np.int64))
        g = new()
        if layer.kind == "dense":
            _type_dataset(g, "dense" if layer.weight_rec is None else "dense_rec")
            g.create_dataset("shape", data=np.array(layer.output_shape, dtype=np.int64))
            g.create_dataset("inFeatures", data=int(w.shape[1]))
            g.create_dataset("outFeatures", data=int(w.shape[0]))
            g.create_dataset("weight", data=w.astype(np.float32))
            if layer.weight_rec is not None:
                g.create_dataset("weight_rec", data=np.asarray(layer.weight_rec).astype(np.float32))
            if layer.delay is not None:
                g.create_dataset("delay", data=np.asarray(layer.delay).astype(np.float32))
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


def _netx_bytes(net: FxNetwork, extra_metadata: Optional[dict]) -> bytes:
    """The file, built in memory: the disk then sees one plain write, whose failure (a full disk) is one line
    instead of HDF5's error stack."""
    import h5py
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        _write_layers(f, net)
        _write_attrs(f, net, extra_metadata)
    return buffer.getvalue()


def write_netx(net: FxNetwork, path: PathLike, extra_metadata: Optional[dict] = None) -> Path:
    """Write ``net`` as a Lava-DL netx HDF5 file at ``path`` (atomically) and return the path.

    The file is written to a temporary file in the target directory and moved into place with
    ``os.replace``; on any failure the temporary file is removed, no file is created and an
    existing file at ``path`` is left untouched. Raises ExportError (OutputError when the disk is full).
    """
    path = Path(path)
    if not net.layers:
        raise ExportError("cannot export a network without layers")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ExportError(f"cannot write {path}: directory {directory} does not exist")
    try:
        data = _netx_bytes(net, extra_metadata)
        atomic_write_bytes(path, data)
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


def _arr(group, key, where: str = "") -> np.ndarray:
    """A numeric dataset; NetxError naming it if it is not numbers or not finite (NaN would become INT64_MIN)."""
    value = np.asarray(group[key][()])
    if value.dtype.kind not in "iufb":
        raise NetxError(f"{where}: '{key}' holds {value.dtype} values, not numbers")
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        raise NetxError(f"{where}: '{key}' holds NaN or infinite values")
    return value


def _int(group, key, where: str = "") -> int:
    v = _arr(group, key, where).reshape(-1)
    if v.size != 1 or v[0] != np.round(v[0]):
        raise NetxError(f"{where}: '{key}' must be one integer, got {v[:4].tolist()}")
    return int(v[0])


def _ints(group, key, where: str, low: int) -> Tuple[int, ...]:
    """An integer vector (a shape, a kernel size), every entry >= low."""
    v = _arr(group, key, where).reshape(-1)
    if v.size == 0 or np.any(v != np.round(v)) or np.any(v < low) or np.any(v > 2 ** 31):
        raise NetxError(f"{where}: '{key}' must be integers >= {low}, got {v[:8].tolist()}")
    return tuple(int(x) for x in v)


def _pair(group, key, default: int, where: str = "", low: int = 0) -> Tuple[int, int]:
    """netx's expand(): a scalar s -> (s, s); an array stored (y, x). Each entry >= low."""
    if key not in group:
        return (default, default)
    v = _ints(group, key, where, low)
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def _read_neuron(group, where: str, input_layer: bool = False) -> Dict[str, int]:
    if "neuron" not in group:
        raise NetxError(f"{where}: the layer has no 'neuron'; netx would give it its default neuron (iDecay 0, "
                        f"vDecay 4096, vThMant 2**17), which is outside Loihi's fixed-point ranges: give it a CUBA "
                        f"neuron")
    n = group["neuron"]
    if "type" not in n:
        raise NetxError(f"{where}: neuron has no 'type'")
    ntype = _str(n["type"])
    if "RF" in ntype:
        raise NetxError(f"{where}: resonate-and-fire neurons ('{ntype}') are not supported by the emulator")
    if "messageBits" in n:
        raise NetxError(f"{where}: neuron 'messageBits' cannot be run by netx (lava-dl 0.6 passes the dataset "
                        f"itself as the message bits and Lava's builder fails); slayer marks graded spikes with "
                        f"'gradedSpike' instead")
    if ntype == "SDNN":
        return _read_sigma_delta(n, where, input_layer)
    if ntype not in SUPPORTED_NEURONS:
        raise NetxError(f"{where}: neuron type '{ntype}' is not supported (only CUBA/LOIHI "
                        f"current-based LIF neurons and SDNN sigma-delta neurons)")
    out = {"model": "cuba"}
    for key in ("iDecay", "vDecay", "vThMant"):
        if key not in n:
            raise NetxError(f"{where}: CUBA neuron has no '{key}'")
        out[key] = _int(n, key, f"{where}: neuron")
    return out


def _read_sigma_delta(n, where: str, input_layer: bool) -> Dict[str, Any]:
    """netx's SDNN neuron: Lava's Delta on an input layer (whatever else the file says), Sigma where 'sigma_output'
    is present, else SigmaDelta (always ReLU: netx does not read 'activation'); spike_exp = state_exp = 6."""
    activation = _str(n["activation"]).lower() if "activation" in n else "relu"
    if activation != "relu":
        warnings.warn(f"{where}: netx runs every SDNN neuron with a ReLU, not '{activation}'; so do the emulator "
                      f"and Lava", DeploymentWarning, stacklevel=5)
    if "sigma_output" in n and not input_layer:
        return {"model": "sigma", "vThMant": 0, "iDecay": 4096, "vDecay": 0}
    if "vThMant" not in n:
        raise NetxError(f"{where}: SDNN neuron has no 'vThMant'")
    return {"model": "sdnn", "vThMant": _int(n, "vThMant", f"{where}: neuron"), "iDecay": 4096, "vDecay": 0}


def _bias(group, out_shape: Tuple[int, ...], kind: str, where: str) -> Optional[np.ndarray]:
    if "bias" not in group:
        return None
    b = _arr(group, "bias", where).astype(np.int64)
    n_out = int(out_shape[0])
    if kind == "conv":
        lava_shape = tuple(out_shape[::-1])
        if list(b.shape) == list(lava_shape):           # neuron-wise, netx's (W, H, C) order
            return b.transpose(2, 1, 0).copy()
        if b.ndim >= 1 and b.shape[0] == n_out and b.size == n_out:          # channel-wise
            return b.reshape(n_out)
        raise NetxError(f"{where}: bias of shape {b.shape} fits neither {n_out} channels nor "
                        f"the neurons {lava_shape}")
    if b.size == 1:
        return np.full(n_out, int(b.reshape(-1)[0]))
    if b.size != n_out:
        raise NetxError(f"{where}: bias has {b.size} values for {n_out} neurons")
    return b.reshape(n_out)


def _recurrent_weight(group, n_out: int, where: str) -> np.ndarray:
    """dense_rec's 'weight_rec' (out, out), as netx reads it (astype(int) after netx's own bit optimization)."""
    if "weight_rec" not in group:
        raise NetxError(f"{where}: a dense_rec layer has no 'weight_rec'")
    w = _arr(group, "weight_rec").astype(int)
    if w.ndim == 1 and w.size == n_out * n_out:
        w = w.reshape(n_out, n_out)
    if w.shape != (n_out, n_out):
        raise NetxError(f"{where}: weight_rec of shape {w.shape} is not ({n_out}, {n_out})")
    return w


MAX_DELAY = 62          # netx clamps larger delays (DelayDense's max_delay)


def _delays(group, shape: Tuple[int, int], where: str) -> np.ndarray:
    """A dense layer's synaptic delays (out, in), as netx expands them: a scalar for every synapse, one per output
    (axonal, slayer's export) or one per input, clamped to [0, 62] and truncated to integers."""
    d = np.asarray(group["delay"][()], dtype=np.float64)
    if not np.all(np.isfinite(d)):
        raise NetxError(f"{where}: delays are not finite")
    d = np.clip(d, 0, MAX_DELAY)
    n_out, n_in = shape
    if d.ndim == 0 or d.size == 1:
        d = np.full(shape, float(d.reshape(-1)[0]))
    elif d.ndim == 1 and d.size == n_out:
        d = np.repeat(d.reshape(-1, 1), n_in, axis=1)
    elif d.ndim == 1 and d.size == n_in:
        d = np.repeat(d.reshape(1, -1), n_out, axis=0)
    elif d.shape != tuple(shape):
        raise NetxError(f"{where}: delays of shape {d.shape} fit neither the {n_out} outputs, the {n_in} inputs "
                        f"nor the weights {tuple(shape)}")
    return d.astype(int)


def _attr_str(attrs, key, default):
    if key not in attrs:
        return default
    v = attrs[key]
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return str(v)


def _attr_json(attrs, key, default, path=""):
    if key not in attrs:
        return default
    try:
        return json.loads(_attr_str(attrs, key, ""))
    except ValueError:
        raise NetxError(f"{path}: attribute '{key}' is not valid JSON") from None


def _sample_length(f, path: Path) -> int:
    """The file's own sample length: slayer's ``simulation/tSample`` (in steps of ``simulation/Ts``), else
    DEFAULT_TIMESTEPS."""
    sim = f.get("simulation")
    if sim is None or not hasattr(sim, "keys") or "tSample" not in sim:
        return DEFAULT_TIMESTEPS
    t_sample = float(np.asarray(sim["tSample"][()]).reshape(-1)[0])
    ts = float(np.asarray(sim["Ts"][()]).reshape(-1)[0]) if "Ts" in sim else 1.0
    steps = t_sample / ts if ts > 0 else 0.0
    if not np.isfinite(steps) or steps < 1 or steps != round(steps):
        raise NetxError(f"{path}: simulation/tSample {t_sample:g} is not a positive whole number of steps of "
                        f"Ts {ts:g}")
    return int(round(steps))


def read_netx(path: PathLike, timesteps: Optional[int] = None,
              input_shape: Optional[Tuple[int, ...]] = None) -> FxNetwork:
    """Read a netx HDF5 file (ours or any other with input/flatten/dense/dense_rec/conv layers and CUBA or SDNN
    neurons) into an FxNetwork. Raises NetxError with a one-line message.

    Without the toolchain's attributes: input coding 'poisson' (binary spikes), input_bits 0 ('direct', the values as
    they are, for a sigma-delta input layer),
    readout 'spikes' ('voltage', the last layer's sigma, for a sigma-delta output layer), layer names 'layer{i}'
    (i = index of the layer in the file),
    num_classes = output neurons, timesteps = ``timesteps``, else the file's ``simulation/tSample``
    (slayer's export), else DEFAULT_TIMESTEPS. An explicit
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


def _read_dense(g, where: str, i: int, cur_shape, flatten_next: bool, neuron: dict) -> FxLayer:
    n_out = math.prod(_ints(g, "shape", where, 1))
    w = _arr(g, "weight", where).astype(np.int64)       # netx: astype(int) (truncation)
    if w.ndim == 1:
        if w.size % n_out:
            raise NetxError(f"{where}: dense weight has {w.size} values, not a multiple of {n_out} output neurons")
        w = w.reshape(n_out, -1)
    if w.ndim != 2 or w.shape[0] != n_out or w.shape[1] == 0:
        raise NetxError(f"{where}: dense weight shape {w.shape} does not match {n_out} output neurons")
    cur_shape = cur_shape if cur_shape is not None else (int(w.shape[1]),)
    if len(cur_shape) != 1 and not flatten_next:
        raise NetxError(f"{where}: a dense layer after the {len(cur_shape)}-D output {cur_shape} needs a 'flatten' "
                        f"layer before it (netx cannot connect them otherwise)")
    n_in = math.prod(cur_shape)
    if w.shape[1] != n_in:
        raise NetxError(f"{where}: dense weight count {w.size} does not match "
                        f"{n_out} x {n_in} (outputs x inputs of {cur_shape})")
    return FxLayer(name=f"layer{i}", kind="dense", weight=w, input_shape=cur_shape, output_shape=(n_out,),
                   vth=neuron["vThMant"], i_decay=neuron["iDecay"], v_decay=neuron["vDecay"],
                   flatten_before=flatten_next, neuron=neuron["model"])


def _read_conv(g, where: str, i: int, cur_shape, neuron: dict) -> FxLayer:
    if cur_shape is None:
        raise NetxError(f"{where}: the input shape cannot be inferred (no input layer "
                        f"before the first conv); pass input_shape=(C, H, W)")
    if len(cur_shape) != 3:
        raise NetxError(f"{where}: conv after a {len(cur_shape)}-D output {cur_shape}")
    w = _arr(g, "weight", where).astype(np.int64)
    if w.ndim == 5 and w.shape[4] == 1:
        w = w[..., 0]
    if w.ndim != 4 or 0 in w.shape:
        raise NetxError(f"{where}: conv weight must be (out, in/groups, kh, kw), got {w.shape}")
    groups = _int(g, "groups", where) if "groups" in g else 1
    out_shape = _ints(g, "shape", where, 1)
    c = cur_shape[0]
    if groups < 1 or c % groups or w.shape[0] % groups or w.shape[1] != c // groups:
        raise NetxError(f"{where}: conv weight {w.shape} does not fit {c} input channels "
                        f"in {groups} groups")
    layer = FxLayer(name=f"layer{i}", kind="conv", weight=w, input_shape=cur_shape,
                    output_shape=out_shape, vth=neuron["vThMant"],
                    i_decay=neuron["iDecay"], v_decay=neuron["vDecay"], neuron=neuron["model"],
                    stride=_pair(g, "stride", 1, where, low=1), padding=_pair(g, "padding", 0, where),
                    dilation=_pair(g, "dilation", 1, where, low=1), groups=groups)
    computed = (int(w.shape[0]),) + _conv_out_hw(layer, cur_shape[1], cur_shape[2])
    if len(out_shape) != 3 or computed != out_shape or min(computed) < 1:
        raise NetxError(f"{where}: stored shape {out_shape} does not match the conv "
                        f"output {computed}")
    return layer


def _read_layer(g, where: str, i: int, cur_shape, flatten_next: bool, ltype: str) -> FxLayer:
    if ltype in _NETX_CANNOT_RUN:
        raise NetxError(f"{where}: {_NETX_CANNOT_RUN[ltype]} layers are not supported: "
                        f"netx cannot run '{ltype}' (its loader raises NotImplementedError)")
    if ltype == "dense_comp":
        raise NetxError(f"{where}: complex-valued dense layers (dense_comp) are not supported: they need "
                        f"Lava's complex-valued neurons, which the emulator does not model")
    if ltype not in ("dense", "conv", "dense_rec"):
        raise NetxError(f"{where}: unknown layer type '{ltype}'; netx cannot run it")
    if "weight" not in g or "shape" not in g:
        raise NetxError(f"{where}: missing 'weight' or 'shape'")
    if "delay" in g and ltype == "conv":
        warnings.warn(f"{where}: netx ignores a conv layer's synaptic delays (its Conv block has none); so do "
                      f"the emulator and Lava", DeploymentWarning, stacklevel=4)
    neuron = _read_neuron(g, where)
    if ltype in ("dense", "dense_rec"):
        layer = _read_dense(g, where, i, cur_shape, flatten_next, neuron)
        n_out = layer.output_shape[0]
        if ltype == "dense_rec":
            layer.weight_rec = _recurrent_weight(g, n_out, where)
        if "delay" in g:
            if ltype == "dense_rec":
                raise NetxError(f"{where}: a recurrent dense layer with synaptic delays is not supported "
                                f"(netx gives both of its synapses the feed-forward delays)")
            layer.delay = _delays(g, layer.weight.shape, where)
    else:
        layer = _read_conv(g, where, i, cur_shape, neuron)
    layer.bias = _bias(g, layer.output_shape, ltype, where)
    if layer.neuron == "sigma" and layer.bias is not None:
        raise NetxError(f"{where}: a sigma_output (Sigma) layer with a bias cannot be loaded by netx: Lava's Sigma "
                        f"process takes no bias")
    try:
        layer.validate()                       # Loihi's ranges: what the chip (and the emulator) can hold
    except QuantizationError as e:
        raise NetxError(f"{where}: {e}") from None
    return layer


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

    input_shape: Optional[Tuple[int, ...]] = None
    if given_input_shape is not None:
        input_shape = tuple(int(s) for s in given_input_shape)
    cur_shape: Optional[Tuple[int, ...]] = input_shape
    flatten_next = False
    layers: List[FxLayer] = []
    for i in range(n):
        g = lg[str(i)]
        if not hasattr(g, "keys") or "type" not in g:
            raise NetxError(f"{path}: layer {i} has no 'type'")
        ltype = _str(g["type"])
        where = f"{path}: layer {i} ({ltype})"
        if ltype == "input":
            if "shape" not in g:
                raise NetxError(f"{where}: input layer has no 'shape'")
            if layers:
                raise NetxError(f"{where}: an input layer must come before the other layers")
            input_shape = _ints(g, "shape", where, 1)
            if len(input_shape) not in (1, 3):
                raise NetxError(f"{where}: input shape {input_shape} is neither (C, H, W) nor (F,)")
            cur_shape = input_shape
            if "neuron" in g:
                # netx builds a neuron without a synapse (its Input block): lava-dl feeds it through the neuron's
                # a_in or its bias; the file's input 'weight'/'bias' (its transform) are not used by Lava
                neuron = _read_neuron(g, where, input_layer=True)
                layers.append(FxLayer(name=f"layer{i}", kind="input", weight=np.zeros((0,), dtype=int),
                                      input_shape=input_shape, output_shape=input_shape, vth=neuron["vThMant"],
                                      i_decay=neuron["iDecay"], v_decay=neuron["vDecay"], neuron=neuron["model"]))
            continue
        if ltype == "flatten":
            flatten_next = True
            continue
        layer = _read_layer(g, where, i, cur_shape, flatten_next, ltype)
        if cur_shape is None:
            input_shape = layer.input_shape
        flatten_next = False
        layers.append(layer)
        cur_shape = layer.output_shape

    if not layers:
        raise NetxError(f"{path}: no dense or conv layer")
    _apply_layer_infos(layers, _attr_json(f.attrs, "layers", None, path), path)
    if timesteps is None and "timesteps" not in f.attrs:
        timesteps = _sample_length(f, path)         # slayer's simulation/tSample, else DEFAULT_TIMESTEPS
    return _network(f.attrs, path, tuple(input_shape), layers, timesteps)


def _apply_layer_infos(layers: List[FxLayer], infos, path: Path) -> None:
    """The toolchain's per-layer attributes (names, scales, sources, the output layer); without them the last layer
    is the output."""
    if infos is None or not isinstance(infos, list) or len(infos) != len(layers):
        if infos is not None and not isinstance(infos, list):
            raise NetxError(f"{path}: attribute 'layers' is a JSON {type(infos).__name__}, expected a list of "
                            f"{{name, scale, source, is_output}}")
        layers[-1].is_output = True
        return
    for layer, info in zip(layers, infos):
        if not isinstance(info, dict):
            raise NetxError(f"{path}: attribute 'layers' holds {info!r}, expected {{name, scale, source, is_output}}")
        name, scale = info.get("name", layer.name), info.get("scale", 1.0)
        if not isinstance(name, str) or not _finite_number(scale) or not isinstance(info.get("is_output", False), bool):
            raise NetxError(f"{path}: attribute 'layers': entry {info!r} needs a name (string), a finite scale and "
                            f"is_output true/false")
        layer.name, layer.scale = name, float(scale)
        layer.source, layer.is_output = str(info.get("source", "")), info.get("is_output", False)
        relays = (info.get("relays_in", 0), info.get("relays_out", 0))
        if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in relays):
            raise NetxError(f"{path}: attribute 'layers': entry {info!r} has relay counts that are not "
                            f"non-negative integers")
        layer.relays_in, layer.relays_out = relays
    if sum(layer.is_output for layer in layers) != 1 or not layers[-1].is_output:
        raise NetxError(f"{path}: attribute 'layers' must mark the last layer, and only it, as the output")


def _finite_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _attr_number(attrs, key: str, default, path: Path, integer: bool = False, low=None, high=None):
    """A numeric root attribute in [low, high] (an integer if `integer`); NetxError naming it otherwise."""
    if key not in attrs:
        return default
    v = np.asarray(attrs[key]).reshape(-1)
    ok = v.size == 1 and v.dtype.kind in "iuf" and _finite_number(v[0]) and (not integer or v[0] == np.round(v[0]))
    if ok and ((low is not None and v[0] < low) or (high is not None and v[0] > high)):
        ok = False
    if not ok:
        kind = "an integer" if integer else "a finite number"
        raise NetxError(f"{path}: attribute '{key}' is {v[:4].tolist()}; expected {kind} from {low} to {high}")
    return int(v[0]) if integer else float(v[0])


def _attr_choice(attrs, key: str, default: str, known, path: Path) -> str:
    value = _attr_str(attrs, key, default)
    if value not in known:
        raise NetxError(f"{path}: attribute '{key}' is '{value}'; known: {', '.join(known)}")
    return value


def _attr_floats(attrs, key: str, channels: int, path: Path, positive: bool = False) -> Tuple[float, ...]:
    v = np.asarray(attrs.get(key, ())).reshape(-1)
    if v.size == 0:
        return ()
    if v.dtype.kind not in "iuf" or not np.all(np.isfinite(v)) or (positive and np.any(v <= 0)) or \
            v.size not in (1, channels):
        raise NetxError(f"{path}: attribute '{key}' is {v[:8].tolist()}; expected {'positive ' if positive else ''}"
                        f"finite numbers, one per input channel ({channels})")
    return tuple(float(x) for x in v)


def _network(attrs, path: Path, input_shape, layers: List[FxLayer], timesteps: Optional[int]) -> FxNetwork:
    from ..coding import CODINGS
    metadata = _attr_json(attrs, "metadata", {}, path) or {}
    extra = _attr_json(attrs, "extra_metadata", {}, path) or {}
    if not isinstance(metadata, dict) or not isinstance(extra, dict):
        raise NetxError(f"{path}: attributes 'metadata' and 'extra_metadata' must be JSON objects")
    metadata = {**metadata, **extra}
    if timesteps is None:
        timesteps = _attr_number(attrs, "timesteps", DEFAULT_TIMESTEPS, path, True, 1, MAX_TIMESTEPS)
    elif not 1 <= int(timesteps) <= MAX_TIMESTEPS:
        raise NetxError(f"{path}: {timesteps} time steps asked for; expected 1 to {MAX_TIMESTEPS:,}")
    outputs = layers[-1].neurons
    channels = input_shape[0] if len(input_shape) == 3 else 1
    # a sigma-delta input (Lava's Delta) encodes the values it is given: by default they are fed as they are
    coding = "direct" if layers[0].kind == "input" and layers[0].sigma_delta else "poisson"
    return FxNetwork(
        input_shape=tuple(input_shape),
        layers=layers,
        num_classes=_attr_number(attrs, "num_classes", outputs, path, True, 1, outputs),
        timesteps=int(timesteps),
        input_coding=_attr_choice(attrs, "input_coding", coding, CODINGS.names(), path),
        input_bits=_attr_number(attrs, "input_bits", CODINGS.get(coding).input_bits(False), path, True, 0,
                                MAX_INPUT_BITS),
        input_scale=_attr_number(attrs, "input_scale", 1.0, path, low=1e-30, high=1e30),
        readout=_attr_choice(attrs, "readout", "voltage" if layers[-1].sigma_delta else "spikes", READOUTS, path),
        mean=_attr_floats(attrs, "mean", channels, path),
        std=_attr_floats(attrs, "std", channels, path, positive=True),
        metadata=metadata,
    )

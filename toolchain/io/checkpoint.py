"""Checkpoints: one torch file per artifact, tagged with its kind, written atomically.

    {"format": "snntc-checkpoint", "version": 1, "kind": "ann" | "snn",
     "network": Network.to_dict(), "state_dict": ..., "dataset": {...}, "snn": SnnConfig.to_dict() (snn only),
     "training": {"epoch": ..., "optimizer": ..., "scheduler": ..., "history": [...]} (optional),
     "toolchain_version": ...}

In memory `Checkpoint.snn` is the typed SnnConfig; on disk its `to_dict()` (toolchain/snn/config.py says why).

A checkpoint holds tensors and plain data only (dicts, lists, tuples, strings, numbers, None): `save_checkpoint`
writes nothing else, and `load_checkpoint` reads with `torch.load(weights_only=True)`, so a crafted file cannot run
code. What it loads is checked before any stage uses it: the fields and their types, the network description, a
state dict whose names and shapes are the network's and whose values are finite, and an SNN configuration with a
registered neuron and coding, a threshold > 0 for every spiking layer and T >= 1. Each problem is one
CheckpointError line naming the file and the field.

A checkpoint written by an older snntc that holds other Python objects is refused in one line; if it is trusted,
`python -m toolchain.io.checkpoint OLD.pt NEW.pt` rewrites it in plain data (it is the one place that unpickles
such a file, and only when asked).
"""
from __future__ import annotations

import collections
import math
import os
import pickle
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np
import torch

from .. import __version__
from ..errors import CheckpointError, ConfigError, ModelError
from .files import atomic_write
from ..ir import Network
from ..snn.config import SnnConfig

FORMAT = "snntc-checkpoint"
VERSION = 1
KINDS = ("ann", "snn")


@dataclass
class Checkpoint:
    kind: str
    network: Network
    state_dict: Dict[str, torch.Tensor]
    dataset: Dict[str, Any] = field(default_factory=dict)
    snn: Optional[SnnConfig] = None            # a plain dict (as older checkpoints hold it) is read into one
    training: Dict[str, Any] = field(default_factory=dict)
    metrics: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.snn is not None:
            self.snn = SnnConfig.of(self.snn)

    def to_payload(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "kind": self.kind, "network": self.network.to_dict(),
                "state_dict": self.state_dict, "dataset": self.dataset,
                "snn": None if self.snn is None else self.snn.to_dict(), "training": self.training,
                "metrics": self.metrics, "toolchain_version": __version__}

    def validate(self, where: str = "checkpoint") -> None:
        """CheckpointError unless the weights fit the network (names, shapes, finite values) and an SNN's
        configuration has a threshold for every spiking layer."""
        if self.kind not in KINDS:
            raise CheckpointError(f"{where}: kind {self.kind!r} is neither 'ann' nor 'snn'")
        check_state_dict(self.state_dict, self.network, where)
        if self.kind == "snn":
            if self.snn is None:
                raise CheckpointError(f"{where}: an SNN checkpoint without its SNN configuration ('snn')")
            missing = [s.name for s in self.network.spiking_layers if s.name not in self.snn.thresholds]
            extra = sorted(set(self.snn.thresholds) - {s.name for s in self.network.spiking_layers})
            if missing or extra:
                raise CheckpointError(f"{where}: the thresholds do not match the spiking layers "
                                      f"(missing {missing}, unknown {extra})")


def expected_parameters(net: Network) -> Dict[str, tuple]:
    """The state dict's names and shapes for a network (built on the meta device: nothing is allocated)."""
    from ..ir.torch_net import build_modules
    with torch.device("meta"):
        modules = build_modules(net)
    return {f"layers.{k}": tuple(v.shape) for k, v in modules.state_dict().items()}


def check_state_dict(state: Any, net: Network, where: str) -> None:
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{where}: 'state_dict' must map parameter names to tensors")
    expected = expected_parameters(net)
    missing, unknown = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unknown:
        raise CheckpointError(f"{where}: the weights do not match the network (missing {missing[:4]}, unknown "
                              f"{unknown[:4]})")
    for name, shape in expected.items():
        t = state[name]
        if tuple(t.shape) != shape:
            raise CheckpointError(f"{where}: '{name}' has shape {tuple(t.shape)}, the network needs {shape}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{where}: '{name}' holds NaN or infinite values (a diverged training?); "
                                  f"train it again with a lower learning rate")


# -- plain data ----------------------------------------------------------------------------------------------------
def plain_data(obj: Any, where: str = "checkpoint") -> Any:
    """`obj` as tensors and plain data only (what `torch.load(weights_only=True)` reads back): numpy values become
    Python numbers or tensors, sets and Counters lists and dicts; anything else raises CheckpointError."""
    if isinstance(obj, np.generic):         # first: np.float64 is a float, but weights_only cannot read it back
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.Tensor, torch.Size, torch.dtype)):
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, torch.device):
        return str(obj)
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, plain_data(v, f"{where}.{k}")) for k, v in obj.items())
    if isinstance(obj, dict):
        return {plain_data(k, where): plain_data(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [plain_data(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, (set, frozenset)):
        return sorted(plain_data(v, where) for v in obj)
    raise CheckpointError(f"cannot store {where}: a {type(obj).__module__}.{type(obj).__name__} is not plain data "
                          f"(a checkpoint holds tensors, numbers, strings, lists and dicts)")


def save_checkpoint(ckpt: Checkpoint, path: str) -> None:
    payload = plain_data(ckpt.to_payload())
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


# -- loading -------------------------------------------------------------------------------------------------------
_OBJECT_ERRORS = re.compile(r"Unsupported (class|global) ([\w.]+)")


def _refused(path: str, exc: Exception) -> Optional[CheckpointError]:
    """The error for a file that holds Python objects weights_only will not build (None: the file is corrupt)."""
    found = _OBJECT_ERRORS.search(str(exc))
    if not found:
        return None
    return CheckpointError(f"{path}: holds Python objects besides tensors and plain data ({found.group(2)}); snntc does not "
                           f"load them, as loading them could run code. If you trust the file (an older snntc wrote "
                           f"it), rewrite it once: python -m toolchain.io.checkpoint {path} NEW.pt")


def _read(path: str):
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused(path, exc)
        if refused is not None:
            raise refused from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc)[:80]})") from None
    except MemoryError:
        raise CheckpointError(f"{path}: too large to load into this machine's memory") from None
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc)[:80]})") from None


def _field(payload: dict, key: str, types, path: str, required: bool = True, default=None):
    if key not in payload or payload[key] is None:
        if required:
            raise CheckpointError(f"{path}: has no '{key}' (truncated, or not written by snntc)")
        return default
    value = payload[key]
    if not isinstance(value, types):
        name = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise CheckpointError(f"{path}: '{key}' is a {type(value).__name__}, expected a {name}")
    return value


def checkpoint_from_payload(payload: Any, path: str, kind: Optional[str] = None) -> Checkpoint:
    """The Checkpoint a loaded payload describes, every field checked (CheckpointError naming it)."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an snntc checkpoint")
    version = payload.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {version!r}, written by a newer snntc (this one reads "
                              f"version {VERSION})")
    found = _field(payload, "kind", str, path)
    if found not in KINDS:
        raise CheckpointError(f"{path}: kind {found!r} is neither 'ann' nor 'snn'")
    if kind is not None and found != kind:
        raise CheckpointError(f"{path}: is an {found.upper()} checkpoint, this command needs an {kind.upper()} one")
    try:
        network = Network.from_dict(_field(payload, "network", dict, path))
    except ModelError as exc:
        raise CheckpointError(f"{path}: network description: {exc}") from None
    snn = _field(payload, "snn", dict, path, required=found == "snn")
    try:
        ckpt = Checkpoint(kind=found, network=network, state_dict=_field(payload, "state_dict", dict, path),
                          dataset=_field(payload, "dataset", dict, path, False, {}), snn=snn,
                          training=_field(payload, "training", dict, path, False, {}),
                          metrics=_field(payload, "metrics", dict, path, False, {}))
    except ConfigError as exc:
        raise CheckpointError(f"{path}: SNN configuration: {exc}") from None
    ckpt.validate(path)
    return ckpt


def load_checkpoint(path: str, kind: Optional[str] = None) -> Checkpoint:
    """Load a checkpoint; `kind` ("ann" / "snn") rejects the other kind with a clear error."""
    path = os.fspath(path)
    return checkpoint_from_payload(_read(path), path, kind)


def rewrite_trusted(src: str, dst: str) -> None:
    """Rewrite a trusted checkpoint of an older snntc (one holding Python objects) in plain data. This unpickles
    `src` in full: only for files you trust."""
    payload = torch.load(src, map_location="cpu", weights_only=False)
    checkpoint_from_payload(plain_data(payload), src)
    atomic_write(dst, lambda tmp: torch.save(plain_data(payload), tmp))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m toolchain.io.checkpoint TRUSTED_OLD.pt NEW.pt (unpickles the old file in full)")
    if os.path.exists(sys.argv[2]):
        sys.exit(f"{sys.argv[2]} exists; give a new file name")
    rewrite_trusted(sys.argv[1], sys.argv[2])
    print(f"wrote {sys.argv[2]}: tensors and plain data only")

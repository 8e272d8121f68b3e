"""Checkpoints: one torch file per artifact, tagged with its kind, written atomically.

    {"format": "snntc-checkpoint", "version": 1, "kind": "ann" | "snn",
     "network": Network.to_dict(), "state_dict": ..., "dataset": {...}, "snn": SnnConfig.to_dict() (snn only),
     "training": {"epoch": ..., "optimizer": ..., "scheduler": ..., "history": [...]} (optional),
     "toolchain_version": ...}

In memory `Checkpoint.snn` is the typed SnnConfig; on disk its `to_dict()` (toolchain/snn/config.py says why).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch

from .. import __version__
from ..errors import CheckpointError
from .files import atomic_write
from ..ir import Network
from ..snn.config import SnnConfig

FORMAT = "snntc-checkpoint"


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
        return {"format": FORMAT, "version": 1, "kind": self.kind, "network": self.network.to_dict(),
                "state_dict": self.state_dict, "dataset": self.dataset,
                "snn": None if self.snn is None else self.snn.to_dict(), "training": self.training,
                "metrics": self.metrics, "toolchain_version": __version__}


def save_checkpoint(ckpt: Checkpoint, path: str) -> None:
    atomic_write(path, lambda tmp: torch.save(ckpt.to_payload(), tmp))


def load_checkpoint(path: str, kind: Optional[str] = None) -> Checkpoint:
    """Load a checkpoint; `kind` ("ann" / "snn") rejects the other kind with a clear error."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc)[:80]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an snntc checkpoint")
    if kind is not None and payload["kind"] != kind:
        raise CheckpointError(f"{path}: is an {payload['kind'].upper()} checkpoint, this command needs an {kind.upper()} one")
    return Checkpoint(kind=payload["kind"], network=Network.from_dict(payload["network"]),
                      state_dict=payload["state_dict"], dataset=payload.get("dataset") or {},
                      snn=payload.get("snn"), training=payload.get("training") or {},
                      metrics=payload.get("metrics") or {})

"""Energy constants of the hardware targets, loaded from `hw_targets/energy/<name>.json`.

Each target file holds a `model` (which formula `toolchain.energy.estimate_energy` applies), a
description, its sources, and constants of the form

    {"value": 23.6, "unit": "pJ", "source": "...", "kind": "measured" | "simulated" | "derived-bound" | "model"}

`kind` says how far to trust a figure: "measured" on silicon, "simulated" before silicon,
"derived-bound" an upper bound derived from system-level figures (Loihi 2), "model" an analytical
figure (Horowitz's 45 nm table, the memory-aware model).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Tuple, Union

from ..errors import ConfigError

ENERGY_DIR = Path(__file__).resolve().parents[2] / "hw_targets"
KNOWN_TARGETS: Tuple[str, ...] = ("loihi", "loihi2", "cmos45nm", "memory_aware")
KINDS: Tuple[str, ...] = ("measured", "simulated", "derived-bound", "model")
MODELS: Tuple[str, ...] = ("loihi-events", "system-bound", "ops-only", "memory-aware")


@dataclass(frozen=True)
class EnergyConstant:
    value: float
    unit: str
    source: str
    kind: str

    def to_json(self) -> dict:
        return {"value": self.value, "unit": self.unit, "source": self.source, "kind": self.kind}


@dataclass(frozen=True)
class EnergyTarget:
    """One hardware target's energy constants (all in pJ) and where they come from."""
    name: str
    title: str
    model: str
    description: str
    sources: Tuple[str, ...]
    constants: Dict[str, EnergyConstant]
    inputs: Dict[str, dict] = field(default_factory=dict)

    def pj(self, key: str) -> float:
        """The value of constant `key` in pJ; ConfigError if the target lacks it."""
        try:
            return float(self.constants[key].value)
        except KeyError:
            raise ConfigError(f"energy target '{self.name}' has no constant '{key}' "
                              f"(it has: {', '.join(sorted(self.constants))})") from None

    @property
    def is_upper_bound(self) -> bool:
        return any(c.kind == "derived-bound" for c in self.constants.values())

    def to_json(self) -> dict:
        return {"name": self.name, "title": self.title, "model": self.model,
                "description": self.description, "sources": list(self.sources),
                "constants": {k: c.to_json() for k, c in self.constants.items()},
                "inputs": dict(self.inputs)}


def _parse(data: Mapping, origin: str) -> EnergyTarget:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin}: an energy target must be a JSON object")
    for key in ("name", "model", "constants"):
        if key not in data:
            raise ConfigError(f"{origin}: missing '{key}'")
    if data["model"] not in MODELS:
        raise ConfigError(f"{origin}: model {data['model']!r} is not one of {', '.join(MODELS)}")
    constants: Dict[str, EnergyConstant] = {}
    for key, c in dict(data["constants"]).items():
        if not isinstance(c, Mapping) or not {"value", "unit", "source", "kind"} <= set(c):
            raise ConfigError(f"{origin}: constant '{key}' needs value, unit, source and kind")
        if c["unit"] != "pJ":
            raise ConfigError(f"{origin}: constant '{key}' is in {c['unit']!r}, expected 'pJ'")
        if c["kind"] not in KINDS:
            raise ConfigError(f"{origin}: constant '{key}' has kind {c['kind']!r}, not one of {', '.join(KINDS)}")
        if not c["source"]:
            raise ConfigError(f"{origin}: constant '{key}' has no source")
        value = c["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{origin}: constant '{key}' must be a non-negative number, not {value!r}")
        constants[key] = EnergyConstant(float(value), c["unit"], str(c["source"]), c["kind"])
    return EnergyTarget(name=str(data["name"]), title=str(data.get("title", data["name"])),
                        model=str(data["model"]), description=str(data.get("description", "")),
                        sources=tuple(data.get("sources", ())), constants=constants,
                        inputs=dict(data.get("inputs", {})))


def target_from_json(data: Mapping) -> EnergyTarget:
    """An EnergyTarget from a dict shaped like the files (or like `EnergyTarget.to_json()`)."""
    return _parse(data, "energy target")


def load_target(name: Union[str, Path]) -> EnergyTarget:
    """Load a target by name ("loihi", "loihi2", "cmos45nm", "memory_aware") or from a .json path."""
    if isinstance(name, Path) or str(name).endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"energy target file '{path}' does not exist")
    else:
        if name not in KNOWN_TARGETS:
            raise ConfigError(f"unknown energy target {name!r}; known targets: {', '.join(KNOWN_TARGETS)}")
        path = ENERGY_DIR / name / "energy.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"energy target file '{path}' is unreadable: {exc}") from None
    return _parse(data, str(path))

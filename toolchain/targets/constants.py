"""Energy constants of a hardware target: the format of its `energy.json` (hw_targets/<target>/energy.json).

Each file holds the target's name and title, a `model` (the name of the formula its target entry applies,
reported with the energy), a description, its sources, and constants of the form

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

KINDS: Tuple[str, ...] = ("measured", "simulated", "derived-bound", "model")


@dataclass(frozen=True)
class EnergyConstant:
    value: float
    unit: str
    source: str
    kind: str

    def to_json(self) -> dict:
        return {"value": self.value, "unit": self.unit, "source": self.source, "kind": self.kind}


@dataclass(frozen=True)
class EnergyTable:
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


def _parse(data: Mapping, origin: str) -> EnergyTable:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin}: an energy target must be a JSON object")
    for key in ("name", "model", "constants"):
        if key not in data:
            raise ConfigError(f"{origin}: missing '{key}'")
    if not isinstance(data["model"], str) or not data["model"]:
        raise ConfigError(f"{origin}: 'model' must name the target's energy formula")
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
    return EnergyTable(name=str(data["name"]), title=str(data.get("title", data["name"])),
                       model=str(data["model"]), description=str(data.get("description", "")),
                       sources=tuple(data.get("sources", ())), constants=constants,
                       inputs=dict(data.get("inputs", {})))


def energy_table_from_json(data: Mapping) -> EnergyTable:
    """An EnergyTable from a dict shaped like the files (or like `EnergyTable.to_json()`)."""
    return _parse(data, "energy table")


def load_energy_table(path: Union[str, Path]) -> EnergyTable:
    """Read and check an energy.json file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"energy table '{path}' is unreadable: {exc}") from None
    return _parse(data, str(path))

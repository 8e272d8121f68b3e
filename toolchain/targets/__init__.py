"""Hardware targets and simulator backends: the interfaces and their registries. The entries live in hw_targets/
(one subpackage per target, the simulators in hw_targets/simulators/) and are registered by its plugin
(`snntc.plugins` in pyproject.toml): the toolchain never imports hw_targets.

A `HardwareTarget` is what an exported network costs and where it fits: its energy formula and constants
(energy.json, every constant with its source), how it prices the equivalent ANN, its resource limits and fit
mapper where it has them, and the simulators that can run it. A `Simulator` runs a fixed-point network on coded
inputs and returns a SimulationResult.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from ..errors import ConfigError, NotSupportedError
from ..registry import Registry
from .constants import KINDS, EnergyConstant, EnergyTable, energy_table_from_json, load_energy_table

# (layer operation counts (toolchain.analysis.energy.LayerOps), the target's constants, precision) -> pJ by term
EnergyFormula = Callable[[object, EnergyTable, str], Dict[str, float]]


@dataclass(frozen=True)
class HardwareTarget:
    name: str
    summary: str                                    # one line, for the CLI
    energy_file: Path                               # its energy.json
    snn_energy: EnergyFormula                       # the SNN's energy of one layer
    ann_energy: Optional[EnergyFormula] = None      # how it prices the equivalent ANN, if it does
    ann_model: Optional[Callable[[EnergyTable, str], str]] = None       # that formula in words
    ann_constants: Callable[[str], Tuple[str, ...]] = lambda precision: ()  # the constants it reads
    ann_target: Optional[str] = None                # the target that prices the ANN beside it (None: itself)
    graded_input_note: str = ""                     # a report note where graded/direct input is charged
    limits_file: Optional[Path] = None              # its resource limits (cores, neurons, memory, axons)
    fit: Optional[Callable] = None                  # (FxNetwork, conv_weights) -> fit report
    simulators: Tuple[str, ...] = ()                # the simulator backends that can run it

    def energy(self) -> EnergyTable:
        return _energy_table(self.energy_file)

    def ann_pricing(self) -> "HardwareTarget":
        """The target whose ANN formula prices the equivalent ANN in this target's reports."""
        target = self if self.ann_target is None else TARGETS.get(self.ann_target)
        if target.ann_energy is None or target.ann_model is None:
            raise NotSupportedError(f"hardware target '{target.name}' does not price an ANN")
        return target

    def check_fit(self, net, conv_weights: str = "shared"):
        if self.fit is None:
            raise NotSupportedError(f"hardware target '{self.name}' has no fit mapper (no resource limits)")
        return self.fit(net, conv_weights)


@functools.lru_cache(maxsize=None)
def _energy_table(path: Path) -> EnergyTable:
    return load_energy_table(path)


@dataclass(frozen=True)
class Simulator:
    name: str
    summary: str
    # (net: FxNetwork, inputs (N, T, *input_shape) integers, labels, source: the netx file the network came from or
    #  None, fixed_point, hardware: one of `hardware`, device, progress) -> SimulationResult
    run: Callable
    hardware: Tuple[str, ...] = ("sim",)            # where it runs: "sim" (this machine) or a chip
    fixed_point_only: bool = True
    verify: Optional[Callable] = None               # (net or netx path, inputs, progress) -> report against the emulator
    # (net, inputs (N, max T, ...), steps, labels, device) -> {T: SimulationResult}: every T of `steps` from one run
    # of the longest (its first T steps), or None: one run per T
    run_prefixes: Optional[Callable] = None

    def check(self, fixed_point: bool, hardware: str) -> None:
        """ConfigError unless it can run fixed point (or float) on `hardware`, naming the simulators that can."""
        if hardware in self.hardware and (fixed_point or not self.fixed_point_only):
            return
        what = f"{'fixed' if fixed_point else 'floating'} point on {hardware}"
        able = [s.name for s in SIMULATORS.entries() if hardware in s.hardware and (fixed_point or not s.fixed_point_only)]
        raise ConfigError(f"simulator '{self.name}' cannot run {what}; "
                          + (f"use --backend {' or '.join(able)}" if able else "no registered simulator can"))

    def compare(self, net, inputs, progress: bool = False, source=None):
        """Compare with the emulator on chip input; `source`: the netx file `net` (an FxNetwork) was read from."""
        if self.verify is None:
            raise NotSupportedError(f"simulator '{self.name}' cannot be verified against the emulator")
        if source is None:
            return self.verify(net, inputs, progress)
        return self.verify(net, inputs, progress, source=source)


TARGETS: Registry[HardwareTarget] = Registry("hardware target")
SIMULATORS: Registry[Simulator] = Registry("simulator")

__all__ = ["KINDS", "EnergyConstant", "EnergyTable", "EnergyFormula", "HardwareTarget", "SIMULATORS", "Simulator",
           "TARGETS", "energy_table_from_json", "load_energy_table"]

"""Stages 4-6: SNN checkpoint -> fixed-point network -> netx file -> simulation result.

`export_snn` quantizes and writes the netx file; `encode_for_chip` turns normalized images into
what the chip receives each step; `simulate` runs a netx file on a backend (the bit-exact
emulator or Lava's simulator, or Loihi 2 where lava-loihi is installed) and returns a
SimulationResult. The toolchain's evaluation of the quantized network is the emulator run:
the same readout as the chip (the output layer's voltage at the last step).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .io.checkpoint import Checkpoint
from .data.datasets import RECORDED_KEYS
from .coding import CODINGS, chip_input
from .errors import ConfigError, DeploymentWarning, HardwareFitError, HardwareFitWarning, SimulationError
from .limits import check_fixed_point_run
from .quantization.fixed_point import STATE_MAX, FxNetwork, SimulationResult
from .io.files import refuse_overwrite
from .io.netx import read_netx, write_netx
from .quantization.quantize import QuantReport, quantize_snn
from .targets import SIMULATORS, TARGETS

FIT_TARGET = "loihi2"             # the hardware target export checks the network against
EMULATOR_DEFAULT_ABOVE = 32      # samples: Lava for small runs, the emulator above (both give the same result)


@dataclass
class ExportResult:
    """What export gives: the fixed-point network, its quantization report (with the Loihi 2 fit in `report.fit`)
    and the netx file written, if any. `net, report = export_snn(...)` still unpacks (the form before 0.2)."""
    network: FxNetwork
    report: QuantReport
    path: Optional[str] = None

    def __iter__(self):
        return iter((self.network, self.report))


def export_snn(ckpt: Checkpoint, path: Optional[str] = None, train_x: Optional[np.ndarray] = None,
               allow_misfit: bool = False, overwrite: bool = False) -> ExportResult:
    """Quantize an SNN checkpoint and, with `path`, write it as a netx file (atomically; an existing file only with
    `overwrite`). A network that does not fit Loihi 2 (its fit mapper) raises HardwareFitError, naming the layer
    and the limit, before anything is written, unless `allow_misfit` (the file is then still useful for
    simulation). `train_x`: the training images, from which a graded coding's input scale is set."""
    refuse_overwrite(path, overwrite)
    net, report = quantize_snn(ckpt, train_x)
    fit = TARGETS.get(FIT_TARGET).check_fit(net)
    if not fit.fits and not allow_misfit:
        raise HardwareFitError(f"does not fit Loihi 2: {'; '.join(fit.problems)} (nothing written; --allow-misfit "
                               f"writes it anyway, for simulation)")
    report.fit = fit
    report.warn(stacklevel=2)
    for message in fit.warnings:
        warnings.warn(message, HardwareFitWarning, stacklevel=2)
    net.metadata["dataset_info"] = {k: ckpt.dataset.get(k) for k in ("name", "fingerprint") + RECORDED_KEYS
                                    if k in ckpt.dataset}
    from . import __version__
    if path is not None:
        write_netx(net, path, extra_metadata={"toolchain_version": __version__, "quantization": report.to_json(),
                                              "source_checkpoint_metrics": ckpt.metrics})
    return ExportResult(net, report, None if path is None else str(path))


def encode_for_chip(net: FxNetwork, x: np.ndarray, seed: int = 0, timesteps: Optional[int] = None) -> np.ndarray:
    """Normalized images (N, *input_shape) -> integer chip input (N, T, *input_shape), by the network's input coding:
    each step what the deployed network receives in training (toolchain.coding.chip_input), e.g. signed spikes from
    the same seeded coder the toolchain trains and evaluates with (poisson), round(x * input_scale) (direct)."""
    T = timesteps or net.timesteps
    x = np.asarray(x, dtype=np.float32)
    expected = tuple(net.input_shape)
    if x.shape[1:] != expected:
        if int(np.prod(x.shape[1:])) != int(np.prod(expected)):
            raise ConfigError(f"inputs have shape {x.shape[1:]}, the network expects {expected}")
        x = x.reshape((len(x),) + expected)        # the same values in the network's shape: (1, 28, 28) -> (784,)
    coding = CODINGS.get(net.input_coding)
    return chip_input(coding, x, net.input_scale if coding.graded else None, T, seed=seed)


def simulate(net_or_path, x: np.ndarray, labels: Optional[np.ndarray] = None, timesteps: Optional[int] = None,
             backend: Optional[str] = None, fixed_point: bool = True, target: str = "sim", seed: int = 0,
             device: Optional[str] = None, progress: bool = True) -> SimulationResult:
    """Run images x through a netx file (or FxNetwork) on a backend; returns the result, the network that ran in its
    `network` (`net, result = simulate(...)`, the form before 0.2, still unpacks)."""
    net = read_netx(net_or_path, timesteps=timesteps) if isinstance(net_or_path, (str, os.PathLike)) else net_or_path
    if timesteps:
        net.timesteps = int(timesteps)
    inputs = encode_for_chip(net, x, seed=seed, timesteps=net.timesteps)
    # the user's own file goes to the stock loader, unless the time steps were changed
    source = net_or_path if isinstance(net_or_path, (str, os.PathLike)) and not timesteps else None
    result = run_chip_input(net, inputs, labels, source=source, backend=backend, fixed_point=fixed_point,
                            target=target, device=device, progress=progress)
    return result


def run_chip_input(net: FxNetwork, inputs: np.ndarray, labels: Optional[np.ndarray] = None, source=None,
                   backend: Optional[str] = None, fixed_point: bool = True, target: str = "sim",
                   device: Optional[str] = None, progress: bool = True) -> SimulationResult:
    """Run chip input (N, T, *input_shape) integers through `net` on a backend (Lava builds it from `source`, the
    netx file it came from, when given: the stock loader on the user's own file)."""
    backend = backend or ("emulator" if len(inputs) > EMULATOR_DEFAULT_ABOVE and target == "sim" and fixed_point
                          else "lava")
    simulator = SIMULATORS.get(backend)
    simulator.check(fixed_point, target)
    check_fixed_point_run(net, len(inputs), net.timesteps, f"simulating on {backend}", emulator=backend == "emulator")
    try:
        result = simulator.run(net, inputs, labels, source=source, fixed_point=fixed_point, hardware=target,
                               device=device, progress=progress)
    except SimulationError:
        raise
    except NotImplementedError as exc:
        raise SimulationError(f"{backend} cannot run this network: {exc}") from None
    result.network = net
    saturated = saturated_outputs(net, result)
    if saturated:
        warnings.warn(f"{saturated} of {result.samples} samples drove an output voltage to the 24-bit limit; "
                      f"{SATURATION_ADVICE}", DeploymentWarning, stacklevel=3)
    return result


SATURATION_ADVICE = "the readout saturates (fine-tune with --neuron loihi-cuba, which trains with this limit)"


def saturated_outputs(net: FxNetwork, result: SimulationResult) -> int:
    """Samples whose output-layer voltage reached Loihi's 24-bit limit (readout 'voltage')."""
    if net.readout != "voltage" or result.output_values is None:
        return 0
    return int((np.abs(np.asarray(result.output_values)) >= STATE_MAX).any(axis=1).sum())

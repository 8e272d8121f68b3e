"""A sweep over time steps: at each T the SNN's accuracy (with a 95% confidence interval), its spikes, and the
deployed network's accuracy and energy per inference on a hardware target; and the T to deploy, the smallest T
within a tolerance of the best accuracy.

The SNN's accuracy and spikes are the toolchain's evaluation of the checkpoint (`evaluate_snn`, as `snntc
evaluate`). The energy needs the spikes of the network as it runs on the chip: the checkpoint is quantized once
(`quantize_snn`, as `snntc export`) and run on the bit-exact emulator at each T (as `snntc simulate`, whose
accuracy is Lava's), and its counted operations are priced on the target (as `snntc energy`)."""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from ..errors import ConfigError, DeploymentWarning, ToolchainError
from ..io.files import atomic_write

Z_95 = 1.959964                      # the normal quantile of a two-sided 95% interval
ACCURACY_SOURCES = ("snn", "deployed")


def wilson_interval(correct: int, n: int, z: float = Z_95):
    """Wilson's score interval of a binomial proportion (correct / n): unlike the normal approximation it stays
    inside [0, 1] and is not empty at 0% or 100%, which a small subset of samples often gives."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if correct == 0 else low), (1.0 if correct == n else high)     # exact ends, not 1 - 1e-16


@dataclass
class SweepPoint:
    """One T of a sweep. Accuracies are fractions; energies pJ per inference."""
    timesteps: int
    accuracy: float
    accuracy_low: float                      # 95% interval (Wilson) of `accuracy` on this many samples
    accuracy_high: float
    spikes_per_inference: float
    deployed_accuracy: Optional[float] = None
    snn_energy_pj: Optional[float] = None
    ann_energy_pj: Optional[float] = None


@dataclass
class SweepResult:
    """A sweep over time steps (`points`, in increasing T) and the T it recommends."""
    model: str
    samples: int
    target: Optional[str]
    tolerance: float
    chosen_on: str                           # which accuracy the recommendation reads: "snn" or "deployed"
    points: List[SweepPoint]
    recommended_timesteps: int
    best_accuracy: float
    wall_time_s: float = 0.0
    notes: List[str] = field(default_factory=list)

    def to_json(self) -> dict:
        data = asdict(self)
        data["points"] = [asdict(p) for p in self.points]
        return data

    def format_table(self) -> str:
        energy = any(p.snn_energy_pj is not None for p in self.points)
        head = f"{'T':>5} {'accuracy':>9} {'95% interval':>16} {'spikes/inf':>11}"
        if energy:
            head += f" {'deployed':>9} {'energy (' + str(self.target) + ')':>18} {'ANN':>10}"
        lines = [head]
        from .energy import format_pj
        for p in self.points:
            row = (f"{p.timesteps:>5} {p.accuracy:>9.2%} {p.accuracy_low:>7.2%} - {p.accuracy_high:<6.2%} "
                   f"{p.spikes_per_inference:>11.1f}")
            if energy and p.snn_energy_pj is not None:
                row += f" {p.deployed_accuracy:>9.2%} {format_pj(p.snn_energy_pj):>18} {format_pj(p.ann_energy_pj):>10}"
            if p.timesteps == self.recommended_timesteps:
                row += "   <- recommended"
            lines.append(row)
        source = "the SNN's" if self.chosen_on == "snn" else "the deployed network's"
        lines.append(f"recommended T={self.recommended_timesteps}: the smallest T whose accuracy ({source}, on "
                     f"{self.samples} test samples) is within {self.tolerance:.2%} of the best, {self.best_accuracy:.2%}")
        return "\n".join(lines + self.notes)


def recommend(points: Sequence[SweepPoint], tolerance: float, chosen_on: str = "snn"):
    """(the smallest T whose accuracy is within `tolerance` of the best, the best accuracy)."""
    def accuracy(p):
        return p.accuracy if chosen_on == "snn" else p.deployed_accuracy
    best = max(accuracy(p) for p in points)
    return min(p.timesteps for p in points if accuracy(p) >= best - tolerance - 1e-12), best


def sweep_timesteps(ckpt, x: np.ndarray, y: np.ndarray, timesteps: Sequence[int], target: Optional[str] = "loihi",
                    tolerance: float = 0.01, chosen_on: str = "snn", train_x: Optional[np.ndarray] = None,
                    seed: int = 0, device: str = "cpu", name: str = "") -> SweepResult:
    """Sweep an SNN checkpoint over `timesteps` on the samples (x, y). With a `target` (a registered hardware
    target) the checkpoint is also quantized (with `train_x` for its input scale, as export) and run on the
    emulator at each T for the deployed accuracy and the energy; a network that cannot be deployed is swept without
    them (a note says why)."""
    from ..training.evaluate import evaluate_snn, load_snn
    if not timesteps:
        raise ConfigError("a sweep needs at least one number of time steps")
    if not 0 <= tolerance < 1:
        raise ConfigError(f"the tolerance is a fraction of accuracy in [0, 1), got {tolerance}")
    if chosen_on not in ACCURACY_SOURCES:
        raise ConfigError(f"the recommendation reads {' or '.join(ACCURACY_SOURCES)} accuracy, not {chosen_on!r}")
    steps = sorted(set(int(T) for T in timesteps))
    start = time.time()
    results = evaluate_snn(load_snn(ckpt, device), x, y, steps, seed=seed)
    points = []
    for T in steps:
        r = results[T]
        low, high = wilson_interval(int(round(r["accuracy"] * len(x))), len(x))
        points.append(SweepPoint(T, r["accuracy"], low, high, r["spikes_per_inference"]))
    notes = []
    if target is not None:
        try:
            _deployed(ckpt, x, y, points, target, train_x, seed, device)
        except ToolchainError as exc:
            if chosen_on == "deployed":
                raise
            notes.append(f"no energy: the network cannot be deployed ({exc})")
            target = None
    elif chosen_on == "deployed":
        raise ConfigError("the deployed accuracy needs a hardware target")
    recommended, best = recommend(points, tolerance, chosen_on)
    return SweepResult(model=name, samples=int(len(x)), target=target, tolerance=tolerance, chosen_on=chosen_on,
                       points=points, recommended_timesteps=recommended, best_accuracy=best,
                       wall_time_s=time.time() - start, notes=notes)


def _deployed(ckpt, x, y, points: List[SweepPoint], target: str, train_x, seed: int, device: str) -> None:
    """Fill in each point's deployed accuracy and energy: quantize once, emulate, count and price at each T."""
    from ..analysis.energy import count_operations, estimate_energy
    from ..quantization.quantize import quantize_snn
    net, _ = quantize_snn(ckpt, train_x)          # its warnings are export's, once
    results = emulate_steps(net, x, y, [p.timesteps for p in points], seed, None if device == "cpu" else device)
    for p in points:
        net.timesteps = p.timesteps
        report = estimate_energy(count_operations(net, results[p.timesteps]), target)
        p.deployed_accuracy = results[p.timesteps].accuracy
        p.snn_energy_pj, p.ann_energy_pj = report.snn_total_pj, report.ann_total_pj


def emulate_steps(net, x, y, steps: Sequence[int], seed: int = 0, device=None, prefixes: bool = True) -> dict:
    """{T: SimulationResult} of the deployed network on the emulator at each T: one run of the longest T read at
    each shorter one (the emulator's `run_prefixes`) when the chip input of T steps is the first T steps of the
    longest one's (checked), otherwise one run per T. Saturated readouts warn once, naming the T."""
    from ..deploy import SATURATION_ADVICE, encode_for_chip, saturated_outputs, simulate
    from ..targets import SIMULATORS
    emulator = SIMULATORS.get("emulator")
    longest = encode_for_chip(net, x, seed=seed, timesteps=max(steps))
    prefixes = prefixes and emulator.run_prefixes is not None and all(
        np.array_equal(encode_for_chip(net, x, seed=seed, timesteps=T), longest[:, :T]) for T in steps)
    if prefixes:
        results = emulator.run_prefixes(net, longest, steps, y, device=device)
    else:
        results = {}
        for T in steps:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")           # the saturation warning, once below
                results[T] = simulate(net, x, y, timesteps=T, backend="emulator", seed=seed, device=device,
                                      progress=False)
    saturated = [T for T in steps if saturated_outputs(net, results[T])]
    if saturated:
        warnings.warn(f"at T={','.join(map(str, saturated))} some samples drove an output voltage to the 24-bit "
                      f"limit; {SATURATION_ADVICE}", DeploymentWarning, stacklevel=3)
    return results


def plot_sweep(result: SweepResult, path: str) -> str:
    """Accuracy (with its 95% interval) against T, energy per inference on a second axis, the recommended T marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [p.timesteps for p in result.points]
    acc = np.array([100 * p.accuracy for p in result.points])
    err = np.array([[100 * p.accuracy - 100 * p.accuracy_low for p in result.points],
                    [100 * p.accuracy_high - 100 * p.accuracy for p in result.points]])
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.errorbar(steps, acc, yerr=err, fmt="o-", capsize=3, label="SNN accuracy (95% interval)")
    if any(p.deployed_accuracy is not None for p in result.points):
        ax.plot(steps, [100 * p.deployed_accuracy for p in result.points], "s--", label="deployed (emulator)")
    ax.axvline(result.recommended_timesteps, color="green", linestyle=":",
               label=f"recommended T={result.recommended_timesteps}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps)
    ax.set_xticklabels([str(T) for T in steps])
    ax.set_xlabel("time steps T (log scale)")
    ax.set_ylabel(f"test accuracy (%), {result.samples} samples")
    handles, labels = ax.get_legend_handles_labels()
    if any(p.snn_energy_pj is not None for p in result.points):
        ax2 = ax.twinx()
        ax2.plot(steps, [p.snn_energy_pj / 1e6 for p in result.points], "^-", color="tab:red",
                 label=f"energy per inference on {result.target} (uJ)")
        ax2.set_ylabel("energy per inference (uJ)")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="lower right", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"{result.model}: accuracy and energy against time steps")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path

"""Check the emulator against Lava, spike for spike and voltage for voltage.

Both backends are run on the same samples; every layer's spikes and membrane voltages (v after
the step's spike reset, the value Lava's ``v`` Var holds) are compared at every step of every
sample's window (see ``hw_targets/simulators/lava.py`` for the window convention). The report gives
the number of mismatches and the first one (in the order sample, step, layer, neuron).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np


from .emulator import emulate
from .lava import _resolve, _run


@dataclass
class Mismatch:
    layer: str
    layer_index: int
    quantity: str             # "spike" | "voltage"
    neuron: tuple             # index in the layer's (C, H, W) / (F,) output
    sample: int
    step: int                 # 0-based step in the sample's window of this layer
    lava_step: int            # Lava's global time step (1-based)
    lava: int
    emulator: int

    def __str__(self) -> str:
        return (f"layer '{self.layer}' (#{self.layer_index}) {self.quantity} of neuron "
                f"{self.neuron}, sample {self.sample}, step {self.step} (Lava step "
                f"{self.lava_step}): Lava {self.lava}, emulator {self.emulator}")


@dataclass
class VerifyReport:
    samples: int
    timesteps: int
    layer_names: List[str]
    spike_mismatches: int
    voltage_mismatches: int
    first_mismatch: Optional[Mismatch]
    lava_spikes: List[int] = field(default_factory=list)       # total spikes per layer (Lava)
    emulator_spikes: List[int] = field(default_factory=list)
    lava_time_s: float = 0.0
    emulator_time_s: float = 0.0
    compared_values: int = 0

    @property
    def ok(self) -> bool:
        return self.spike_mismatches == 0 and self.voltage_mismatches == 0

    def summary(self) -> str:
        if self.ok:
            return (f"emulator matches Lava: {self.samples} samples x {self.timesteps} steps, "
                    f"{len(self.layer_names)} layers, {self.compared_values} values, "
                    f"0 mismatches (spikes per layer: {self.lava_spikes})")
        return (f"{self.spike_mismatches} spike and {self.voltage_mismatches} voltage "
                f"mismatches; first: {self.first_mismatch}")


def compare_traces(layer_names: List[str], lava_spikes, lava_voltages, emu_spikes,
                   emu_voltages):
    """Compare per-layer (N, T, *shape) spike and voltage arrays. Returns (spike mismatches,
    voltage mismatches, first Mismatch or None, number of compared values); "first" is the
    earliest in (sample, Lava time step, layer, neuron) order."""
    first: Optional[Mismatch] = None
    first_key = None
    n_spk = n_v = compared = 0
    for k, name in enumerate(layer_names):
        T = np.asarray(lava_spikes[k]).shape[1]
        pairs = (("spike", np.asarray(lava_spikes[k]).astype(np.int64),
                  np.asarray(emu_spikes[k]).astype(np.int64)),
                 ("voltage", np.asarray(lava_voltages[k]).astype(np.int64),
                  np.asarray(emu_voltages[k]).astype(np.int64)))
        for quantity, a, b in pairs:
            if a.shape != b.shape:
                raise ValueError(f"layer '{name}': {quantity} shapes differ: {a.shape} vs {b.shape}")
            diff = a != b
            cnt = int(diff.sum())
            compared += a.size
            if quantity == "spike":
                n_spk += cnt
            else:
                n_v += cnt
            if cnt:
                idx = np.argwhere(diff)
                order = np.lexsort(tuple(idx[:, j] for j in range(idx.shape[1] - 1, -1, -1)))
                i0 = tuple(int(v) for v in idx[order[0]])
                key = (i0[0], i0[1] + k, k, quantity != "spike")
                if first_key is None or key < first_key:
                    first_key = key
                    first = Mismatch(layer=name, layer_index=k, quantity=quantity,
                                     neuron=i0[2:], sample=i0[0], step=i0[1],
                                     lava_step=i0[0] * T + (k + 1) + i0[1] + 1,
                                     lava=int(a[i0]), emulator=int(b[i0]))
    return n_spk, n_v, first, compared


def verify(net, inputs, device=None, fixed_point: bool = True, progress: bool = False,
           input_shape=None, source=None) -> VerifyReport:
    """Run Lava (recording every layer's spikes and voltages at every step) and the emulator on
    ``inputs`` (N, T, *input_shape) and compare them. ``net``: an FxNetwork or a netx path; with an
    FxNetwork, ``source``: the netx file it was read from (Lava then loads that file)."""
    import shutil
    if source is not None:
        net_fx, path, tmpdir = _resolve(source, input_shape, net)
    else:
        net_fx, path, tmpdir = _resolve(net, input_shape)
    try:
        lava = _run(net_fx, path, inputs, fixed_point, "sim", progress, True, True, None)
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    t0 = time.perf_counter()
    emu = emulate(net_fx, np.asarray(inputs), device=device, record_voltages=True)
    emu_time = time.perf_counter() - t0
    N, T = lava.spikes[0].shape[:2]
    n_spk, n_v, first, compared = compare_traces(
        lava.layer_names, lava.spikes, lava.voltages,
        [s.numpy() for s in emu.spikes], [v.numpy() for v in emu.voltages])
    return VerifyReport(samples=int(N), timesteps=int(T), layer_names=list(lava.layer_names),
                        spike_mismatches=n_spk, voltage_mismatches=n_v, first_mismatch=first,
                        lava_spikes=[int(c.sum()) for c in lava.spike_counts],
                        emulator_spikes=[int(c.sum()) for c in emu.spike_counts],
                        lava_time_s=lava.wall_time_s, emulator_time_s=emu_time,
                        compared_values=compared)

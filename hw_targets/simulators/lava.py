"""Run an FxNetwork / netx file through Lava's own simulator (``lava.lib.dl.netx.hdf5.Network``).

Sample/step convention (what this module and ``hw_targets/emulator.py`` agree on)
----------------------------------------------------------------------------------
N samples of T steps are presented back to back through one ``lava.proc.io.source.RingBuffer``:
sample n's input step tau (1..T) is Lava's global step ``t = n*T + tau`` (Lava counts steps
from 1). Every netx block (synapse + LIF) delays by one step (the synapse sends on step t what
it accumulated on step t-1), so layer k (1-based, k = 1..L; the output layer is k = L) sees
sample n on the global steps

    window(n, k) = n*T + k + 1  ...  n*T + k + T          (local step tau = t - n*T - k)

and the run lasts ``N*T + L`` steps (the last L steps feed zeros). The network is built with
``reset_interval=T, reset_offset=1``: netx gives the neurons of its j-th block (0-based)
LIFReset with offset ``1 + 1 + j``, i.e. layer k's u and v are set to 0 at the start of
each of its windows (t % T == (k + 1) % T), before that step's update. At that moment the
layer's synapse buffer already holds the first step of the same sample (it was filled from
layer k-1's first window step), so every sample sees exactly the dynamics of the emulator
running it alone from zero state, synapse buffers included. Steps outside all windows
(t <= k, and t > N*T + k) are discarded. The readout voltage of sample n is the output layer's
v after the last step of its window (t = n*T + L + T), read with ``lava.proc.io.sink.Read``.

Cost: one compile and N*T + L steps in total, in one run whose recordings are read back in bulk at the end
when every layer's spikes over all steps fit RECORDING_BYTES, else in segments of ``segment_samples`` samples
(the source's data Var is replaced between segments; spikes are collected by
``lava.proc.io.sink.RingBuffer`` sinks sized to one segment).
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

from toolchain.errors import NetxError, SimulationError
from toolchain.quantization.fixed_point import FxNetwork, SimulationResult
from toolchain.io.netx import read_netx, write_netx

from .emulator import readout_values


@dataclass
class LavaRun:
    """Raw per-sample results of a Lava run (numpy, (C, H, W) order)."""
    layer_names: List[str]
    timesteps: int
    spike_counts: List[np.ndarray]          # per layer, summed over samples and window steps
    output_counts: np.ndarray               # (N, *out_shape) output spikes per sample
    v_end: np.ndarray                       # (N, *out_shape) output v after the window's last step
    input_event_counts: np.ndarray          # (*input_shape) non-zero input events
    spikes: Optional[List[np.ndarray]] = None     # per layer (N, T, *shape) bool
    voltages: Optional[List[np.ndarray]] = None   # per layer (N, T, *shape) int64
    wall_time_s: float = 0.0
    timing: Optional["LavaTiming"] = None


@dataclass
class LavaTiming:
    """Where a Lava run's time goes (seconds): building the netx processes, the first step (Lava compiles the
    network and starts its runtime on the first ``run``), the other steps, and reading the recordings back."""
    build_s: float = 0.0
    compile_s: float = 0.0          # the first run call: compile + start + one step
    steps_s: float = 0.0            # every later run call
    steps: int = 0                  # steps in those calls
    readback_s: float = 0.0         # sink/Read data.get() and their bookkeeping

    @property
    def per_step_s(self) -> float:
        """Steady state: seconds per step after the first."""
        return self.steps_s / self.steps if self.steps else float("nan")


# what importing lava-dl prints on every run (torch's cpp_extension on stderr, slayer's optional dataset on stdout)
IMPORT_NOISE = ("No CUDA runtime is found", "Prophesee Dataset Toolbox could not be found",
                "Only Prophesee DVS demo will not run properly", "prophesee-automotive-dataset-toolbox")


def import_netx():
    """lava.lib.dl.netx.hdf5, imported with the lines lava-dl and torch print at import time filtered out (other
    lines pass). Every use of lava-dl in the toolchain goes through here."""
    if "lava.lib.dl.netx.hdf5" not in sys.modules:
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                import lava.lib.dl.netx.hdf5  # noqa: F401
        finally:
            for stream, text in ((sys.stdout, out.getvalue()), (sys.stderr, err.getvalue())):
                kept = [line for line in text.splitlines() if not any(n in line for n in IMPORT_NOISE)]
                if any(line.strip() for line in kept):
                    print("\n".join(kept), file=stream)
    return sys.modules["lava.lib.dl.netx.hdf5"]


def _netx_block_models() -> dict:
    """netx's hierarchical processes only have fixed_pt-tagged (sub-process) models; to run
    their leaf processes in floating point they must be mapped explicitly."""
    import_netx()
    from lava.lib.dl.netx.blocks import models as bm
    from lava.lib.dl.netx.blocks import process as bp
    from lava.lib.dl.netx.hdf5 import Network, PyNetworkModel
    return {Network: PyNetworkModel, bp.Dense: bm.PyDenseModel, bp.Conv: bm.PyConvModel,
            bp.Input: bm.PyInputModel}


def _to_float_units(lnet, net: FxNetwork) -> None:
    """Give netx's blocks the parameters Lava's floating-point models expect. netx passes the fixed-point
    integers (du = iDecay - 1, weights shifted by netx's own exponent); the float LIF computes
    u = u * (1 - du) + a, v = v * (1 - dv) + u + bias_mant, spike v > vth, and the float Dense ignores the
    weight exponent. In synaptic-input units: du = i_decay / 4096, dv = v_decay / 4096, vth and bias as they
    are, dense weights as the integers. The float run then differs from fixed point only by the decays'
    rounding and the 24-bit limits."""
    for block, layer in zip(lnet.layers, net.layers):
        block.neuron.du.init = layer.i_decay / 4096.0
        block.neuron.dv.init = layer.v_decay / 4096.0
        block.neuron.vth.init = float(layer.vth)
        if layer.kind == "dense":
            block.synapse.weights.init = np.asarray(layer.weight, dtype=np.float64).reshape(
                block.synapse.weights.shape)


def _run_cfg(fixed_point: bool, target: str):
    tag = "fixed_pt" if fixed_point else "floating_pt"
    if target == "sim":
        from lava.magma.core.run_configs import Loihi2SimCfg
        if fixed_point:
            return Loihi2SimCfg(select_tag=tag)
        return Loihi2SimCfg(select_tag=tag, exception_proc_model_map=_netx_block_models())
    if target == "loihi2":
        try:
            from lava.utils import loihi
            installed = loihi.is_installed()
        except Exception:        # noqa: BLE001 - any import problem means "not available"
            installed = False
        if not installed:
            raise SimulationError("Loihi 2 hardware is not available here: lava-loihi is not "
                                  "installed (use target='sim' for Lava's CPU simulator)")
        from lava.magma.core.run_configs import Loihi2HwCfg
        return Loihi2HwCfg(select_tag=tag)
    raise SimulationError(f"unknown Lava target {target!r} (expected 'sim' or 'loihi2')")


def state_var(neuron):
    """The Var read as a layer's voltage: v (LIF), sigma (SigmaDelta, Sigma), the residue (Delta: an input layer's
    sigma-delta encoder), as hw_targets/simulators/sigma_delta.py says."""
    if hasattr(neuron, "v"):
        return neuron.v
    return neuron.residue if type(neuron).__name__ == "Delta" else neuron.sigma


def _to_lava(a: np.ndarray, chw: bool) -> np.ndarray:
    """(steps, C, H, W) -> (W, H, C, steps); (steps, F) -> (F, steps)."""
    if chw:
        return np.ascontiguousarray(a.transpose(3, 2, 1, 0))
    return np.ascontiguousarray(a.reshape(a.shape[0], -1).T)


def _from_lava(d: np.ndarray) -> np.ndarray:
    """(W, H, C, steps) -> (steps, C, H, W); (F, steps) -> (steps, F)."""
    return np.moveaxis(np.asarray(d), -1, 0).transpose((0,) + tuple(range(d.ndim - 1, 0, -1))) \
        if d.ndim > 2 else np.asarray(d).T


def _resolve(net_or_path, input_shape=None, net: Optional[FxNetwork] = None):
    """(FxNetwork, netx path, temp dir or None). A path is run as is (read_netx, or ``net`` when
    given, supplies the shapes and coding); an FxNetwork is written to a temporary netx file."""
    if isinstance(net_or_path, FxNetwork):
        tmpdir = tempfile.mkdtemp(prefix="snntc_lava_")
        path = Path(tmpdir) / "network.net"
        try:
            write_netx(net_or_path, path)
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        return net_or_path, path, tmpdir
    path = Path(net_or_path)
    return (net if net is not None else read_netx(path, input_shape=input_shape)), path, None


def run_lava_raw(net_or_path, inputs, fixed_point: bool = True, target: str = "sim",
                 progress: bool = True, record_steps: bool = False,
                 record_voltages: bool = False, segment_samples: Optional[int] = None,
                 input_shape=None, net: Optional[FxNetwork] = None) -> LavaRun:
    """Run the samples ``inputs`` (N, T, *input_shape) through Lava; see the module docstring.

    record_steps: also return every layer's spikes per window step; record_voltages: also every
    layer's v per step (one ``sink.Read`` per layer over the whole run; meant for small runs).
    """
    net, path, tmpdir = _resolve(net_or_path, input_shape, net)
    try:
        return _run(net, path, inputs, fixed_point, target, progress, record_steps,
                    record_voltages, segment_samples)
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _run(net: FxNetwork, path: Path, inputs, fixed_point, target, progress, record_steps,
         record_voltages, segment_samples) -> LavaRun:
    cfg = _run_cfg(fixed_point, target)
    Network = import_netx().Network
    from lava.proc.io import sink
    from lava.proc.io.source import RingBuffer as Source

    x = np.asarray(inputs)
    if x.ndim < 2:
        raise SimulationError(f"inputs must be (N, T, *input_shape), got shape {x.shape}")
    if tuple(x.shape[2:]) != tuple(net.input_shape):
        if int(np.prod(x.shape[2:])) != int(np.prod(net.input_shape)):
            raise SimulationError(f"inputs have shape {tuple(x.shape[2:])} per step; the network "
                                  f"expects {tuple(net.input_shape)}")
        x = x.reshape(x.shape[:2] + tuple(net.input_shape))
    if np.issubdtype(x.dtype, np.floating):
        if not np.all(x == np.round(x)):
            raise SimulationError("inputs must be integer-valued spikes")
    x = x.astype(np.int64)
    if x.size and (x.min() < -2 ** 31 or x.max() >= 2 ** 31):
        raise SimulationError("input values must fit Lava's int32 spike payload")
    N, T = int(x.shape[0]), int(x.shape[1])
    if N == 0 or T == 0:
        raise SimulationError("need at least one sample and one time step")
    in_events = (x != 0).sum(axis=(0, 1))

    t_start = time.perf_counter()
    timing = LavaTiming()
    if net.sigma_delta and not fixed_point:
        raise SimulationError("sigma-delta (SDNN) layers run in fixed point only here: their floating-point Lava "
                              "models take other units")
    net.check_input_feed()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), \
            np.errstate(divide="ignore", invalid="ignore"):     # netx prints/warns on its own
        warnings.filterwarnings("ignore", message="Reset is not supported with Sigma Delta")  # as the emulator
        try:
            # input_shape (x, y, f) matters only for a file without an input layer whose first
            # layer is a conv (slayer's export); an input layer in the file overrides it
            lnet = Network(net_config=str(path), input_message_bits=int(net.input_bits),
                           input_shape=tuple(int(s) for s in net.input_shape[::-1]),
                           reset_interval=T, reset_offset=1)
        except (NotImplementedError, RuntimeError, KeyError, ValueError, OSError) as e:
            raise NetxError(f"Lava's netx loader rejected {path}: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    L = len(lnet.layers)
    if L != len(net.layers):
        raise SimulationError(f"netx built {L} layers, the network has {len(net.layers)}")
    if not fixed_point:
        _to_float_units(lnet, net)
    total = N * T + L
    seg = _segment_steps(net, N, T, total, segment_samples, record_steps)
    in_chw = len(lnet.inp.shape) == 3                      # conv first: Lava wants (W, H, C)
    x_steps = x.reshape((N * T,) + tuple(net.input_shape))
    if not in_chw:
        x_steps = x_steps.reshape(N * T, -1)

    # an input layer with a neuron (netx's Input block) is fed as lava-dl feeds it: spikes into the neuron's a_in
    # (one step later than a synapse would pass them on, so that its window is layer 1's), or each sample as its
    # bias (bias_mant, set before the sample's window; no source)
    shift = 1 if net.input_neuron else 0
    bias_feed = net.input_neuron and net.input_feed == "bias"
    if bias_feed:
        segments = _bias_schedule(N, T, L)
        seg = T
    else:
        segments = [min(seg, total - t0) for t0 in range(0, total, seg)]

    def segment_data(t0: int) -> np.ndarray:
        """Input for global steps t0+1 .. t0+seg (zeros after the last sample)."""
        buf = np.zeros((seg,) + x_steps.shape[1:], dtype=np.int32)
        lo, hi = max(t0 - shift, 0), min(t0 + seg - shift, N * T)
        if hi > lo:
            buf[lo + shift - t0:hi + shift - t0] = x_steps[lo:hi]
        return _to_lava(buf, in_chw)

    src = None
    if not bias_feed:
        src = Source(data=segment_data(0))
        src.s_out.connect(lnet.in_layer.neuron.a_in if net.input_neuron else lnet.inp)
    sinks, counters = [], []
    for k, layer in enumerate(lnet.layers, start=1):
        if record_steps:
            s = sink.RingBuffer(shape=layer.out.shape, buffer=seg)
            layer.out.connect(s.a_in)
            sinks.append(s)
        else:           # counts only: one value per neuron (and per sample at the output) to read back
            from .lava_counting import WindowSpikeCounter
            c = WindowSpikeCounter(shape=layer.out.shape, first=k + 1, samples=N, timesteps=T, per_sample=(k == L))
            layer.out.connect(c.a_in)
            counters.append(c)
    n_pre = (L - 1) // T + 1          # reads of the output v before the first window ends
    v_reader = sink.Read(buffer=n_pre + N, interval=T, offset=(L - 1) % T)
    v_reader.connect_var(state_var(lnet.layers[-1].neuron))
    v_readers = []
    if record_voltages:
        for layer in lnet.layers:
            r = sink.Read(buffer=total)
            r.connect_var(state_var(layer.neuron))
            v_readers.append(r)

    shapes = [tuple(int(s) for s in l.output_shape) for l in net.layers]
    counts = [np.zeros(s, dtype=np.int64) for s in shapes]
    out_counts = np.zeros((N,) + shapes[-1], dtype=np.int64)
    spikes = [np.zeros((N, T) + s, dtype=np.int64 if l.sigma_delta else bool) for s, l in zip(shapes, net.layers)] \
        if record_steps else None

    def window(t: np.ndarray, k: int):
        rel = t - k - 1                       # k is 1-based
        n = rel // T
        ok = (rel >= 0) & (n < N)
        return ok, n, rel % T

    bar = None
    from toolchain.progress import bars_enabled
    if bars_enabled(progress):                # a bar on a terminal only: in a log each refresh would be a line
        from toolchain.progress import tqdm
        bar = tqdm(total=N, unit="sample", desc="lava", leave=False)
    done = 0
    timing.build_s = time.perf_counter() - t_start
    try:
        t0 = 0
        for steps in segments:
            if t0 > 0 and src is not None:
                src.data.set(segment_data(t0))
            if bias_feed:
                _set_input_bias(lnet, x, t0, T, N, in_chw)
            _timed_run(lnet, steps, cfg, timing, first=(t0 == 0))
            t_read = time.perf_counter()
            t = np.arange(t0 + 1, t0 + steps + 1)
            for k, s in enumerate(sinks, start=1):
                d = _from_lava(s.data.get())[(t - 1) % seg]
                ok, n, tau = window(t, k)
                if not ok.any():
                    continue
                dk = d[ok] != 0
                counts[k - 1] += dk.sum(axis=0)
                if k == L:
                    np.add.at(out_counts, n[ok], dk.astype(np.int64))
                if spikes is not None:             # a sigma-delta layer's graded messages as they are
                    spikes[k - 1][n[ok], tau[ok]] = d[ok] if net.layers[k - 1].sigma_delta else dk
            timing.readback_s += time.perf_counter() - t_read
            t0 += steps
            now = int(np.clip((t0 - L) // T, 0, N))
            if bar is not None and now > done:
                bar.update(now - done)
            done = now
        t_read = time.perf_counter()
        if counters:                      # Lava's (W, H, C) -> (C, H, W)
            for k, c in enumerate(counters, start=1):
                counts[k - 1] = np.asarray(c.counts.get()).T.astype(np.int64).reshape(shapes[k - 1])
            per = np.asarray(counters[-1].sample_counts.get())
            out_counts = np.stack([p.T for p in per]).astype(np.int64).reshape((N,) + shapes[-1])
        v_data = _from_lava(v_reader.data.get())
        v_end = v_data[n_pre:n_pre + N]
        v_end = v_end.astype(np.int64) if fixed_point else v_end.astype(np.float64)
        voltages = None
        if record_voltages:
            voltages = []
            t = np.arange(1, total + 1)
            for k, r in enumerate(v_readers, start=1):
                d = _from_lava(r.data.get()).astype(np.int64)
                ok, n, tau = window(t, k)
                vk = np.zeros((N, T) + shapes[k - 1], dtype=np.int64)
                vk[n[ok], tau[ok]] = d[ok]
                voltages.append(vk)
        timing.readback_s += time.perf_counter() - t_read
    finally:
        if bar is not None:
            bar.close()
        try:
            lnet.stop()
        except Exception:        # noqa: BLE001 - never mask the original error
            pass
    return LavaRun(layer_names=[l.name for l in net.layers], timesteps=T, spike_counts=counts,
                   output_counts=out_counts, v_end=v_end, input_event_counts=in_events,
                   spikes=spikes, voltages=voltages, wall_time_s=time.perf_counter() - t_start, timing=timing)


RECORDING_BYTES = 256 * 2 ** 20     # the sinks' buffers of one run (Lava holds them as int32)


def _segment_steps(net: FxNetwork, N: int, T: int, total: int, segment_samples: Optional[int],
                   record_steps: bool = True) -> int:
    """Steps per run call: all of them (one run, one bulk read-back) when the source's input and the recordings
    (every layer's spikes, when recorded step by step) over the whole run fit RECORDING_BYTES and no segment size
    is asked for, else whole samples per segment."""
    recorded = sum(int(np.prod(l.output_shape)) for l in net.layers) if record_steps else 0
    per_step = 4 * (int(np.prod(net.input_shape)) + recorded)
    if segment_samples is None:
        if per_step * total <= RECORDING_BYTES:
            return total
        segment_samples = max(1, RECORDING_BYTES // max(per_step * T, 1))
    return min(total, max(1, min(int(segment_samples), N)) * T)


def _bias_schedule(N: int, T: int, L: int) -> List[int]:
    """Run lengths for an input fed as the input neuron's bias: step 1, then one sample's window (global steps
    n*T + 2 .. n*T + T + 1 of layer 1) at a time, then the remaining L - 1 steps, in runs of at most T."""
    runs = [1] + [T] * N
    rest = L - 1
    while rest > 0:
        runs.append(min(T, rest))
        rest -= runs[-1]
    return runs


def _set_input_bias(lnet, x: np.ndarray, t0: int, T: int, N: int, chw: bool) -> None:
    """Before the run starting after global step t0: the input neuron's bias_mant is sample n's value during its
    window (t0 = n*T + 1), zero before the first and after the last."""
    n = (t0 - 1) // T if t0 >= 1 else -1
    if t0 >= 1 and (t0 - 1) % T:
        return                                         # the tail runs: keep the zero bias
    neuron = lnet.in_layer.neuron
    if 0 <= n < N:
        first = x[n, 0]
        if np.any(x[n] != first):
            raise SimulationError("an input fed as the input neuron's bias takes one value per sample: every step "
                                  "of a sample must be the same")
        value = first.transpose(2, 1, 0) if chw else first.reshape(-1)
    else:
        value = np.zeros(neuron.bias_mant.shape)
    value = ((np.asarray(value, dtype=np.int64) + 2 ** 15) % 2 ** 16 - 2 ** 15).astype(np.int16)
    if t0 == 0:
        neuron.bias_mant.init = value
    else:
        neuron.bias_mant.set(value)


def _timed_run(lnet, steps: int, cfg, timing: LavaTiming, first: bool) -> None:
    """Run ``steps`` steps; the very first call is split into one step (compile + start + 1 step, timed as
    compile_s) and the rest (timed as steady-state steps), which runs exactly the same steps."""
    from lava.magma.core.run_conditions import RunSteps
    if first:
        t0 = time.perf_counter()
        lnet.run(condition=RunSteps(num_steps=1), run_cfg=cfg)
        timing.compile_s = time.perf_counter() - t0
        steps -= 1
        if steps == 0:
            return
    t0 = time.perf_counter()
    lnet.run(condition=RunSteps(num_steps=steps), run_cfg=cfg)
    timing.steps_s += time.perf_counter() - t0
    timing.steps += steps


def run_lava(net_or_path: Union[FxNetwork, str, "os.PathLike[str]"], inputs, labels=None,
             fixed_point: bool = True, target: str = "sim", progress: bool = True,
             segment_samples: Optional[int] = None, input_shape=None, net: Optional[FxNetwork] = None
             ) -> SimulationResult:
    """Run the encoded samples ``inputs`` (N, T, *input_shape, integer numpy) through Lava's
    netx Network with Loihi2SimCfg (fixed_pt, or floating_pt when ``fixed_point=False``) or,
    with ``target='loihi2'``, Loihi2HwCfg (needs lava-loihi). Readout per ``net.readout``.
    ``input_shape`` (C, H, W): only for a netx file without an input layer that starts with a conv.
    ``net``: with a netx path, the FxNetwork read from it as it is fed (its shapes, input bits), so that
    read_netx is not called again.

    With ``fixed_point=False`` the blocks' parameters are converted to the units of Lava's floating-point
    models first (``_to_float_units``), so the float run computes the same network without rounding.
    ``wall_time_s`` includes building and compiling the Lava network.
    """
    t0 = time.perf_counter()
    _run_cfg(fixed_point, target)          # fail fast (e.g. no lava-loihi) before any work
    net, path, tmpdir = _resolve(net_or_path, input_shape, net)
    try:
        run = _run(net, path, inputs, fixed_point, target, progress, False, False,
                   segment_samples)
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    values, pred = readout_values(net, run.output_counts, run.v_end)
    return SimulationResult(
        backend="lava-loihi2" if target == "loihi2" else
        ("lava-fixed_pt" if fixed_point else "lava-floating_pt"),
        samples=int(run.output_counts.shape[0]), timesteps=run.timesteps, predictions=pred,
        labels=None if labels is None else np.asarray(labels).reshape(-1),
        layer_names=run.layer_names, spike_counts=run.spike_counts,
        input_spike_counts=run.input_event_counts, wall_time_s=time.perf_counter() - t0,
        output_values=values)

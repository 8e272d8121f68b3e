"""The bit-exact emulator against Lava's fixed_pt CPU simulation, steady state against steady state.

    python benchmarks/emulator_vs_lava.py [NETX_FILE ...] [--suite] [--samples 8,1024] [--timesteps 16]
                                          [--lava-samples 64] [--batch-size 64] [--device cpu|cuda] [--json FILE]

Networks (``--large``: also a PilotNet-shaped conv net for 3x66x200 images, LIF and sigma-delta): the benchmark's demo network (a random 5-layer conv net on 2x16x16 inputs: conv 2->8 3x3 p1 | conv 8->16
3x3 s2 p1 | conv 16->16 3x3 p1 (groups 2) | flatten+dense 1024->64 | dense 64->10), every NETX_FILE given, and with
``--suite`` each test network of the stock layer kinds (tests/netx_kinds.py). For each network and sample count N
it reports, measured in this one process on the same random inputs:

- Lava: build (the netx processes), compile (Lava's first ``run``: compile, start, one step), steady state
  (milliseconds per step over every later step), read-back (the sinks' recordings out of Lava), for
  min(N, --lava-samples) samples: Lava runs one sample after the other, so its cost per step does not depend on N;
  the samples/s of its steady state are 1 / (T x seconds per step);
- emulator: preparation (netx's weight handling, constants on the device) and steady-state samples/s on all N
  samples (after one warm-up batch; the best of --repeats runs);
- the ratio of the two steady states, and whether the emulator gave Lava's spike counts and output voltages on the
  samples Lava ran.

A network that Lava or the emulator cannot run is reported in one line, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from toolchain.quantization.fixed_point import FxLayer, FxNetwork  # noqa: E402


def random_conv_net(timesteps: int, seed: int = 0, input_bits: int = 0) -> FxNetwork:
    rng = np.random.default_rng(seed)

    def w(shape, lo=-100):
        return rng.integers(lo, 128, shape) * 2

    layers = [
        FxLayer("conv1", "conv", w((8, 2, 3, 3)), (2, 16, 16), (8, 16, 16), vth=2000,
                i_decay=1024, v_decay=256, padding=(1, 1)),
        FxLayer("conv2", "conv", w((16, 8, 3, 3)), (8, 16, 16), (16, 8, 8), vth=4000,
                i_decay=1024, v_decay=256, stride=(2, 2), padding=(1, 1)),
        FxLayer("conv3", "conv", w((16, 8, 3, 3)), (16, 8, 8), (16, 8, 8), vth=4000,
                i_decay=1024, v_decay=256, padding=(1, 1), groups=2),
        FxLayer("fc1", "dense", w((64, 1024), lo=-120), (16, 8, 8), (64,), vth=6000,
                i_decay=2048, v_decay=256, flatten_before=True),
        FxLayer("fc2", "dense", w((10, 64), lo=-110), (64,), (10,), vth=1500, is_output=True),
    ]
    if input_bits:
        layers[0].vth = min(2000 * 2 ** (input_bits - 1) // 4, 2 ** 17 - 1)
    return FxNetwork((2, 16, 16), layers, num_classes=10, timesteps=timesteps,
                     input_bits=input_bits, readout="spikes")


def pilotnet(timesteps: int, sigma_delta: bool, seed: int = 0) -> FxNetwork:
    """A PilotNet-shaped network for 3x66x200 driving images, as lava-dl's tutorials deploy it (random weights):
    conv 3->24 | 24->36 | 36->64 (3x3, stride 2) | conv 64->64 3x3 | flatten + dense 7040->100 | 100->50 | 50->10.
    With ``sigma_delta``: a Delta input layer, SigmaDelta layers and a Sigma output (the SDNN version), else CUBA LIF
    neurons on binary input spikes."""
    rng = np.random.default_rng(seed)
    neuron = "sdnn" if sigma_delta else "cuba"
    shapes = [(3, 66, 200), (24, 32, 99), (36, 15, 49), (64, 7, 24), (64, 5, 22)]
    layers = []
    if sigma_delta:
        layers.append(FxLayer("input", "input", np.zeros((0,), int), shapes[0], shapes[0], vth=4, neuron=neuron))
    for i in range(4):
        c_in, c_out = shapes[i][0], shapes[i + 1][0]
        w = rng.integers(*((-3, 4) if sigma_delta else (-60, 64)), (c_out, c_in, 3, 3)) * 2
        layers.append(FxLayer(f"conv{i + 1}", "conv", w, shapes[i], shapes[i + 1], neuron=neuron,
                              vth=(4 if sigma_delta else 600 + 300 * i), i_decay=1024, v_decay=256,
                              stride=(2, 2) if i < 3 else (1, 1)))
    sizes = [int(np.prod(shapes[-1])), 100, 50, 10]
    for j in range(3):
        w = rng.integers(*((-3, 4) if sigma_delta else (-64, 64)), (sizes[j + 1], sizes[j])) * 2
        last = j == 2
        layers.append(FxLayer(f"fc{j + 1}", "dense", w, (shapes[-1] if j == 0 else (sizes[j],)), (sizes[j + 1],),
                              vth=(0 if last else 4) if sigma_delta else 2000, i_decay=1024, v_decay=256,
                              flatten_before=(j == 0), is_output=last,
                              neuron=("sigma" if last else neuron) if sigma_delta else "cuba"))
    return FxNetwork(shapes[0], layers, num_classes=10, timesteps=timesteps, input_coding="direct",
                     input_bits=8 if sigma_delta else 0, readout="voltage" if sigma_delta else "spikes",
                     input_feed="spikes")


def video_inputs(net: FxNetwork, n: int, seed: int) -> np.ndarray:
    """Frames for a sigma-delta network: each sample a random image 0..255 drifting by a few levels per step."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 1) + tuple(net.input_shape))
    drift = rng.integers(-3, 4, (n, net.timesteps) + tuple(net.input_shape)).cumsum(axis=1)
    return np.clip(base + drift, 0, 255).astype(np.int32)


def make_inputs(net: FxNetwork, n: int, t: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n, t) + tuple(net.input_shape)
    if net.input_bits > 0:
        hi = 2 ** (min(net.input_bits, 8) - 1)
        return rng.integers(-hi, hi, shape).astype(np.int32)
    return (rng.random(shape) < 0.2).astype(np.int32)


def one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def bench_lava(net, source, x) -> dict:
    from hw_targets.simulators.lava import run_lava_raw
    run = run_lava_raw(source if source is not None else net, x, progress=False, net=net if source else None)
    t = run.timing
    T = int(x.shape[1])
    return {"samples": int(len(x)), "build_s": t.build_s, "compile_s": t.compile_s, "steady_ms_per_step":
            1e3 * t.per_step_s, "steady_steps": t.steps, "readback_s": t.readback_s, "wall_s": run.wall_time_s,
            "steady_samples_per_s": 1.0 / (T * t.per_step_s), "_run": run}


def bench_emulator(net, x, device, batch_size: int, repeats: int) -> dict:
    import torch
    from hw_targets.simulators.emulator import emulate, prepare
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    prepared = prepare(net, dev)
    sync()
    prep_s = time.perf_counter() - t0
    emulate(net, x[:min(len(x), batch_size)], device=dev, batch_size=batch_size, prepared=prepared)   # warm-up
    times = []
    for _ in range(max(1, repeats)):
        sync()
        t0 = time.perf_counter()
        trace = emulate(net, x, device=dev, batch_size=batch_size, prepared=prepared)
        sync()
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"samples": int(len(x)), "device": str(dev), "batch_size": batch_size, "prepare_s": prep_s,
            "steady_s": best, "steady_samples_per_s": len(x) / best, "_trace": trace}


def same_as_lava(lava_run, trace, n: int) -> bool:
    counts = [c[:n].sum(dim=0).numpy() for c in trace.spike_counts]
    v_end = trace.output_voltage[:n, -1].numpy()
    return (all(np.array_equal(a, b) for a, b in zip(lava_run.spike_counts, counts))
            and np.array_equal(lava_run.v_end.reshape(v_end.shape), v_end))


def bench_network(name: str, net: FxNetwork, source, sample_counts: List[int], args, inputs=None) -> List[dict]:
    rows = []
    T = int(net.timesteps)
    x_all = (inputs or (lambda net, n, seed: make_inputs(net, n, T, seed)))(net, max(sample_counts), args.seed + 1)
    lava_cache = {}
    for n in sample_counts:
        row = {"network": name, "samples": n, "timesteps": T, "layers": len(net.layers),
               "neurons": int(sum(l.neurons for l in net.layers))}
        n_lava = min(n, args.lava_samples)
        try:
            if n_lava not in lava_cache:
                lava_cache[n_lava] = bench_lava(net, source, x_all[:n_lava])
            row["lava"] = lava_cache[n_lava]
        except Exception as exc:          # noqa: BLE001 - one line per refused network, never a traceback
            row["lava_error"] = one_line(exc)
        try:
            row["emulator"] = bench_emulator(net, x_all[:n], args.device, args.batch_size, args.repeats)
        except Exception as exc:          # noqa: BLE001
            row["emulator_error"] = one_line(exc)
        if "lava" in row and "emulator" in row:
            row["ratio_steady"] = row["emulator"]["steady_samples_per_s"] / row["lava"]["steady_samples_per_s"]
            row["identical"] = same_as_lava(row["lava"]["_run"], row["emulator"]["_trace"], n_lava)
        rows.append(row)
        print_row(row)
    return rows


def print_row(row: dict) -> None:
    head = f"{row['network']:<22} N={row['samples']:<5} T={row['timesteps']:<3}"
    if "lava" in row:
        lv = row["lava"]
        lava = (f"Lava({lv['samples']}): build {lv['build_s']:.2f} s, compile {lv['compile_s']:.2f} s, "
                f"steady {lv['steady_ms_per_step']:.2f} ms/step = {lv['steady_samples_per_s']:.2f} samples/s, "
                f"read-back {lv['readback_s']:.2f} s")
    else:
        lava = f"Lava: cannot run it: {row['lava_error']}"
    if "emulator" in row:
        em = row["emulator"]
        emu = (f"emulator({em['device']}): prepare {em['prepare_s']:.3f} s, steady {em['steady_samples_per_s']:.1f} "
               f"samples/s")
    else:
        emu = f"emulator: cannot run it: {row['emulator_error']}"
    tail = ""
    if "ratio_steady" in row:
        tail = f" | steady-state ratio {row['ratio_steady']:.1f}x, identical to Lava: {row['identical']}"
    print(f"{head} | {lava} | {emu}{tail}", flush=True)


def networks(args):
    """(name, FxNetwork or None, netx path or None, error or None, inputs (net, n, seed) -> chip input or None)
    for every network asked for."""
    from toolchain.errors import ToolchainError
    from toolchain.io.netx import read_netx
    yield "demo (random conv)", random_conv_net(args.timesteps, args.seed, args.input_bits), None, None, None
    for path in args.netx:
        try:
            net = read_netx(path, timesteps=args.timesteps, input_shape=args.input_shape)
            yield os.path.basename(path), net, path, None, None
        except ToolchainError as exc:
            yield os.path.basename(path), None, path, one_line(exc), None
    if args.large:
        yield "pilotnet LIF", pilotnet(args.timesteps, False, args.seed), None, None, None
        yield "pilotnet SDNN", pilotnet(args.timesteps, True, args.seed), None, None, \
            lambda net, n, seed: video_inputs(net, n, seed)
    if args.suite:
        import tempfile
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        import netx_kinds
        for kind in netx_kinds.KINDS:
            try:        # a directory each: Lava's loader keeps its file open
                path = kind.write(tempfile.mkdtemp(prefix="snntc_bench_"))
                net = read_netx(path, timesteps=args.timesteps, input_shape=kind.input_shape)
                net.input_feed = kind.feed
                yield kind.name, net, str(path), None, kind.inputs
            except Exception as exc:          # noqa: BLE001 - one line, never a traceback
                yield kind.name, None, None, one_line(exc), None


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("netx", nargs="*", help="netx HDF5 files (the demo network is always run first)")
    ap.add_argument("--suite", action="store_true", help="also every test network of the stock layer kinds")
    ap.add_argument("--large", action="store_true",
                    help="also PilotNet-shaped networks for 3x66x200 images, with LIF and with sigma-delta neurons")
    ap.add_argument("--samples", default="8,1024", help="sample counts, comma-separated (default 8,1024)")
    ap.add_argument("--timesteps", type=int, default=16)
    ap.add_argument("--lava-samples", type=int, default=64,
                    help="at most this many samples through Lava (its cost per step does not depend on N)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="emulator runs per measurement (the best is kept)")
    ap.add_argument("--device", default=None, help="emulator device (default: cuda if available)")
    ap.add_argument("--input-bits", type=int, default=0, help="demo network: graded input bits")
    ap.add_argument("--input-shape", type=int, nargs="+", default=None,
                    help="(C H W) for netx files without an input layer that start with a conv")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of the emulator (default: torch's; on a loaded machine 1 can be faster)")
    ap.add_argument("--only", default=None, help="only the networks whose name contains this")
    ap.add_argument("--json", metavar="FILE", help="write every measurement as JSON")
    args = ap.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    try:
        sample_counts = [int(s) for s in args.samples.split(",") if s.strip()]
        if not sample_counts or min(sample_counts) < 1:
            raise ValueError
    except ValueError:
        print(f"--samples: expected positive integers like 8,1024, got {args.samples!r}", file=sys.stderr)
        return 2
    rows, failed = [], False
    for name, net, source, error, inputs in networks(args):
        if args.only and args.only not in name:
            continue
        if error is not None:
            print(f"{name:<22} cannot be read: {error}", flush=True)
            rows.append({"network": name, "error": error})
            failed = True
            continue
        got = bench_network(name, net, source, sample_counts, args, inputs)
        failed |= any("ratio_steady" not in r or not r["identical"] for r in got)
        rows.extend(got)
    if args.json:
        clean = [{k: ({kk: vv for kk, vv in v.items() if not kk.startswith("_")} if isinstance(v, dict) else v)
                  for k, v in r.items()} for r in rows]
        import torch
        with open(args.json, "w") as f:
            json.dump({"torch_threads": torch.get_num_threads(), "results": clean}, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

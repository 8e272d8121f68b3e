"""The toolchain's Lava runner against the stock netx network with the same monitors, on the same inputs.

    python benchmarks/lava_runner_vs_stock.py [NETX_FILE] [--samples 16] [--timesteps 16] [--repeats 2]

Stock: ``lava.lib.dl.netx.hdf5.Network`` of the file (reset_interval=T, reset_offset=1), a RingBuffer source holding
every step's input, a RingBuffer sink on every layer's output sized to the whole run and a Read of the output
layer's voltage every T steps; one ``run`` of N*T + L steps, then each recording read once. Ours:
``hw_targets.simulators.lava.run_lava_raw`` (the same processes and monitors, plus the windowing into per-sample
results). Both wall times include building and compiling; the ratio is ours / stock, and the spike counts of every
layer must be the same. Without a file: the benchmark's demo network (benchmarks/emulator_vs_lava.py).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from emulator_vs_lava import make_inputs, one_line, random_conv_net  # noqa: E402


def stock_run(path: str, x: np.ndarray, input_bits: int, T: int):
    """(seconds, per-layer spike totals) of the stock network with the same monitors as our runner."""
    from lava.lib.dl.netx.hdf5 import Network
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io import sink
    from lava.proc.io.source import RingBuffer
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        net = Network(net_config=path, input_message_bits=input_bits, reset_interval=T, reset_offset=1)
    N, L = len(x), len(net.layers)
    total = N * T + L
    steps = np.zeros((total,) + x.shape[2:], np.int32)
    steps[:N * T] = x.reshape((N * T,) + x.shape[2:])
    data = steps.reshape(total, -1).T if len(net.inp.shape) == 1 else steps.T
    source = RingBuffer(data=np.ascontiguousarray(data))
    source.s_out.connect(net.inp)
    sinks = []
    for layer in net.layers:
        s = sink.RingBuffer(shape=layer.out.shape, buffer=total)
        layer.out.connect(s.a_in)
        sinks.append(s)
    reader = sink.Read(buffer=(L - 1) // T + 1 + N, interval=T, offset=(L - 1) % T)
    reader.connect_var(net.layers[-1].neuron.v)
    try:
        net.run(condition=RunSteps(num_steps=total), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        recorded = [np.asarray(s.data.get()) for s in sinks]
        reader.data.get()
    finally:
        net.stop()
    wall = time.perf_counter() - t0
    totals = []
    for k, d in enumerate(recorded, start=1):          # layer k's windows: global steps k+1 .. N*T + k
        totals.append(int((np.moveaxis(d, -1, 0)[k:N * T + k] != 0).sum()))
    return wall, totals


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("netx", nargs="?", help="netx file (default: the demo network)")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--timesteps", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each side (the best is kept)")
    args = ap.parse_args(argv)
    from hw_targets.simulators.lava import run_lava_raw
    from toolchain.io.netx import read_netx, write_netx
    tmp = tempfile.mkdtemp(prefix="snntc_stock_")
    try:
        if args.netx:
            net, path = read_netx(args.netx, timesteps=args.timesteps), args.netx
        else:
            net, path = random_conv_net(args.timesteps), os.path.join(tmp, "demo.net")
            write_netx(net, path)
        x = make_inputs(net, args.samples, args.timesteps, 1)
        stock, ours = [], []
        for _ in range(max(1, args.repeats)):
            wall, stock_totals = stock_run(path, x, net.input_bits, args.timesteps)
            stock.append(wall)
            run = run_lava_raw(path, x, progress=False, net=net)
            ours.append(run.wall_time_s)
        same = stock_totals == [int(c.sum()) for c in run.spike_counts]
        print(f"{os.path.basename(path)}: {args.samples} samples x {args.timesteps} steps; stock netx with the same "
              f"monitors {min(stock):.2f} s, our runner {min(ours):.2f} s (read-back {run.timing.readback_s:.2f} s): "
              f"ours/stock {min(ours) / min(stock):.2f}x; same spike counts: {same}")
        return 0 if same else 1
    except Exception as exc:          # noqa: BLE001 - one line, never a traceback
        print(f"cannot compare: {one_line(exc)}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

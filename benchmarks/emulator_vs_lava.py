"""Throughput of the torch emulator vs Lava's fixed_pt CPU simulation on the same network and inputs.

    python benchmarks/emulator_vs_lava.py [NETX_FILE] [--samples 32] [--timesteps 16]
                                          [--batch-size 64] [--device cpu|cuda] [--input-bits 0]

Without a netx file it builds a random 5-layer conv net on 2x16x16 inputs:
conv 2->8 3x3 p1 | conv 8->16 3x3 s2 p1 | conv 16->16 3x3 p1 (groups 2) | flatten+dense 1024->64 |
dense 64->10. It prints samples/s of both, the ratio, the batch size, and whether the two
backends produced identical spike counts and predictions.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hw_targets.simulators.emulator import run_emulator  # noqa: E402
from hw_targets.simulators.lava import run_lava  # noqa: E402
from toolchain.quantization.fixed_point import FxLayer, FxNetwork  # noqa: E402
from toolchain.io.netx import read_netx  # noqa: E402


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


def make_inputs(net: FxNetwork, n: int, t: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n, t) + tuple(net.input_shape)
    if net.input_bits > 0:
        hi = 2 ** (net.input_bits - 1)
        return rng.integers(-hi, hi, shape).astype(np.int32)
    return (rng.random(shape) < 0.2).astype(np.int32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("netx", nargs="?", help="netx HDF5 file (default: a random 5-layer conv net)")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--timesteps", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default=None, help="emulator device (default: cuda if available)")
    ap.add_argument("--input-bits", type=int, default=0, help="random net only: graded input bits")
    ap.add_argument("--input-shape", type=int, nargs="+", default=None,
                    help="(C H W) for a netx file without an input layer that starts with a conv")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--emulator-repeat", type=int, default=8,
                    help="also time the emulator on the inputs tiled this many times (steady-state "
                         "throughput with full batches); 0 or 1 to skip")
    args = ap.parse_args(argv)

    if args.netx:
        net = read_netx(args.netx, timesteps=args.timesteps, input_shape=args.input_shape)
        source = args.netx
    else:
        net = random_conv_net(args.timesteps, args.seed, args.input_bits)
        source = "random 5-layer conv net (2x16x16)"
    x = make_inputs(net, args.samples, args.timesteps, args.seed + 1)
    print(f"network: {source}; {len(net.layers)} layers, "
          f"{sum(l.neurons for l in net.layers)} neurons; {args.samples} samples x "
          f"{args.timesteps} steps")

    net_or_path = args.netx if args.netx else net
    lava = run_lava(net_or_path, x, progress=True, input_shape=args.input_shape)
    lava_sps = args.samples / lava.wall_time_s

    run_emulator(net, x[: min(len(x), 2)], device=args.device, batch_size=args.batch_size)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        emu = run_emulator(net, x, device=args.device, batch_size=args.batch_size)
        times.append(time.perf_counter() - t0)
    emu_time = min(times)
    emu_sps = args.samples / emu_time

    same = (np.array_equal(lava.predictions, emu.predictions)
            and all(np.array_equal(a, b) for a, b in zip(lava.spike_counts, emu.spike_counts)))
    import torch
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"lava (fixed_pt, CPU, incl. build+compile): {lava.wall_time_s:8.2f} s  "
          f"{lava_sps:10.2f} samples/s")
    print(f"emulator ({device}, batch size {args.batch_size}):      {emu_time:8.3f} s  "
          f"{emu_sps:10.2f} samples/s")
    if args.emulator_repeat > 1:
        xr = np.concatenate([x] * args.emulator_repeat)
        t0 = time.perf_counter()
        run_emulator(net, xr, device=args.device, batch_size=args.batch_size)
        dt = time.perf_counter() - t0
        print(f"emulator on {len(xr)} samples (inputs tiled x{args.emulator_repeat}):  "
              f"{dt:8.3f} s  {len(xr) / dt:10.2f} samples/s")
    print(f"speed-up emulator/lava: {emu_sps / lava_sps:.1f}x; spikes per layer (Lava): "
          f"{[int(c.sum()) for c in lava.spike_counts]}; identical results: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

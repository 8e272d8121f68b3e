"""The emulator's achieved operations per second, layer by layer, against what torch reaches on the same shapes.

    python benchmarks/emulator_roofline.py [NETX_FILE] [--samples 256] [--timesteps 16] [--device cpu|cuda]
    python benchmarks/emulator_roofline.py --suite [--samples 1024] [--large-samples 16]

For each layer: the synapse's dense operations (2 x MACs over every sample and step, as if every input were
non-zero), the time the emulator spends on the layer (its synapse, exact float32 or float64 path as it chooses, plus
the CUBA neuron's recurrence over T steps), and the time of torch's own float32 conv2d / matmul on the same shapes
with nothing else (the roofline). The ratio roofline / emulator says how far the layer is from the machine's dense
limit; the neuron's share says where the rest goes. Without a file: the benchmark's demo network.

``--suite``: per network (the demo network, each stock layer kind of tests/netx_kinds.py, the PilotNet-shaped LIF and
sigma-delta networks), the emulator's whole steady-state run against the sum of its synapses' dense roofline (a
dense_rec layer counts its recurrent product too); input layers with a neuron have no synapse and count nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from emulator_vs_lava import make_inputs, random_conv_net  # noqa: E402


def best(fn, repeats: int, sync) -> float:
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> int:
    from hw_targets.simulators.emulator import _neuron, _synapse_batched, prepare, synaptic_bound
    from toolchain.io.netx import read_netx
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("netx", nargs="?")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--timesteps", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--large-samples", type=int, default=16, help="--suite: samples of the PilotNet-shaped networks")
    ap.add_argument("--suite", action="store_true",
                    help="network totals for the demo network, every stock layer kind and the PilotNet-shaped ones")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    if args.suite:
        return suite(args, dev, sync)
    net = read_netx(args.netx, timesteps=args.timesteps) if args.netx else random_conv_net(args.timesteps)
    if net.input_neuron or net.global_time_line:
        print("this network has an input neuron or runs on the global time line: per layer only with --suite's "
              "network totals", file=sys.stderr)
        return 2
    B, T = args.samples, args.timesteps
    x = torch.as_tensor(make_inputs(net, B, T, 1), device=dev)
    s_prev = (x != 0).to(torch.uint8) if net.input_bits == 0 else x.to(torch.float64)     # as emulate() feeds it
    prepared = prepare(net, dev)
    print(f"{dev}: {B} samples x {T} steps")
    print(f"{'layer':<8} {'kind':<6} {'GOP':>8} {'synapse s':>10} {'neuron s':>9} {'torch f32 s':>11} "
          f"{'emulator GOP/s':>15} {'roofline GOP/s':>15} {'roofline/emulator':>18}")
    with torch.no_grad():
        for k, p in enumerate(prepared):
            lay = p.layer
            if p.kind == "dense":
                macs = B * T * int(np.prod(p.in_shape)) * int(np.prod(p.out_shape))
                a32 = s_prev.reshape(B * T, -1).to(torch.float32)
                w32 = p.weight32
                roof = best(lambda: a32 @ w32, args.repeats, sync)
            else:
                kh, kw = lay.weight.shape[2:4]
                macs = B * T * int(np.prod(p.out_shape)) * (p.in_shape[0] // lay.groups) * kh * kw
                a32 = s_prev.reshape((B * T,) + p.in_shape).to(torch.float32)
                w32 = p.weight32
                roof = best(lambda: F.conv2d(a32, w32, stride=tuple(lay.stride), padding=tuple(lay.padding),
                                             dilation=tuple(lay.dilation), groups=int(lay.groups)), args.repeats, sync)
            syn = best(lambda: _synapse_batched(p, s_prev, B, T), args.repeats, sync)
            a = _synapse_batched(p, s_prev, B, T)
            bound = synaptic_bound(p, 1 if k or net.input_bits == 0 else int(x.abs().max()))
            neu = best(lambda: _neuron(p, a, False, k == len(prepared) - 1, bound), args.repeats, sync)
            s_out = _neuron(p, a, False, k == len(prepared) - 1, bound)[0]
            gop = 2 * macs / 1e9
            emu = gop / (syn + neu)
            print(f"{lay.name:<8} {p.kind:<6} {gop:>8.3f} {syn:>10.4f} {neu:>9.4f} {roof:>11.4f} {emu:>15.2f} "
                  f"{gop / roof:>15.2f} {(gop / roof) / emu:>18.1f}")
            s_prev = s_out                      # uint8 spikes, as emulate() passes them on
    return 0


def synapse_roofline(p, rows: int, repeats: int, sync, dev) -> tuple:
    """(dense operations, seconds) of torch's float32 conv2d / matmul on this layer's shapes for `rows` inputs
    (samples x steps), on random binary inputs: the dense roofline does not depend on the values."""
    lay = p.layer
    if p.kind in ("input", "input-bias"):
        return 0, 0.0
    if p.kind == "dense":
        a32 = (torch.rand((rows, int(np.prod(p.in_shape))), device=dev) < 0.2).to(torch.float32)
        ops = 2 * rows * int(np.prod(p.in_shape)) * int(np.prod(p.out_shape))
        if p.weight_rec is not None:
            ops += 2 * rows * int(np.prod(p.out_shape)) ** 2
        return ops, best(lambda: a32 @ p.weight32, repeats, sync) * (2 if p.weight_rec is not None else 1)
    kh, kw = lay.weight.shape[2:4]
    a32 = (torch.rand((rows,) + p.in_shape, device=dev) < 0.2).to(torch.float32)
    ops = 2 * rows * int(np.prod(p.out_shape)) * (p.in_shape[0] // lay.groups) * kh * kw
    return ops, best(lambda: F.conv2d(a32, p.weight32, stride=tuple(lay.stride), padding=tuple(lay.padding),
                                      dilation=tuple(lay.dilation), groups=int(lay.groups)), repeats, sync)


def suite(args, dev, sync) -> int:
    """Per network: the emulator's whole run (steady state, after a warm-up) against the sum of its synapses'
    dense roofline on the same shapes."""
    from types import SimpleNamespace
    from emulator_vs_lava import networks
    from hw_targets.simulators.emulator import emulate, prepare
    T = args.timesteps
    chosen = SimpleNamespace(timesteps=T, seed=0, input_bits=0, netx=[], input_shape=None, suite=True, large=True)
    default_inputs = lambda net, n, seed: make_inputs(net, n, T, seed)                      # noqa: E731
    nets = [(name, net, inputs or default_inputs) for name, net, _, _, inputs in networks(chosen) if net is not None]
    print(f"{dev}: T = {T}; samples: {args.samples} (PilotNet: {args.large_samples})")
    print(f"{'network':<22} {'GOP':>9} {'emulator s':>11} {'roofline s':>11} {'emulator GOP/s':>15} "
          f"{'roofline GOP/s':>15} {'roofline/emulator':>18}")
    for name, net, inputs in nets:
        n = args.large_samples if name.startswith("pilotnet") else args.samples
        x = inputs(net, n, 1)
        prepared = prepare(net, dev)
        emulate(net, x[:min(n, 8)], device=dev, prepared=prepared)                       # warm-up
        emu = best(lambda: emulate(net, x, device=dev, prepared=prepared), args.repeats, sync)
        totals = [synapse_roofline(p, n * T, args.repeats, sync, dev) for p in prepared]
        ops, roof = sum(t[0] for t in totals), sum(t[1] for t in totals)
        print(f"{name:<22} {ops / 1e9:>9.3f} {emu:>11.4f} {roof:>11.4f} {ops / 1e9 / emu:>15.2f} "
              f"{ops / 1e9 / roof:>15.2f} {emu / roof:>18.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

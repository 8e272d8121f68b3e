"""Event-driven against dense synapses: does skipping the zeros of sparse spikes beat the dense matmul roofline?

    python benchmarks/event_driven.py [--samples 64] [--timesteps 16] [--threads 1] [--densities 0.001,0.01,0.05,0.2]

For the dense (fully connected) layers of the benchmark's networks (the demo network's fc1 1024->64 and fc2 64->10,
the PilotNet-shaped network's fc1 7040->100) it times, on the same binary spikes (samples x steps rows), the dense
float32 matmul the emulator uses (exact: every partial sum is an integer below 2**24) against two event-driven forms
that touch only the non-zero inputs: torch's sparse CSR x dense product (timed with and without building the CSR
from the dense spikes, which the emulator would have to do), and a gather-and-sum of the weight rows of the active
inputs (index_add_). Both give the same integers as the dense product (checked). It reports each at the
spike densities measured in the emulator's run of that network and at the densities given. Conv layers are not
covered: an event-driven conv scatters a kernel per spike, which torch has no kernel for.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import warnings

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from emulator_vs_lava import make_inputs, pilotnet, random_conv_net  # noqa: E402


def best(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def gather_sum(s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Event-driven: for every spike (row r, input i), add weight row i to output row r."""
    rows, cols = s.nonzero(as_tuple=True)
    out = torch.zeros((s.shape[0], w.shape[1]), dtype=w.dtype)
    return out.index_add_(0, rows, w.index_select(0, cols))


def measure(s: torch.Tensor, w: torch.Tensor) -> dict:
    dense = best(lambda: s @ w)
    csr = s.to_sparse_csr()
    sparse = best(lambda: torch.sparse.mm(csr, w))
    gather = best(lambda: gather_sum(s, w))
    ref = s @ w
    assert torch.equal(torch.sparse.mm(csr, w), ref) and torch.equal(gather_sum(s, w), ref)
    return {"density": float(s.mean()), "dense_s": dense, "csr_s": sparse, "gather_s": gather,
            "csr_incl_conversion_s": best(lambda: torch.sparse.mm(s.to_sparse_csr(), w))}


def layer_inputs(net, samples: int):
    """(name, binary input spikes (samples*T, n_in) float32, weights (n_in, n_out) float32) of each dense layer, from
    the emulator's own run."""
    from hw_targets.simulators.emulator import emulate, prepare
    x = make_inputs(net, samples, net.timesteps, 1)
    trace = emulate(net, x, device="cpu", record_spikes=True)
    prepared = prepare(net, "cpu")
    for k, p in enumerate(prepared):
        if p.kind != "dense" or k == 0:
            continue
        s = trace.spikes[k - 1].reshape(samples * net.timesteps, -1).to(torch.float32)
        yield f"{p.layer.name} {s.shape[1]}->{p.weight32.shape[1]}", s, p.weight32


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--timesteps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--densities", default="0.001,0.01,0.05,0.2")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    densities = [float(d) for d in args.densities.split(",") if d.strip()]
    print(f"{'layer':<28} {'density':>8} {'dense ms':>9} {'CSR+build ms':>13} {'CSR ms':>8} {'gather ms':>10} "
          f"{'CSR+build / dense':>18}")
    rng = torch.Generator().manual_seed(0)
    for name, net in (("demo", random_conv_net(args.timesteps)), ("pilotnet", pilotnet(args.timesteps, False))):
        for layer, s, w in layer_inputs(net, args.samples):
            cases = [("measured", s)] + [(f"{d:g}", (torch.rand(s.shape, generator=rng) < d).to(torch.float32))
                                         for d in densities]
            for label, spikes in cases:
                m = measure(spikes, w)
                ratio = m["csr_incl_conversion_s"] / m["dense_s"]
                print(f"{name + ' ' + layer:<28} {m['density']:>8.4f} {1e3 * m['dense_s']:>9.3f} "
                      f"{1e3 * m['csr_incl_conversion_s']:>13.3f} {1e3 * m['csr_s']:>8.3f} {1e3 * m['gather_s']:>10.3f} "
                      f"{ratio:>17.2f}x"
                      f"{'  (measured)' if label == 'measured' else ''}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Exploding / vanishing gradients in a deep SNN trained directly, and how a tuned surrogate and batch
norm on the input currents fix them (Ledinauskas et al. 2020).

For a 14-layer plain SNN ('vgg-deep': 12 convs, a hidden and an output layer, no skip connections)
on the bundled digits, at initialization, T time steps, direct input coding: the norm of the
cross-entropy gradient w.r.t. every synaptic layer's weights, over several seeds, for surrogates of
different width and height (rectangular box: height `alpha` where |v / threshold - 1| < width / 2),
with and without batch norm. The first/last ratio is ||dL/dW|| of the first conv over that of the
output layer: about 1 when the gradient survives the depth, orders of magnitude off when it explodes
or vanishes.

    .venv/bin/python benchmarks/snn_gradients.py [--seeds 5] [--timesteps 10] [--json out.json] [--plot out.png]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import build_model  # noqa: E402
from toolchain.data import load_dataset  # noqa: E402
from toolchain.snn import SnnModel  # noqa: E402
from toolchain.neurons.surrogates import get_surrogate  # noqa: E402
from toolchain.training.direct import first_last_ratio, gradient_norms, snn_config_for  # noqa: E402

# name -> (surrogate name, width, height, batch norm)
SETTINGS = {
    "tuned (box w=1 h=0.5, BN)": ("rectangular", 1.0, 0.5, True),
    "box w=1 h=1, BN": ("rectangular", 1.0, 1.0, True),
    "too high (box w=1 h=4, BN)": ("rectangular", 1.0, 4.0, True),
    "too wide (box w=8 h=1, BN)": ("rectangular", 8.0, 1.0, True),
    "too low (box w=1 h=0.25, BN)": ("rectangular", 1.0, 0.25, True),
    "too narrow (box w=0.1 h=1, BN)": ("rectangular", 0.1, 1.0, True),
    "tuned box, no BN": ("rectangular", 1.0, 0.5, False),
    "fast-sigmoid default, BN": ("fast-sigmoid", None, None, True),
}


def measure(surrogate: str, width, height, batch_norm: bool, seed: int, timesteps: int = 10, batch: int = 64,
            model: str = "vgg-deep", device: str = "cpu", data=None) -> dict:
    """Per-layer gradient norms of a freshly initialized network (seeded) on one batch of digits."""
    data = data or load_dataset("digits")
    torch.manual_seed(seed)
    net = build_model(model, data.input_shape, data.num_classes, batch_norm=batch_norm, fc_dropout=0.0)
    spike_fn = get_surrogate(surrogate, alpha=height, width=width)
    snn = SnnModel(net, snn_config_for(net, timesteps, spike_fn)).to(device)
    idx = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(seed))[:batch].numpy()
    x = torch.as_tensor(data.train_x[idx]).to(device)
    y = torch.as_tensor(data.train_y[idx]).to(device)
    norms = gradient_norms(snn, x, y, timesteps)
    return {"norms": norms, "ratio": first_last_ratio(norms)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--timesteps", type=int, default=10)
    ap.add_argument("--model", default="vgg-deep")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args(argv)
    data = load_dataset("digits")
    results = {}
    start = time.time()
    print(f"{args.model}, T={args.timesteps}, digits batch of 64, at initialization; ratio = ||dL/dW|| first conv / output layer")
    print(f"{'setting':<34} {'ratio min':>10} {'median':>10} {'max':>10}   log10 ratio per seed")
    for label, (name, width, height, bn) in SETTINGS.items():
        runs = [measure(name, width, height, bn, seed, args.timesteps, model=args.model, device=args.device, data=data)
                for seed in range(args.seeds)]
        ratios = [r["ratio"] for r in runs]
        results[label] = {"surrogate": name, "width": width, "height": height, "batch_norm": bn, "ratios": ratios,
                          "norms": [r["norms"] for r in runs]}
        logs = " ".join(f"{math.log10(r):+.1f}" if r > 0 and math.isfinite(r) else str(r) for r in ratios)
        if all(math.isnan(r) for r in ratios):
            logs += "  (no gradient at all: no spike reaches the output at initialization)"
        print(f"{label:<34} {min(ratios):>10.3g} {float(np.median(ratios)):>10.3g} {max(ratios):>10.3g}   {logs}")
    print(f"({time.time() - start:.1f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for label, r in results.items():
            names = list(r["norms"][0])
            med = np.median(np.array([[n[k] for k in names] for n in r["norms"]]), 0)
            if not (med > 0).any():
                continue                # a silent network: no gradient to draw
            ax.semilogy(range(1, len(names) + 1), np.maximum(med, 1e-30), marker="o", markersize=3, label=label)
        ax.set_xlabel("synaptic layer (input -> output)")
        ax.set_ylabel("||dL/dW|| at initialization (median over seeds)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())

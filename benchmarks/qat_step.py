"""Seconds per fine-tuning step: quantization-aware (`--neuron loihi-cuba`) against float (`--neuron if`), the
same converted network at the same T and batch, side by side in one process.

    python benchmarks/qat_step.py [--model vgg-small] [--shapes 1x8x8,1x28x28] [--timesteps 5,10]
                                  [--batch-size 32] [--surrogates linear,stdb] [--steps 5] [--warmup 2]
                                  [--threads 2] [--coding direct] [--json FILE]

A step is what `snntc finetune` does per batch (benchmarks/stdb_step.py `training_step`: zero_grad, SnnModel
forward, cross-entropy, backward with the Adam update of each parameter as soon as its gradient is ready,
opt.step()), with the allocator set as training sets it. Per input shape and T, one network is built
(`models.build_model`, seeded) and converted by threshold balancing (the maximum input current of each spiking
layer on the batch, times --threshold-scale, as `snntc convert --coding direct --scale 0.5`); each side gets its
own copy of it and its own Adam:

- float: neuron "if" (reset by subtraction) on the network as written, pooling fused into the neurons, the
  compiled neuron kernels and the block-by-block spiking layers where available (toolchain/neurons/kernels/stack.py);
- QAT: neuron "loihi-cuba" on the lowered chain (pooling folded into the next layer), 8-bit fake-quantized
  weights and biases, integer direct input (round(x * input_scale), input_scale as `snntc finetune` sets it),
  Loihi CUBA neurons (reset to zero), the output layer read as its last step's voltage.

Both sides use the same surrogate. The steps alternate between the configurations (round robin, the order
rotated every round), so that other work on the machine slows all of them alike; the first --warmup rounds are
not timed; medians of --steps rounds are reported, with the ratio QAT / float per surrogate (of the medians,
and "paired": the median over rounds of each round's QAT step over its float step). Input: the bundled
digits, resized (bilinear) to the input shape. The 1-minute load average before and after is recorded.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from stdb_step import (_fmt, _surrogate, median, peak_rss_mb, spike_rates, training_step,  # noqa: E402
                       write_results)

SIDES = ("if", "loihi-cuba")


def parse_shape(text: str) -> tuple:
    """'1x28x28' -> (1, 28, 28)."""
    try:
        shape = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"bad input shape {text!r}: expected CxHxW, e.g. 1x28x28")
    if len(shape) != 3 or min(shape) < 1:
        raise SystemExit(f"bad input shape {text!r}: expected CxHxW, e.g. 1x28x28")
    return shape


def batch_of_digits(shape: tuple, batch: int):
    """(x, y): the first `batch` training digits, resized to `shape` (C, H, W)."""
    import torch
    import torch.nn.functional as F
    from toolchain.data import load_dataset

    data = load_dataset("digits")
    x = torch.as_tensor(data.train_x[:batch])
    y = torch.as_tensor(data.train_y[:batch])
    if tuple(x.shape[2:]) != shape[1:]:
        x = F.interpolate(x, size=shape[1:], mode="bilinear", align_corners=False)
    if shape[0] != x.shape[1]:
        x = x.repeat(1, shape[0], 1, 1)
    return x.contiguous(), y


def converted_models(model_name: str, shape: tuple, T: int, surrogate: dict, coding: str, scale: float, x):
    """{side: SnnModel}: one seeded network, thresholds balanced on x (max current x scale), a copy per side."""
    import torch
    from models import build_model
    from toolchain.coding import InputEncoder
    from toolchain.coding.direct import direct_input_scale
    from toolchain.snn import SnnConfig, SnnModel

    torch.manual_seed(0)
    net = build_model(model_name, shape, 10)
    base = SnnModel(net, SnnConfig(neuron="if", coding=coding, timesteps=T, surrogate=surrogate))
    base.calibrator = lambda name, currents: max(float(currents.max()), 1e-6) * scale
    with torch.no_grad():
        base(x, T, InputEncoder(coding, seed=0))
    base.calibrator = None
    models = {}
    for side in SIDES:
        m = copy.deepcopy(base)
        m.config.neuron = side
        if side == "loihi-cuba" and coding == "direct":      # as toolchain.finetune sets it
            m.config.input_scale = direct_input_scale(x.numpy())
        models[side] = m.train()
    return models


def measure(args, shape: tuple, T: int) -> list:
    """The configurations (side x surrogate) of one shape and T, stepped round robin; one result per configuration."""
    import torch
    from toolchain.neurons.kernels import native
    from toolchain.coding import InputEncoder
    from toolchain.training import TrainConfig, make_optimizer, release_optimizer

    x, y = batch_of_digits(shape, args.batch_size)
    runs = []
    for name in args.surrogates:
        for side, model in converted_models(args.model, shape, T, _surrogate(name), args.coding,
                                            args.threshold_scale, x).items():
            opt = make_optimizer([p for p in model.parameters() if p.requires_grad],
                                 TrainConfig(optimizer="adam", lr=1e-4), step_in_backward=True)
            runs.append({"side": side, "surrogate": name, "model": model, "opt": opt,
                         "enc": InputEncoder(args.coding, seed=1), "rec": {}, "rates": None})
    for r in range(args.warmup + args.steps):
        for k in range(len(runs)):
            run = runs[(k + r) % len(runs)]
            timing, out = training_step(run["model"], run["opt"], x, y, run["enc"], T)
            if run["rates"] is None:
                run["rates"] = spike_rates(out, args.batch_size, T)
            del out
            if r >= args.warmup:
                for key, value in timing.items():
                    run["rec"].setdefault(key, []).append(value)
    results = []
    for run in runs:
        res = {"model": args.model, "input_shape": list(shape), "timesteps": T, "batch_size": args.batch_size,
               "threads": args.threads, "coding": args.coding, "side": run["side"], "surrogate": run["surrogate"],
               **{key: median(values) for key, values in run["rec"].items()},
               "all_seconds": run["rec"]["seconds"], "spike_rates": run["rates"],
               "native_kernels": native.library() is not None, "torch": torch.__version__}
        results.append(res)
        release_optimizer(run["opt"])
    for res in results:
        if res["side"] == "loihi-cuba":
            ref = next(f for f in results if f["side"] == "if" and f["surrogate"] == res["surrogate"])
            res["ratio"] = res["seconds"] / ref["seconds"]
            # each round's QAT step over its float step (the same round, seconds apart): robust to load that drifts
            res["ratio_paired"] = median([q / f for q, f in zip(res["all_seconds"], ref["all_seconds"])])
    return results


def format_table(results) -> str:
    head = (f"{'shape':<8} {'T':>3} {'surrogate':<9} {'float s':>8} {'fwd':>7} {'bwd':>7} {'QAT s':>8} {'fwd':>7} "
            f"{'bwd':>7} {'QAT/float':>9} {'paired':>7}")
    rows = [head]
    for q in (r for r in results if r["side"] == "loihi-cuba"):
        f = next(r for r in results if r["side"] == "if" and r["surrogate"] == q["surrogate"]
                 and r["input_shape"] == q["input_shape"] and r["timesteps"] == q["timesteps"])
        shape = "x".join(str(d) for d in q["input_shape"])
        rows.append(f"{shape:<8} {q['timesteps']:>3} {q['surrogate']:<9} {f['seconds']:>8.4f} {f['forward']:>7.4f} "
                    f"{f['backward']:>7.4f} {q['seconds']:>8.4f} {q['forward']:>7.4f} {q['backward']:>7.4f} "
                    f"{q['ratio']:>8.2f}x {q['ratio_paired']:>6.2f}x")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vgg-small")
    p.add_argument("--shapes", default="1x8x8,1x28x28", help="comma-separated input shapes CxHxW")
    p.add_argument("--timesteps", default="5,10", help="comma-separated T values")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--surrogates", default="linear,stdb", help="comma-separated surrogates (both sides use each)")
    p.add_argument("--coding", default="direct", choices=("direct", "poisson"))
    p.add_argument("--threshold-scale", type=float, default=0.5, help="threshold balancing's scaling factor")
    p.add_argument("--steps", type=int, default=5, help="timed rounds (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="write the results to this file")
    args = p.parse_args(argv)
    args.surrogates = [s.strip() for s in args.surrogates.split(",") if s.strip()]
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1 or not args.surrogates:
        raise SystemExit("--steps and --batch-size must be >= 1, --warmup >= 0, and a surrogate given")

    import torch
    from toolchain.training.allocator import training_allocator

    torch.set_num_threads(args.threads)
    results, loads = [], []
    with training_allocator(True):             # as toolchain.training.train sets it on the CPU
        for shape in [parse_shape(s) for s in args.shapes.split(",") if s.strip()]:
            for T in [int(t) for t in args.timesteps.split(",") if t.strip()]:
                before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
                res = measure(args, shape, T)
                after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
                for r in res:
                    r["load_average_1min"] = [before, after]     # other work on the machine skews the timings
                results += res
                loads.append(f"{'x'.join(map(str, shape))} T={T}: load {_fmt(before)}->{_fmt(after)}")
    write_results(args.json, results)
    print(format_table(results))
    print("; ".join(loads) + f"; {args.threads} threads, batch {args.batch_size}, {args.coding} input, "
          f"medians of {args.steps} steps after {args.warmup} warm-up (paired: the median of each round's ratio); "
          f"peak {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

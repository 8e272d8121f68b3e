"""The hybrid method measured: the time steps it saves (steps ratio) for direct and Poisson input, and conversion of
networks with biases and batch norm, on the bundled datasets.

    python benchmarks/hybrid_method.py [--datasets digits,mnist5k] [--codings direct,poisson] [--hybrid-timesteps 5]
                                       [--ann-epochs N] [--finetune-epochs N] [--batch-norm] [--seed 0] [--json FILE]

Per dataset, the demo's preset (toolchain/demo.py: model, ANN epochs, augmentation, threshold scale) trains one
ANN; per input coding it is converted, the converted SNN is evaluated on the test split at
T = 1..200, and it is fine-tuned at the hybrid's T with the linear surrogate (the demo's recipe; the best epoch on
validation is kept). The steps ratio is the T the converted-only SNN needs to reach the hybrid's test accuracy,
divided by the hybrid's T (Rathi et al. report >= 10 on CIFAR and ImageNet); "within 0.5" is the same for reaching
the hybrid's accuracy minus half a point, which is less sensitive to one image more or less.

The demo's conversion (threshold scale 0.5, calibrated at the hybrid's T) is made for few steps, and it is what the
hybrid starts from. A conversion made for many steps (scale 1.0, calibrated over 100 steps: the thresholds of
conversion-only practice) is evaluated too, and the ratio is also given against the better of the two at each T
("best conversion": chosen on the test split, which only makes the ratio smaller).

With --batch-norm, an ANN with batch norm (folded into biases before conversion) is trained too and converted with
both threshold methods, direct input, scale 1.0, and evaluated at T = 200: the converted SNN should be within a
point of its ANN.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONVERTED_STEPS = [1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100, 200]
STEPS = list(CONVERTED_STEPS)          # what this run evaluates (--max-timesteps cuts it)


def ratio(converted: dict, target: float, hybrid_T: int):
    """First T at which the converted SNN reaches `target`, over the hybrid's T; None if it never does."""
    for T in sorted(converted):
        if converted[T] >= target:
            return T / hybrid_T
    return None


def converted_accuracy(snn, data, seed: int) -> dict:
    from toolchain.training.evaluate import evaluate_snn, load_snn
    return {T: r["accuracy"] for T, r in evaluate_snn(load_snn(snn), data.test_x, data.test_y, STEPS,
                                                      seed=seed).items()}


def measure_coding(ann, data, cfg, coding: str, hybrid_T: int, epochs: int, work: str) -> dict:
    from toolchain.convert import convert
    from toolchain.finetune import finetune
    from toolchain.training import TrainConfig
    snn = convert(ann, data, timesteps=hybrid_T, scale=cfg.threshold_scale, coding=coding, seed=cfg.seed)
    conv = converted_accuracy(snn, data, cfg.seed)
    long = converted_accuracy(convert(ann, data, timesteps=100, scale=1.0, coding=coding, seed=cfg.seed), data, cfg.seed)
    best = {T: max(conv[T], long[T]) for T in conv}
    recipe = next(r for r in cfg.recipes if r.surrogate == "linear")
    tc = TrainConfig(epochs=epochs or recipe.epochs, lr=recipe.lr, batch_size=32, seed=cfg.seed, augment=cfg.augment)
    hybrid = finetune(snn, data, tc, os.path.join(work, f"hybrid_{coding}.pt"), overwrite=True, timesteps=hybrid_T,
                      surrogate={"name": "linear"}, progress=False)
    acc = hybrid.metrics["test_accuracy"]
    return {"coding": coding, "converted": conv, "converted_long_calibration": long,
            "hybrid_timesteps": hybrid_T, "hybrid_accuracy": acc,
            "hybrid_val_accuracy": hybrid.metrics["val_accuracy"], "best_epoch": hybrid.metrics["best_epoch"],
            "steps_ratio": ratio(conv, acc, hybrid_T), "steps_ratio_within_half_point": ratio(conv, acc - 0.005, hybrid_T),
            "steps_ratio_best_conversion": ratio(best, acc, hybrid_T),
            "steps_ratio_best_conversion_within_half_point": ratio(best, acc - 0.005, hybrid_T),
            "converted_best": max(best.values())}


def measure_batch_norm(data, cfg, work: str) -> dict:
    from toolchain.ann import train_ann
    from toolchain.convert import convert
    from toolchain.training.evaluate import evaluate_snn, load_snn
    from toolchain.training import TrainConfig
    ann = train_ann(data, cfg.model, TrainConfig(epochs=cfg.ann_epochs, lr=cfg.ann_lr, seed=cfg.seed,
                                                 augment=cfg.augment),
                    os.path.join(work, "ann_bn.pt"), batch_norm=True, progress=False, overwrite=True)
    out = {"ann_accuracy": ann.metrics["test_accuracy"]}
    for method in ("spike", "activation"):
        snn = convert(ann, data, timesteps=100, method=method, scale=1.0, coding="direct",
                      percentile=99.9 if method == "activation" else 100.0)
        out[method] = evaluate_snn(load_snn(snn), data.test_x, data.test_y, [200])[200]["accuracy"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="digits,mnist5k")
    ap.add_argument("--codings", default="direct,poisson")
    ap.add_argument("--hybrid-timesteps", type=int, default=5)
    ap.add_argument("--ann-epochs", type=int, default=None, help="default: the demo preset's")
    ap.add_argument("--finetune-epochs", type=int, default=None, help="default: the demo preset's linear recipe")
    ap.add_argument("--batch-norm", action="store_true", help="also convert a batch-norm ANN at T=200")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="at most this many samples per split (smoke runs)")
    ap.add_argument("--max-timesteps", type=int, default=200, help="evaluate the converted SNN up to this T")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch
    from toolchain.ann import train_ann
    from toolchain.data import load_dataset
    from toolchain.demo import demo_config
    from toolchain.training import TrainConfig
    if args.threads:
        torch.set_num_threads(args.threads)
    STEPS[:] = [T for T in CONVERTED_STEPS if T <= args.max_timesteps]
    results = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.datasets.split(","):
            cfg = demo_config(name, ann_epochs=args.ann_epochs, seed=args.seed)
            data = load_dataset(cfg.dataset, seed=cfg.seed, limit=args.limit)
            start = time.time()
            ann = train_ann(data, cfg.model, TrainConfig(epochs=cfg.ann_epochs, lr=cfg.ann_lr, seed=cfg.seed,
                                                         augment=cfg.augment),
                            os.path.join(work, f"ann_{name}.pt"), progress=False)
            row = {"dataset": name, "model": cfg.model, "ann_accuracy": ann.metrics["test_accuracy"], "codings": []}
            for coding in args.codings.split(","):
                row["codings"].append(measure_coding(ann, data, cfg, coding, args.hybrid_timesteps,
                                                     args.finetune_epochs, work))
                print_row(name, cfg.model, row["ann_accuracy"], row["codings"][-1])
            if args.batch_norm:
                row["batch_norm"] = measure_batch_norm(data, cfg, work)
                bn = row["batch_norm"]
                print(f"{name} {cfg.model} with batch norm: ANN {bn['ann_accuracy']:.2%}, converted at T=200 (direct, "
                      f"scale 1.0): spike method {bn['spike']:.2%}, activation method {bn['activation']:.2%}", flush=True)
            row["wall_time_s"] = time.time() - start
            results.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "args": vars(args)}, f, indent=2)
    return 0


def print_row(name, model, ann_acc, r) -> None:
    shown = (3, 5, 10, 20, 50, 200)
    conv = ", ".join(f"T={T} {a:.1%}" for T, a in r["converted"].items() if T in shown)
    long = ", ".join(f"T={T} {a:.1%}" for T, a in r["converted_long_calibration"].items() if T in shown)
    fmt = lambda x: "never (T<=200)" if x is None else f"{x:.1f}"   # noqa: E731
    print(f"{name} {model} {r['coding']}: ANN {ann_acc:.2%}; converted for few steps {conv}; for many steps {long} "
          f"(best {r['converted_best']:.2%}); hybrid T={r['hybrid_timesteps']} {r['hybrid_accuracy']:.2%} (validation "
          f"{r['hybrid_val_accuracy']:.2%}, epoch {r['best_epoch']}); steps ratio {fmt(r['steps_ratio'])} (within 0.5 "
          f"point {fmt(r['steps_ratio_within_half_point'])}); against the best conversion "
          f"{fmt(r['steps_ratio_best_conversion'])} (within 0.5 point "
          f"{fmt(r['steps_ratio_best_conversion_within_half_point'])})", flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""The end-to-end demo on the bundled digits: train -> convert -> fine-tune (STDB) -> evaluate,
then quantize -> export netx -> simulate in Lava -> energy. Every artifact lands in `out_dir`."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from .ann import train_ann
from .checkpoint import save_checkpoint
from .convert import convert
from .data import load_dataset
from .evaluate import evaluate_snn, load_snn
from .finetune import finetune
from .training import TrainConfig


def say(message: str) -> None:
    """A demo log line, flushed at once (the demo is often piped to a file)."""
    print(message, flush=True)


@dataclass
class DemoConfig:
    model: str = "vgg-small"
    coding: str = "direct"
    ann_epochs: int = 30
    ann_lr: float = 3e-3
    hybrid_timesteps: int = 5
    threshold_scale: float = 0.5
    finetune_epochs: Optional[int] = None     # caps every surrogate's epochs (quick runs)
    # the paper's exponential STDB surrogate and its linear option, each with the recipe measured best on digits:
    # STDB improves a converted network for 1-2 epochs and then degrades it (95% -> 75% over 15 epochs at lr 1e-3);
    # the linear surrogate keeps improving it (98.06% at T=5 after ~15 epochs). Both are run and reported.
    surrogates: tuple = (("stdb", 2, 3e-4), ("linear", 20, 1e-3))
    converted_timesteps: List[int] = field(default_factory=lambda: [5, 10, 15, 20, 30, 50, 75, 100, 150, 200])
    deploy: bool = True
    deploy_epochs: int = 30
    lava_samples: int = 8
    seed: int = 0
    limit: Optional[int] = None      # fewer samples, for tests


def steps_ratio(converted: Dict[int, float], hybrid_accuracy: float, hybrid_timesteps: int):
    """Time steps the converted-only SNN needs to reach the hybrid's accuracy, over the hybrid's.
    None when it never does within the evaluated steps (the ratio is then above max(T) / hybrid T)."""
    for T in sorted(converted):
        if converted[T] >= hybrid_accuracy:
            return T / hybrid_timesteps
    return None


def run_front_end(cfg: DemoConfig, out_dir: str, log: Callable[[str], None] = say, progress: bool = True) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    data = load_dataset("digits", seed=cfg.seed, limit=cfg.limit)
    paths = {k: os.path.join(out_dir, f"{k}.pt") for k in ("ann", "converted")}
    start = time.time()
    ann = train_ann(data, cfg.model, TrainConfig(epochs=cfg.ann_epochs, lr=cfg.ann_lr, seed=cfg.seed), paths["ann"],
                    progress=progress, data_args={"seed": cfg.seed, "limit": cfg.limit})
    ann_acc = ann.metrics["test_accuracy"]
    log(f"[1/4] ANN {cfg.model}: test accuracy {ann_acc:.2%} ({time.time() - start:.0f} s)")

    snn = convert(ann, data, timesteps=cfg.hybrid_timesteps, scale=cfg.threshold_scale, coding=cfg.coding, seed=cfg.seed)
    converted = evaluate_snn(load_snn(snn), data.test_x, data.test_y, cfg.converted_timesteps, seed=cfg.seed)
    conv_acc = {T: r["accuracy"] for T, r in converted.items()}
    snn.metrics.update(test_accuracy=conv_acc.get(cfg.hybrid_timesteps), timesteps=cfg.hybrid_timesteps)
    save_checkpoint(snn, paths["converted"])
    log(f"[2/4] converted SNN ({cfg.coding} input, threshold scale {cfg.threshold_scale}): "
        + ", ".join(f"T={T} {a:.1%}" for T, a in conv_acc.items()))

    hybrids = {}
    for surrogate, epochs, lr in cfg.surrogates:
        epochs = min(epochs, cfg.finetune_epochs) if cfg.finetune_epochs else epochs
        path = os.path.join(out_dir, f"hybrid_{surrogate}.pt")
        ckpt = finetune(snn, data, TrainConfig(epochs=epochs, lr=lr, batch_size=32, seed=cfg.seed),
                        path, timesteps=cfg.hybrid_timesteps, surrogate={"name": surrogate}, progress=progress)
        res = evaluate_snn(load_snn(ckpt), data.test_x, data.test_y, [cfg.hybrid_timesteps], seed=cfg.seed)
        hybrids[surrogate] = (ckpt, res[cfg.hybrid_timesteps], path)
        log(f"[3/4] hybrid SNN ({surrogate} surrogate, {epochs} epochs, lr {lr:g}): "
            f"{res[cfg.hybrid_timesteps]['accuracy']:.2%} at T={cfg.hybrid_timesteps}, "
            f"{res[cfg.hybrid_timesteps]['spikes_per_inference']:.0f} spikes per inference")
    best = max(hybrids, key=lambda k: (hybrids[k][1]["accuracy"], k == "stdb"))
    hybrid, hyb, paths["hybrid"] = hybrids[best]
    ratio = steps_ratio(conv_acc, hyb["accuracy"], cfg.hybrid_timesteps)
    reached = "never within T<=%d" % max(conv_acc) if ratio is None else f"T={int(ratio * cfg.hybrid_timesteps)}"
    log(f"[4/4] best hybrid: {best} surrogate. The converted-only SNN reaches its accuracy at {reached}: steps ratio "
        + (f"{ratio:.1f}" if ratio is not None else f"> {max(conv_acc) / cfg.hybrid_timesteps:.0f}")
        + f" (paper: >= 10); ANN {ann_acc:.2%} vs hybrid {hyb['accuracy']:.2%} "
          f"({(ann_acc - hyb['accuracy']) * 100:+.2f} points)")
    from .plots import plot_accuracy_vs_timesteps
    paths["plot"] = plot_accuracy_vs_timesteps(
        os.path.join(out_dir, "accuracy_vs_timesteps.png"), conv_acc,
        {f"hybrid ({k} surrogate)": (cfg.hybrid_timesteps, v[1]["accuracy"]) for k, v in hybrids.items()},
        ann_acc, f"{cfg.model} on digits: conversion vs hybrid (STDB-style fine-tuning)")
    return {"ann_accuracy": ann_acc, "converted": {str(T): a for T, a in conv_acc.items()},
            "hybrid": {"timesteps": cfg.hybrid_timesteps, "accuracy": hyb["accuracy"], "surrogate": best,
                       "spikes_per_inference": hyb["spikes_per_inference"],
                       "by_surrogate": {k: v[1]["accuracy"] for k, v in hybrids.items()}},
            "steps_ratio": ratio, "steps_ratio_lower_bound": None if ratio is not None else max(conv_acc) / cfg.hybrid_timesteps,
            "artifacts": paths, "data": data, "hybrid_checkpoint": hybrid}


def run_demo(cfg: DemoConfig, out_dir: str, log: Callable[[str], None] = say, progress: bool = True) -> dict:
    front = run_front_end(cfg, out_dir, log, progress)
    summary = {k: v for k, v in front.items() if k not in ("data", "hybrid_checkpoint")}
    if cfg.deploy:
        from .deploy_demo import run_deploy
        summary["deploy"] = run_deploy(cfg, out_dir, front["data"], front["hybrid_checkpoint"], log, progress)
    return summary

"""snntc demo: the whole pipeline on the bundled digits, with defaults."""
from __future__ import annotations

import time

from ..demo import DemoConfig, run_demo
from .common import configure_threads, positive_int, write_json


def cmd_demo(args) -> dict:
    configure_threads()
    cfg = DemoConfig(hybrid_timesteps=args.timesteps, finetune_epochs=args.finetune_epochs, ann_epochs=args.ann_epochs,
                     deploy=not args.no_lava, deploy_epochs=args.deploy_epochs, lava_samples=args.lava_samples,
                     seed=args.seed, limit=args.limit, coding=args.coding)
    start = time.time()
    summary = run_demo(cfg, args.out, progress=not args.no_progress)
    summary["wall_time_s"] = time.time() - start
    print(f"demo finished in {summary['wall_time_s']:.0f} s; artifacts in {args.out}/")
    write_json(args.json, summary)
    return summary


def register(sub) -> None:
    p = sub.add_parser("demo", help="run train -> convert -> finetune -> evaluate -> export -> simulate on digits",
                       description="The whole pipeline on scikit-learn's bundled 8x8 digits with defaults: train the ANN, "
                                   "convert it, fine-tune it with STDB, compare accuracies and time steps, then quantize "
                                   "it for Loihi, export a netx file, run a few samples in Lava and estimate energy.")
    p.add_argument("--out", default="runs/demo", help="directory for the artifacts (default runs/demo)")
    p.add_argument("--json", metavar="FILE", help="write the summary as JSON")
    p.add_argument("--timesteps", type=positive_int, default=5, help="time steps of the hybrid SNN (default 5)")
    p.add_argument("--ann-epochs", type=positive_int, default=30, help="ANN epochs (default 30)")
    p.add_argument("--finetune-epochs", type=positive_int, default=None,
                   help="cap on fine-tuning epochs (default: STDB 2 epochs at lr 3e-4, linear surrogate 20 at 1e-3)")
    p.add_argument("--deploy-epochs", type=positive_int, default=30,
                   help="epochs of fine-tuning under Loihi's dynamics and quantization (default 30)")
    p.add_argument("--lava-samples", type=positive_int, default=8, help="test samples to run in Lava (default 8)")
    p.add_argument("--no-lava", action="store_true", help="stop after the front end (no export, Lava or energy)")
    p.add_argument("--limit", type=positive_int, default=None, help="use at most this many train/test samples (quick runs)")
    p.add_argument("--coding", default="direct", choices=["direct", "poisson"],
                   help="input coding (default direct: the analog image every step; poisson: rate-coded spikes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

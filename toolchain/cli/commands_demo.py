"""snntc demo: the whole pipeline on the bundled digits, with defaults."""
from __future__ import annotations

import time

from ..coding import CODINGS
from ..demo.presets import PRESETS, demo_config, run_demo
from .common import configure_threads, positive_int, write_json
from .catalog import command_help


def cmd_demo(args) -> dict:
    configure_threads()
    cfg = demo_config(args.dataset, hybrid_timesteps=args.timesteps, finetune_epochs=args.finetune_epochs,
                      ann_epochs=args.ann_epochs, deploy=False if args.no_lava else None,
                      deploy_epochs=args.deploy_epochs, lava_samples=args.lava_samples, seed=args.seed,
                      limit=args.limit, coding=args.coding)
    start = time.time()
    summary = run_demo(cfg, args.out, progress=not args.no_progress)
    summary["wall_time_s"] = time.time() - start
    print(f"demo finished in {summary['wall_time_s']:.0f} s; artifacts in {args.out}/")
    write_json(args.json, summary)
    return summary


def register(sub) -> None:
    presets = "; ".join(f"{name}: {c.model}, ANN {c.ann_epochs} epochs, fine-tuning "
                        + " and ".join(f"{r.surrogate} {r.epochs} epochs at lr {r.lr:g}" for r in c.recipes)
                        + f", Loihi QAT {c.deploy_epochs} epochs" for name, c in PRESETS.items())
    p = sub.add_parser("demo", help=command_help("demo"),
                       description="The whole pipeline on bundled data with each dataset's preset: train the ANN, "
                                   "convert it, fine-tune it (STDB and the linear surrogate; the better on validation "
                                   "goes on), compare accuracies and time steps, then fine-tune it under Loihi's "
                                   "dynamics and quantization, export a netx file, emulate the whole test split, run a "
                                   f"few samples in Lava and estimate energy. Presets: {presets}.")
    p.add_argument("--dataset", default="digits", choices=list(PRESETS),
                   help="digits (8x8, default, about a minute) or mnist5k (5,000 real 28x28 MNIST digits)")
    p.add_argument("--out", default="runs/demo", help="directory for the artifacts (default runs/demo)")
    p.add_argument("--json", metavar="FILE", help="write the summary as JSON")
    p.add_argument("--timesteps", type=positive_int, default=None, help="time steps of the hybrid SNN (default 5)")
    p.add_argument("--ann-epochs", type=positive_int, default=None, help="ANN epochs (default: the preset's)")
    p.add_argument("--finetune-epochs", type=positive_int, default=None, help="cap on every fine-tuning's epochs")
    p.add_argument("--deploy-epochs", type=positive_int, default=None,
                   help="epochs of fine-tuning under Loihi's dynamics and quantization (default: the preset's)")
    p.add_argument("--lava-samples", type=positive_int, default=None, help="test samples to run in Lava (default 8)")
    p.add_argument("--no-lava", action="store_true", help="stop after the front end (no export, Lava or energy)")
    p.add_argument("--limit", type=positive_int, default=None, help="use at most this many samples of each split (quick runs)")
    p.add_argument("--coding", default=None, choices=CODINGS.names(), help=CODINGS.help(default="direct"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

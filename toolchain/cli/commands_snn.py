"""Command: train-snn (direct training of an SNN from scratch with a tuned surrogate gradient and batch
norm on the spiking layers' input currents, Ledinauskas et al. 2020)."""
from __future__ import annotations

import argparse
import time

from ..coding import CODINGS
from ..ir.models import MODELS, model_help
from ..neurons import NEURONS
from ..progress import log_line
from ..neurons.surrogates import SURROGATES, get_surrogate
from ..training.direct import direct_neurons
from ..training.loop import resolve_device
from .commands_train import data_from_args, describe_result, train_config, training_summary
from .common import (CliError, add_data_args, add_output_args, add_train_args, check_output, configure_threads,
                     positive_int, write_json)
from .catalog import command_help


def cmd_train_snn(args) -> dict:
    from ..training.direct import DEFAULT_SURROGATE, plot_gradients, train_snn
    configure_threads()
    check_output(args.output, args)
    if args.plot:
        check_output(args.plot, argparse.Namespace(force=True))
    if not args.threshold > 0:
        raise CliError(f"--threshold must be > 0, got {args.threshold}")
    if "leak" not in NEURONS.get(args.neuron).reads and args.leak != 1.0:
        raise CliError(f"--leak applies to --neuron {' or '.join(NEURONS.names(lambda m: 'leak' in m.reads))} only")
    name = args.surrogate or DEFAULT_SURROGATE["name"]
    defaults = DEFAULT_SURROGATE if name == DEFAULT_SURROGATE["name"] else {}
    surrogate = get_surrogate(name, alpha=args.alpha if args.alpha is not None else defaults.get("alpha"),
                              beta=args.beta, width=args.width if args.width is not None else defaults.get("width"))
    cfg = train_config(args)
    resolve_device(cfg.device)
    data = data_from_args(args)
    start = time.time()
    ckpt = train_snn(data, args.model, cfg, args.output, timesteps=args.timesteps, surrogate=surrogate.to_dict(),
                     batch_norm=args.batch_norm, threshold=args.threshold, neuron=args.neuron, leak=args.leak,
                     coding=args.coding, resume=args.resume, progress=not args.no_progress, log=log_line,
                     overwrite=args.force)
    history = ckpt.training["state"]["history"]
    last = history[-1] if history else {}
    layers = ckpt.training["direct"]["layers"]
    summary = {"command": "train-snn", "model": args.model, "dataset": data.name, "output": args.output,
               "timesteps": args.timesteps, "surrogate": surrogate.to_dict(), "batch_norm": args.batch_norm,
               "threshold": args.threshold, "neuron": args.neuron, "coding": args.coding, "layers": layers,
               "spikes_per_inference": ckpt.metrics.get("test_spikes_per_inference"),
               "grad_ratio_first_last": last.get("grad_ratio_first_last"), **training_summary(ckpt, start)}
    if args.plot:
        plot_gradients(history, args.plot, title=f"{args.model}, T={args.timesteps}, {surrogate.name} surrogate "
                                                 f"(width {surrogate.width:g}, height {surrogate.alpha:g}), "
                                                 f"{'with' if args.batch_norm else 'no'} batch norm")
        summary["plot"] = args.plot
    bn = "with" if args.batch_norm else "without"
    print(f"SNN {args.model} on {data.name} trained directly ({args.neuron}, T={args.timesteps}, {surrogate.name} "
          f"surrogate, {bn} batch norm): {describe_result(ckpt)} -> {args.output}")
    if last.get("grad_norms"):
        norms = last["grad_norms"]
        print(f"weight-gradient norms, last epoch (mean over batches): {layers[0]} {norms[layers[0]]:.3g}, "
              f"{layers[-1]} {norms[layers[-1]]:.3g}, ratio {summary['grad_ratio_first_last']:.3g}"
              + (f"; plot -> {args.plot}" if args.plot else ""))
    write_json(args.json, summary)
    return summary


def register(sub) -> None:
    p = sub.add_parser("train-snn", help=command_help("train-snn"),
                       description="Train a spiking network from scratch by back-propagation through time with a "
                                   "surrogate gradient of tuned width and height and batch norm on every spiking "
                                   "layer's input current (statistics over batch and time; Ledinauskas et al. 2020). "
                                   "Thresholds are fixed. A checkpoint (an SNN checkpoint, for evaluate, finetune and "
                                   "export) is written after every epoch, so --resume continues an interrupted run; "
                                   "per-layer weight-gradient norms are recorded in its history.")
    p.add_argument("--model", default="vgg-small", choices=MODELS.names(), metavar="MODEL", help=model_help())
    p.add_argument("--timesteps", type=positive_int, default=8, help="time steps (default 8)")
    p.add_argument("--surrogate", default="rectangular",
                   help=f"surrogate gradient: {', '.join(SURROGATES)} (default rectangular: the box "
                        f"height * 1[|v / threshold - 1| < width / 2], width 1 and height 0.5 unless given)")
    p.add_argument("--width", type=float, default=None, help="surrogate width (in units of the threshold)")
    p.add_argument("--alpha", type=float, default=None,
                   help="surrogate height (too high or too wide: gradients explode with depth; too low or too "
                        "narrow: they vanish; see benchmarks/snn_gradients.py)")
    p.add_argument("--beta", type=float, default=None, help="STDB decay per time step (stdb surrogate only)")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=True,
                   help="batch norm on every spiking layer's input current (default on); folded at export")
    p.add_argument("--threshold", type=float, default=1.0, help="fixed threshold of every spiking layer (default 1.0)")
    p.add_argument("--neuron", default="if", choices=direct_neurons(),
                   help=NEURONS.help(lambda m: m.name in direct_neurons(), default="if"))
    p.add_argument("--leak", type=float, default=1.0, help="membrane leak for lif (1.0 = integrate-and-fire)")
    p.add_argument("--coding", default="direct", choices=CODINGS.names(), help=CODINGS.help(default="direct"))
    p.add_argument("--plot", metavar="PNG", default=None, help="plot the per-layer gradient norms to this PNG")
    add_data_args(p)
    add_train_args(p, epochs=15, lr=3e-3)
    add_output_args(p)
    p.set_defaults(func=cmd_train_snn)

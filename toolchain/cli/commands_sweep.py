"""Command: sweep (accuracy, spikes and energy per T on a subset of the test split, and the T to deploy)."""
from __future__ import annotations

from .common import (CliError, CommandIO, add_json_arg, configure_threads, int_list, nonnegative_float, positive_int,
                     write_json)
from .catalog import command_help

DEFAULT_STEPS = "1,2,4,8,16,32,64,128"
DEFAULT_SAMPLES = 200


def fraction(text: str) -> float:
    import argparse
    value = nonnegative_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1) (0.01 = one percentage point), got {value}")
    return value


def cmd_sweep(args) -> dict:
    from ..analysis.sweep import plot_sweep, sweep_timesteps
    from ..io.checkpoint import load_checkpoint
    from ..training.loop import resolve_device
    from .commands_train import data_for_checkpoint
    configure_threads()
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.model, kind="snn")
    data = data_for_checkpoint(ckpt, args)
    if args.samples > len(data.test_x):
        raise CliError(f"--samples {args.samples}: the test split has {len(data.test_x)} samples")
    x, y = data.test_x[:args.samples], data.test_y[:args.samples]
    result = sweep_timesteps(ckpt, x, y, args.timesteps, target=None if args.no_energy else args.target,
                             tolerance=args.tolerance, chosen_on=args.choose_on, train_x=data.train_x, seed=args.seed,
                             device=str(device), name=args.model)
    print(f"SNN {args.model} ({ckpt.snn.neuron}, {ckpt.snn.coding} input, trained at T={ckpt.snn.timesteps}), "
          f"the first {result.samples} test samples of {data.name}")
    print(result.format_table())
    summary = {"command": "sweep", **result.to_json()}
    if args.plot:
        plot_sweep(result, args.plot)
        summary["plot"] = args.plot
        print(f"plot -> {args.plot}")
    print(f"sweep took {result.wall_time_s:.1f} s")
    write_json(args.json, summary)
    return summary


def register(sub) -> None:
    from ..targets import TARGETS
    from ..analysis.sweep import ACCURACY_SOURCES
    p = sub.add_parser("sweep", help=command_help("sweep"),
                       description="Evaluate an SNN checkpoint at each of a list of time steps on the first --samples "
                                   "test samples: accuracy with its 95%% confidence interval (Wilson), spikes per "
                                   "inference, and, for the network as deployed (quantized as by export, run on the "
                                   "bit-exact emulator), its accuracy and energy per inference on --target. "
                                   "Recommends the smallest T whose accuracy is within --tolerance of the best.")
    p.add_argument("model", help="SNN checkpoint (from convert, finetune or train-snn)")
    p.add_argument("--timesteps", type=int_list, default=DEFAULT_STEPS,
                   help=f"comma-separated time steps (default {DEFAULT_STEPS})")
    p.add_argument("--samples", type=positive_int, default=DEFAULT_SAMPLES,
                   help=f"the first N test samples (default {DEFAULT_SAMPLES}; the interval says what N buys)")
    p.add_argument("--tolerance", type=fraction, default=0.01,
                   help="recommend the smallest T within this much accuracy of the best (a fraction; default 0.01, "
                        "one percentage point)")
    p.add_argument("--choose-on", default="snn", choices=ACCURACY_SOURCES,
                   help="which accuracy the recommendation reads: snn (the checkpoint, as evaluate; default) or "
                        "deployed (quantized, on the emulator, as simulate)")
    p.add_argument("--target", default="loihi", choices=TARGETS.names(), help=TARGETS.help(default="loihi"))
    p.add_argument("--no-energy", action="store_true", help="the SNN only: no quantization, emulator or energy")
    p.add_argument("--plot", metavar="PNG", help="plot accuracy (with its interval) and energy against T")
    p.add_argument("--seed", type=int, default=0, help="seed of the Poisson input")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default=None, help="override the dataset directory stored in the checkpoint")
    add_json_arg(p, "write the sweep as JSON")
    p.set_defaults(func=cmd_sweep, io=CommandIO(inputs=("model",), outputs=("json", "plot")))

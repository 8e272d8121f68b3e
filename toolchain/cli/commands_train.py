"""Commands of the front end: train-ann, convert, finetune, evaluate."""
from __future__ import annotations

import argparse
import os
import time

from ..io.checkpoint import load_checkpoint, save_checkpoint
from ..coding import CODINGS
from ..ir.models import MODELS, model_help
from ..neurons import NEURONS
from ..data import load_dataset
from ..progress import log_line
from ..training.convert import DEFAULT_TIMESTEPS
from ..training.loop import TrainConfig, resolve_device
from .common import (add_data_args, recorded_dataset, add_output_args, add_train_args, check_output, configure_threads,
                     int_list, positive_int, write_json)
from .catalog import command_help


def data_from_args(args):
    return load_dataset(args.dataset, args.data_root, seed=args.data_seed, limit=args.limit, normalize=args.normalize,
                        val_fraction=args.val_fraction)


def data_for_checkpoint(ckpt, args):
    """The dataset a checkpoint was trained on (its root may be overridden with --data-root)."""
    return recorded_dataset(ckpt.dataset, args, default_name="digits")


def train_config(args) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                       weight_decay=args.weight_decay, schedule=args.schedule, seed=args.seed, device=args.device,
                       augment=args.augment)


def training_summary(ckpt, start: float) -> dict:
    """The part of a training command's summary every stage shares: the best epoch and its metrics, the history."""
    history = ckpt.training["state"]["history"]
    return {"epochs": max((h["epoch"] for h in history), default=0), "best_epoch": ckpt.metrics.get("best_epoch"),
            "val_accuracy": ckpt.metrics.get("val_accuracy"), "test_accuracy": ckpt.metrics.get("test_accuracy"),
            "history": history, "wall_time_s": time.time() - start}


def describe_result(ckpt) -> str:
    """'validation 97.50% (epoch 12 of 15), test 97.22%'."""
    m, epochs = ckpt.metrics, ckpt.training["state"]["history"][-1]["epoch"]
    val = m.get("val_accuracy")
    best = "the starting network" if m.get("best_epoch") == 0 else f"epoch {m.get('best_epoch')} of {epochs}"
    return (f"validation {val:.2%} ({best}), " if val is not None else f"({best}, no validation split) ") + \
        f"test {m['test_accuracy']:.2%}"


# -- train-ann ---------------------------------------------------------------------------------
def cmd_train_ann(args) -> dict:
    from ..training.ann import train_ann
    configure_threads()
    check_output(args.output, args)
    cfg = train_config(args)
    resolve_device(cfg.device)
    data = data_from_args(args)
    start = time.time()
    ckpt = train_ann(data, args.model, cfg, args.output, resume=args.resume, batch_norm=args.batch_norm,
                     progress=not args.no_progress, log=log_line, overwrite=args.force)
    summary = {"command": "train-ann", "model": args.model, "dataset": data.name, "output": args.output,
               "split": data.split, **training_summary(ckpt, start)}
    print(f"ANN {args.model} on {data.name}: {describe_result(ckpt)} -> {args.output}")
    write_json(args.json, summary)
    return summary


# -- models ------------------------------------------------------------------------------------
def cmd_models(args) -> dict:
    from ..analysis.model_facts import describe
    shape = tuple(args.input_shape) if args.input_shape else None
    rows = [describe(name, shape, args.classes) for name in MODELS.names()]
    print(f"{'model':<13} {'input':>8} {'params':>11} {'synaptic':>8} {'neurons':>8} {'Loihi 2':>16}  what it is")
    for r in rows:
        if r["parameters"] is None:
            print(f"{r['name']:<13} {'x'.join(map(str, r['input_shape'])):>8}  {r['fit_problem']}")
            continue
        fit = ("not a chain" if r["fits_loihi2"] is None else
               f"{'fits' if r['fits_loihi2'] else 'no'}, {r['loihi2_cores']} cores")
        neurons = "-" if r["neurons"] is None else r["neurons"]
        print(f"{r['name']:<13} {'x'.join(map(str, r['input_shape'])):>8} {r['parameters']:>11,} {r['synaptic_layers']:>8} "
              f"{neurons:>8} {fit:>16}  {r['summary']}")
    misfits = [r for r in rows if r["fits_loihi2"] is False]
    if misfits:
        print("\nwhy some do not fit Loihi 2 (first limit hit; pooling is folded into the next layer on the chip):")
        for r in misfits:
            print(f"  {r['name']}: {r['fit_problem'].split('; ')[0]}")
    summary = {"command": "models", "models": rows}
    write_json(args.json, summary)
    return summary


# -- convert -----------------------------------------------------------------------------------
def cmd_convert(args) -> dict:
    from ..training.convert import convert
    from ..training.evaluate import evaluate_snn, load_snn
    configure_threads()
    check_output(args.output, args)
    ann = load_checkpoint(args.ann, kind="ann")
    data = data_for_checkpoint(ann, args)
    device = resolve_device(args.device)
    snn = convert(ann, data, timesteps=args.timesteps, method=args.method, scale=args.scale,
                  percentile=args.percentile, calib_samples=args.calibration_samples, coding=args.coding,
                  neuron=args.neuron, leak=args.leak, seed=args.seed, device=str(device),
                  calibration_steps=args.calibration_steps)
    result = evaluate_snn(load_snn(snn, device), data.test_x, data.test_y, [args.timesteps], seed=args.seed)[args.timesteps]
    snn.metrics["test_accuracy"], snn.metrics["timesteps"] = result["accuracy"], args.timesteps
    save_checkpoint(snn, args.output)
    summary = {"command": "convert", "output": args.output, "thresholds": snn.snn.thresholds,
               "timesteps": args.timesteps, "calibration_steps": snn.training["conversion"]["calibration_timesteps"],
               "accuracy": result["accuracy"],
               "spikes_per_inference": result["spikes_per_inference"], "ann_accuracy": ann.metrics.get("test_accuracy")}
    print("threshold per spiking layer: " + ", ".join(f"{k} {v:.4g}" for k, v in snn.snn.thresholds.items()))
    ann_acc = summary["ann_accuracy"]
    print(f"converted SNN: {result['accuracy']:.2%} at T={args.timesteps} (thresholds calibrated over "
          f"{summary['calibration_steps']} steps) "
          f"(ANN {'not measured' if ann_acc is None else f'{ann_acc:.2%}'}), "
          f"{result['spikes_per_inference']:.0f} spikes per inference -> {args.output}")
    write_json(args.json, summary)
    return summary


# -- finetune ----------------------------------------------------------------------------------
def cmd_finetune(args) -> dict:
    from ..training.finetune import finetune
    configure_threads()
    check_output(args.output, args)
    snn = load_checkpoint(args.snn, kind="snn")
    data = data_for_checkpoint(snn, args)
    cfg = train_config(args)
    surrogate = {"name": args.surrogate, "alpha": args.alpha, "beta": args.beta, "width": args.width}
    from ..neurons.surrogates import get_surrogate
    surrogate = get_surrogate(**surrogate).to_dict()
    start = time.time()
    ckpt = finetune(snn, data, cfg, args.output, timesteps=args.timesteps, surrogate=surrogate, neuron=args.neuron,
                    reset=args.reset,
                    resume=args.resume, progress=not args.no_progress, log=log_line, overwrite=args.force)
    T = ckpt.snn.timesteps
    summary = {"command": "finetune", "output": args.output, "timesteps": T, "surrogate": surrogate,
               "neuron": ckpt.snn.neuron, "start_test_accuracy": ckpt.metrics.get("start_test_accuracy"),
               **training_summary(ckpt, start)}
    print(f"fine-tuned SNN ({ckpt.snn.neuron} neurons, {surrogate['name']} surrogate, T={T}): "
          f"{describe_result(ckpt)} -> {args.output}")
    write_json(args.json, summary)
    return summary


# -- evaluate ----------------------------------------------------------------------------------
def evaluate_one(path: str, args, device) -> dict:
    """One checkpoint's evaluation: the ANN's accuracy, or the SNN's at each time step."""
    from ..training.ann import ann_accuracy, load_ann
    from ..training.evaluate import evaluate_snn, load_snn
    ckpt = load_checkpoint(path)
    data = data_for_checkpoint(ckpt, args)
    x, y = data.test_x[:args.samples], data.test_y[:args.samples]     # --samples: the first N (default: all)
    if ckpt.kind == "ann":
        acc = ann_accuracy(load_ann(ckpt, device), x, y)
        return {"model": path, "kind": "ann", "accuracy": acc, "samples": len(x)}
    steps = args.timesteps or [ckpt.snn.timesteps]
    res = evaluate_snn(load_snn(ckpt, device), x, y, steps, seed=args.seed, progress=not args.no_progress)
    return {"model": path, "kind": "snn", "neuron": ckpt.snn.neuron, "coding": ckpt.snn.coding,
            "samples": len(x), "timesteps": {str(T): r for T, r in res.items()}}


def print_evaluation(result: dict) -> None:
    if result["kind"] == "ann":
        print(f"ANN {result['model']}: test accuracy {result['accuracy']:.2%} on {result['samples']} samples")
        return
    print(f"SNN {result['model']} ({result['neuron']}, {result['coding']} input), {result['samples']} test samples")
    print(f"{'T':>5} {'accuracy':>9} {'spikes/inference':>17}   spikes per neuron per layer")
    for T, r in result["timesteps"].items():
        per_layer = " ".join(f"{k}={v['spikes_per_neuron']:.2f}" for k, v in r["layers"].items())
        print(f"{T:>5} {r['accuracy']:>9.2%} {r['spikes_per_inference']:>17.1f}   {per_layer}")


def print_side_by_side(results) -> None:
    """Accuracy of several checkpoints (e.g. the ANN, the converted and the fine-tuned SNN) in columns."""
    steps = sorted({int(T) for r in results if r["kind"] == "snn" for T in r["timesteps"]})
    names = [os.path.basename(r["model"]) for r in results]
    print(f"{'T':>6} " + " ".join(f"{n:>16}" for n in names))
    for T in steps or [0]:
        cells = []
        for r in results:
            if r["kind"] == "ann":
                cells.append(f"{r['accuracy']:>15.2%}*")
            else:
                acc = r["timesteps"].get(str(T), {}).get("accuracy")
                cells.append(f"{'-' if acc is None else f'{acc:.2%}':>16}")
        print(f"{T:>6} " + " ".join(cells))
    if any(r["kind"] == "ann" for r in results):
        print("* an ANN has no time steps: its accuracy is shown on every row")


def cmd_evaluate(args) -> dict:
    configure_threads()
    device = resolve_device(args.device)
    results = [evaluate_one(path, args, device) for path in args.model]
    for result in results:
        print_evaluation(result)
    if len(results) > 1:
        print()
        print_side_by_side(results)
        summary = {"command": "evaluate", "models": results}
    else:
        summary = {"command": "evaluate", **results[0]}
    write_json(args.json, summary)
    return summary


def register(sub) -> None:
    p = sub.add_parser("train-ann", help=command_help("train-ann"),
                       description="Train an ANN (no bias, ReLU, average pooling, dropout) on a dataset; a checkpoint "
                                   "is written after every epoch, so --resume continues an interrupted run.")
    p.add_argument("--model", default="vgg-small", choices=MODELS.names(), metavar="MODEL", help=model_help())
    p.add_argument("--batch-norm", action="store_true", help="batch norm after each conv (folded before conversion)")
    add_data_args(p)
    add_train_args(p, epochs=30, lr=3e-3)
    add_output_args(p)
    p.set_defaults(func=cmd_train_ann)

    p = sub.add_parser("models", help=command_help("models"),
                       description="Every network `--model` accepts: the input it suits, its parameters and synaptic "
                                   "layers, and whether its deployed form (pooling folded, 8-bit weights) fits "
                                   "Loihi 2 and on how many cores, measured at its own input size or at --input-shape.")
    p.add_argument("--input-shape", type=int, nargs=3, metavar=("C", "H", "W"), default=None,
                   help="measure every model at this input (default: each at the input it suits)")
    p.add_argument("--classes", type=positive_int, default=10, help="output classes (default 10)")
    p.add_argument("--json", metavar="FILE", help="write the table as JSON")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("convert", help=command_help("convert"),
                       description="Copy the ANN's weights into a spiking network and set each spiking layer's "
                                   "threshold from the input current it receives (Rathi et al. 2020), or from the "
                                   "ANN's activations (--method activation, Rueckauer et al. 2017).")
    p.add_argument("ann", help="ANN checkpoint (from train-ann or import)")
    p.add_argument("--timesteps", type=positive_int, default=DEFAULT_TIMESTEPS,
                   help=f"time steps of the SNN: the T that finetune, evaluate and export then use (default "
                        f"{DEFAULT_TIMESTEPS}, the hybrid method's few steps; evaluate --timesteps or sweep measures "
                        f"others)")
    p.add_argument("--calibration-steps", type=positive_int, default=None, metavar="STEPS",
                   help="time steps of the calibration run that sets the thresholds (default: --timesteps; more "
                        "steps see larger currents, hence higher thresholds, suited to running the converted SNN "
                        "long, e.g. 100 with --scale 1.0, without fine-tuning)")
    p.add_argument("--method", default="spike", choices=["spike", "activation"], help="threshold source (default spike)")
    p.add_argument("--scale", type=float, default=0.7, help="threshold scaling factor (paper default 0.7)")
    p.add_argument("--percentile", type=float, default=100.0, help="percentile of currents (100 = max)")
    p.add_argument("--calibration-samples", type=positive_int, default=256, help="training images for calibration")
    p.add_argument("--coding", default="poisson", choices=CODINGS.names(), help=CODINGS.help(default="poisson"))
    p.add_argument("--neuron", default="if", choices=NEURONS.names(), help=NEURONS.help(default="if"))
    p.add_argument("--leak", type=float, default=1.0, help="membrane leak for lif (1.0 = integrate-and-fire)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default=None, help="override the dataset directory stored in the checkpoint")
    add_output_args(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("finetune", help=command_help("finetune"),
                       description="Back-propagate through the T time steps with a surrogate gradient: the linear "
                                   "one (alpha * max(0, 1 - |v / threshold - 1|)) by default, or STDB (alpha * "
                                   "exp(-beta * dt), dt = steps since the neuron's last spike; none for a neuron that "
                                   "has not fired). "
                                   "With --neuron loihi-cuba the network trains under Loihi's dynamics and quantization.")
    p.add_argument("snn", help="SNN checkpoint (from convert)")
    p.add_argument("--timesteps", type=positive_int, default=None,
                   help="time steps (default: the checkpoint's, i.e. convert's --timesteps)")
    p.add_argument("--surrogate", default="linear", help="linear (default), stdb, fast-sigmoid, arctan, rectangular")
    p.add_argument("--alpha", type=float, default=None, help="surrogate height (STDB default 0.3)")
    p.add_argument("--beta", type=float, default=None, help="STDB decay per time step (default 0.01)")
    p.add_argument("--width", type=float, default=None, help="surrogate width (non-STDB surrogates)")
    p.add_argument("--neuron", default=None, choices=NEURONS.names(), help="switch the neuron model: " + NEURONS.help())
    p.add_argument("--reset", default=None, choices=["subtract", "zero"],
                   help="if/lif: switch the reset (default: the checkpoint's; converted networks subtract). zero: the "
                        "reset of NIR's IF/LIF, which snnTorch, Norse and SpikingJelly run, so their predictions on "
                        "the exported NIR file are this network's; a converted network loses accuracy at first")
    p.add_argument("--data-root", default=None, help="override the dataset directory stored in the checkpoint")
    p.add_argument("--limit", type=positive_int, default=None, help=argparse.SUPPRESS)
    add_train_args(p, epochs=3, lr=3e-4, batch=32)
    add_output_args(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help=command_help("evaluate"),
                       description="Test accuracy of an ANN checkpoint, or of an SNN checkpoint at each of a list of "
                                   "time steps with its spikes per inference and per neuron of each layer.")
    p.add_argument("model", nargs="+", help="ANN or SNN checkpoint(s); several are also shown side by side "
                                             "(e.g. ann.pt snn.pt hybrid.pt)")
    p.add_argument("--timesteps", type=int_list, default=None, help="comma-separated, e.g. 5,10,20")
    p.add_argument("--samples", type=positive_int, default=None,
                   help="the first N test samples (default: all); snntc sweep adds confidence intervals")
    p.add_argument("--seed", type=int, default=0, help="seed of the Poisson input")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default=None, help="override the dataset directory stored in the checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.set_defaults(func=cmd_evaluate)

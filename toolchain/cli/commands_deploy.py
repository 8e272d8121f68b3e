"""Commands of the deployment side: export, simulate, verify, energy, fit (and demo)."""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from ..io.checkpoint import load_checkpoint
from ..limits import check_fixed_point_run
from ..quantization.fixed_point import INPUT_FEEDS, VOLTAGE_READOUT, VOLTAGE_READOUT_NOTE, SimulationResult
from ..targets import SIMULATORS, TARGETS
from .commands_formats import add_nir_export_args
from .common import (CliError, CommandIO, add_json_arg, configure_threads, positive_int, recorded_dataset, seed_int,
                     timesteps_int, write_json)
from .catalog import command_help



def layer_table(net) -> str:
    rows = [f"{'layer':<10} {'type':<6} {'input':>12} {'output':>12} {'kernel':>7} {'stride':>6} {'pad':>4} "
            f"{'neurons':>8} {'vth':>7} {'decays':>10}  folded from"]
    for l in net.layers:
        k = "x".join(map(str, l.weight.shape[2:])) if l.kind == "conv" else "-"
        rows.append(f"{l.name:<10} {l.kind:<6} {str(tuple(l.input_shape)):>12} {str(tuple(l.output_shape)):>12} "
                    f"{k:>7} {l.stride[0] if l.kind == 'conv' else '-':>6} {l.padding[0] if l.kind == 'conv' else '-':>4} "
                    f"{l.neurons:>8} {'-' if l.is_output else l.vth:>7} {f'{l.i_decay}/{l.v_decay}':>10}  {l.source}")
    return "\n".join(rows)


# -- export ------------------------------------------------------------------------------------
def cmd_export(args) -> dict:
    from ..deploy import export_snn
    if args.format != "netx":
        from .commands_formats import export_other_format
        return export_other_format(args)
    ckpt = load_checkpoint(args.model, kind="snn")
    from .commands_train import data_for_checkpoint
    train_x = data_for_checkpoint(ckpt, args).train_x      # the input range (direct coding) and sign (Poisson)
    exported = export_snn(ckpt, args.output, train_x, allow_misfit=args.allow_misfit, overwrite=args.force)
    net, report = exported.network, exported.report
    fit = report.fit
    print(layer_table(net))
    print("\nquantization (integer = float x scale; weights are 8-bit mantissas x 2):")
    print(report.format(warnings=False))           # export's warnings come through `warnings`, one line each
    print("\nLoihi 2 fit:")
    print(fit.format_fit_table(warnings=False))
    relays = relay_overhead(net)
    print(f"\nwrote {args.output} ({os.path.getsize(args.output)} bytes): {len(net.layers)} layers, "
          f"{net.input_coding} input ({net.input_bits or 1}-bit), T={net.timesteps}, readout {net.readout}; "
          f"a chain of layers that stock netx loads and Lava runs unchanged")
    if relays["neurons"]:
        print(f"residual blocks as relay channels: {relays['neurons']:,} extra neurons, {relays['synapses']:,} extra "
              f"synapses (snntc energy counts their synaptic ops)")
    summary = {"command": "export", "output": args.output, "format": "netx", "timesteps": net.timesteps,
               "input_coding": net.input_coding, "layers": [{"name": l.name, "kind": l.kind, "input_shape": l.input_shape,
                                                               "output_shape": l.output_shape, "vth": l.vth,
                                                               "scale": l.scale, "source": l.source} for l in net.layers],
               "quantization": report.to_json(), "fit": fit.to_json(), "residual_relays": relays}
    write_json(args.json, summary)
    return summary


def relay_overhead(net) -> dict:
    """The relays that carry residual shortcuts through the chain (toolchain.ir.relays): neurons and synapses."""
    from ..analysis.energy import relay_synapses
    return {"neurons": int(sum(l.relay_neurons for l in net.layers)),
            "synapses": int(sum(relay_synapses(l) for l in net.layers))}


# -- simulate ----------------------------------------------------------------------------------
def data_for_netx(net, args):
    info = dict(net.metadata.get("dataset_info") or {})
    how = getattr(args, "normalize", None)
    if how == "none":
        raise CliError("--normalize none goes with --inputs (a dataset is normalized: standard or unit)")
    if how:
        info["normalize"] = how
    return recorded_dataset(info, args)


def result_to_json(net, result: SimulationResult) -> dict:
    out = result.to_json(net)
    out["spike_count_maps"] = {"input": result.input_spike_counts,
                               **{n: c for n, c in zip(result.layer_names, result.spike_counts)}}
    return out


def _counts(path: str, name: str, value) -> np.ndarray:
    """A layer's spike counts from a simulation JSON: numbers, finite, >= 0 (CliError naming the layer)."""
    counts = np.asarray(value)
    if counts.dtype.kind not in "iuf" or not np.isfinite(counts).all() or (counts < 0).any():
        raise CliError(f"{path}: the spike counts of '{name}' must be finite numbers >= 0")
    return counts


def result_from_json(path: str) -> SimulationResult:
    try:
        with open(path) as f:
            d = json.load(f)
        maps = d["spike_count_maps"]
        samples, timesteps = d["samples"], d["timesteps"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (samples, timesteps)):
            raise CliError(f"{path}: samples and timesteps must be integers >= 1, got {samples!r} and {timesteps!r}")
        return SimulationResult(backend=str(d["backend"]), samples=samples, timesteps=timesteps,
                                predictions=np.zeros(samples, np.int64), labels=None,
                                layer_names=[l["name"] for l in d["layers"]],
                                spike_counts=[_counts(path, l["name"], maps[l["name"]]) for l in d["layers"]],
                                input_spike_counts=_counts(path, "input", maps["input"]))
    except FileNotFoundError:
        raise CliError(f"{path}: no such simulation JSON") from None
    except (ValueError, KeyError, TypeError, AttributeError, MemoryError) as exc:
        raise CliError(f"{path}: not a JSON written by 'snntc simulate --json' ({type(exc).__name__}: {exc})") from None


def fed_inputs(args):
    """(the network as it is fed, chip input (N, T, *input_shape), labels or None, the netx file Lava loads or
    None) from --inputs/--labels or the dataset (recorded in the file, or --dataset), --coding, --normalize,
    --input-shape, --timesteps, --samples."""
    from .. import inputs as user
    from ..io.netx import read_netx
    net = read_netx(args.model, timesteps=args.timesteps, input_shape=args.input_shape)
    net.input_feed = args.input_feed
    if args.inputs:
        x = user.load_array(args.inputs, "--inputs")
        labels = user.load_array(args.labels, "--labels", labels=True) if args.labels else None
        labels = user.check_labels(labels, len(x), net.num_classes)
        n = min(args.samples or len(x), len(x))
        x, labels = x[:n], (None if labels is None else labels[:n])
        fed, chip = user.chip_inputs(net, x, coding=args.coding, how=args.normalize or "none",
                                     timesteps=args.timesteps, seed=args.seed)
    else:
        if args.labels:
            raise CliError("--labels goes with --inputs (a dataset brings its own labels)")
        data = data_for_netx(net, args)
        n = min(args.samples or args.default_samples, len(data.test_x))
        labels = data.test_y[:n]
        fed, chip = user.chip_inputs(net, data.test_x[:n], coding=args.coding, timesteps=args.timesteps,
                                     seed=args.seed, samples_only=True)
        if data.num_classes != net.num_classes:
            raise CliError(f"dataset '{data.name}' has {data.num_classes} classes, the network {net.num_classes} "
                           f"(output neurons): pass the --dataset it was trained on, or --inputs/--labels")
    same_file = fed.timesteps == net.timesteps and not args.timesteps
    return fed, chip, labels, (args.model if same_file else None)


def run_simulation(args):
    from ..deploy import run_chip_input
    net, chip, labels, source = fed_inputs(args)
    result = run_chip_input(net, chip, labels, source=source, backend=args.backend, fixed_point=not args.float,
                            target=getattr(args, "sim_target", None) or args.target,
                            progress=not args.no_progress)
    return net, result


def print_simulation(net, result: SimulationResult) -> None:
    acc = result.accuracy
    print(f"{result.backend}: {result.samples} samples x {result.timesteps} steps in {result.wall_time_s:.2f} s "
          f"({result.samples / max(result.wall_time_s, 1e-9):.1f} samples/s); "
          + ("no labels" if acc is None else f"accuracy {acc:.2%}"))
    print(f"{'layer':<10} {'neurons':>8} {'spikes':>10} {'per inference':>14} {'per neuron':>11}")
    print(f"{'input':<10} {int(np.prod(result.input_spike_counts.shape)):>8} {int(result.input_spike_counts.sum()):>10} "
          f"{result.input_spike_counts.sum() / result.samples:>14.1f}")
    rows = result.to_json(net)["layers"]
    for row in rows:
        if row.get("readout") == "voltage":
            print(f"{row['name']:<10} {row['neurons']:>8} {VOLTAGE_READOUT:>37}")
            continue
        print(f"{row['name']:<10} {row['neurons']:>8} {row['spikes']:>10} {row['spikes_per_inference']:>14.1f} "
              f"{row['spikes_per_inference'] / row['neurons']:>11.3f}")
    if any(row.get("readout") == "voltage" for row in rows):
        print(VOLTAGE_READOUT_NOTE)


def cmd_simulate(args) -> dict:
    from ..deploy import saturated_outputs
    configure_threads()
    net, result = run_simulation(args)
    print_simulation(net, result)
    summary = {"command": "simulate", "model": args.model, **result_to_json(net, result),
               "saturated_output_samples": saturated_outputs(net, result)}
    if args.energy:
        summary["energy"] = energy_summary(net, result, args.energy_target, args.plot)
    write_json(args.json, summary)
    return summary


# -- verify ------------------------------------------------------------------------------------
def cmd_verify(args) -> dict:
    configure_threads()
    net, inputs, _, source = fed_inputs(args)
    check_fixed_point_run(net, len(inputs), net.timesteps, "verifying", record=True)
    report = SIMULATORS.get("lava").compare(net, inputs, progress=not args.no_progress, source=source)
    print(report.summary())
    print(f"Lava {report.lava_time_s:.2f} s, emulator {report.emulator_time_s:.3f} s")
    summary = {"command": "verify", "model": args.model, "ok": report.ok, "samples": report.samples,
               "timesteps": report.timesteps, "spike_mismatches": report.spike_mismatches,
               "voltage_mismatches": report.voltage_mismatches,
               "first_mismatch": None if report.first_mismatch is None else report.first_mismatch.__dict__,
               "lava_spikes": report.lava_spikes, "emulator_spikes": report.emulator_spikes}
    write_json(args.json, summary)
    if not report.ok:
        raise CliError(f"emulator and Lava differ: {report.first_mismatch}")
    return summary


# -- energy and fit ----------------------------------------------------------------------------
def energy_summary(net, result, target: str, plot: str = None) -> dict:
    from ..analysis.energy import count_operations, estimate_energy, format_energy_table, plot_energy
    counts = count_operations(net, result)
    report = estimate_energy(counts, target)
    print(format_energy_table(report))
    if plot:
        plot_energy(report, plot)
        print(f"plot: {plot}")
    return {"counts": counts.to_json(), "energy": report.to_json()}


def cmd_energy(args) -> dict:
    from ..io.netx import read_netx
    configure_threads()
    TARGETS.get(args.energy_target)
    net = read_netx(args.model, timesteps=args.timesteps, input_shape=args.input_shape)
    if args.from_json:
        result = result_from_json(args.from_json)
        shapes = [tuple(net.input_shape)] + [tuple(l.output_shape) for l in net.layers]
        found = [result.input_spike_counts.shape] + [c.shape for c in result.spike_counts]
        if [l.name for l in net.layers] != result.layer_names or shapes != found:
            raise CliError(f"{args.from_json} was simulated on another network (layers {result.layer_names}, "
                           f"shapes {found})")
    else:
        net, result = run_simulation(args)
    summary = {"command": "energy", "model": args.model, "target": args.energy_target,
               **energy_summary(net, result, args.energy_target, args.plot)}
    write_json(args.json, summary)
    return summary


def cmd_fit(args) -> dict:
    from ..io.netx import read_netx
    net = read_netx(args.model)
    fit = TARGETS.get(args.limits).check_fit(net)
    print(fit.format_fit_table())
    write_json(args.json, {"command": "fit", "model": args.model, **fit.to_json()})
    fit.raise_if_not_fit()
    return fit.to_json()


def shape_arg(text: str):
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        shape = ()
    if not shape or len(shape) not in (1, 3) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W or F (positive integers), got {text!r}")
    return shape


SIMULATION_IO = CommandIO(inputs=("model", "inputs", "labels"), outputs=("json", "plot"))


def _sim_args(p, samples_default=200, hardware_target=True):
    from .. import inputs as user
    from ..coding import CODINGS
    p.add_argument("model", help="netx file (from snntc export, or any netx file of CUBA neurons: input, conv, flatten, "
                                 "dense, dense_rec, delays; see the README)")
    p.add_argument("--samples", type=positive_int, default=None,
                   help=f"samples (default: {samples_default} of the dataset's test split, every sample of --inputs)")
    p.set_defaults(default_samples=samples_default)
    g = p.add_argument_group("inputs (default: the test split of the dataset the file records)")
    g.add_argument("--inputs", metavar="X.npy", help="inputs: chip input (N, T, *input_shape), integer spikes or "
                   "graded events fed as they are, or samples (N, *input_shape), normalized and coded; any shape "
                   "of the input's size per sample or step is reshaped to it")
    g.add_argument("--labels", metavar="Y.npy", help="with --inputs: class index per sample (N,), for the accuracy")
    g.add_argument("--coding", default=None, choices=CODINGS.names(),
                   help="how samples are coded into chip input: " + "; ".join(f"{c.name}: {c.summary}"
                                                                               for c in CODINGS.entries())
                   + " (default: the file's coding, poisson for a file that records none)")
    g.add_argument("--normalize", default=None, choices=list(user.NORMALIZATIONS),
                   help="; ".join(f"{k}: {v}" for k, v in user.NORMALIZATIONS.items())
                   + " (default: none for --inputs, the file's recorded normalization for a dataset)")
    g.add_argument("--input-shape", type=shape_arg, default=None, metavar="C,H,W",
                   help="the input shape, for a file without an input layer that starts with a conv")
    g.add_argument("--input-feed", default="spikes", choices=list(INPUT_FEEDS),
                   help="a file whose input layer has a neuron: the chip input goes into that neuron's a_in step by "
                        "step (spikes, default) or each sample is its bias (bias: every step of a sample the same, "
                        "e.g. --coding direct), as lava-dl feeds such networks")
    p.add_argument("--timesteps", type=timesteps_int, default=None, help="time steps (default: the file's)")
    p.add_argument("--backend", default=None, choices=SIMULATORS.names(),
                   help=SIMULATORS.help() + " (default: Lava up to 32 samples, the emulator above)")
    p.add_argument("--float", action="store_true", help="Lava's floating-point models instead of fixed point")
    if hardware_target:
        hardware = list(dict.fromkeys(h for s in SIMULATORS.entries() for h in s.hardware))
        p.add_argument("--target", default="sim", choices=hardware,
                       help="where to run: sim (this machine's CPU) or a chip (loihi2 needs lava-loihi)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the Poisson input")
    p.add_argument("--dataset", default=None, help="dataset (default: the one recorded in the file)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--no-progress", action="store_true")
    add_json_arg(p)


def register(sub) -> None:
    p = sub.add_parser("export", help=command_help("export"),
                       description="Lower the SNN (fold pooling and batch norm into the next/previous layer), quantize "
                                   "it to Loihi's fixed point (8-bit weights, 17-bit thresholds, 12-bit decays) and "
                                   "write a Lava-DL netx file that the stock netx loader runs. Prints the layer table, "
                                   "the quantization report and the Loihi 2 fit check.")
    p.add_argument("model", help="SNN checkpoint")
    p.add_argument("-o", "--output", required=True, help="output file (model.net)")
    p.add_argument("--format", default="netx", choices=["netx", "nir", "onnx"], help="netx (default), nir, onnx")
    p.add_argument("--allow-misfit", action="store_true",
                   help="write a netx file even if the network does not fit Loihi 2 (by default export then exits "
                        "with status 2, naming the layer and the limit, and writes nothing)")
    p.add_argument("--data-root", default=None)
    add_json_arg(p)
    add_nir_export_args(p)
    p.set_defaults(func=cmd_export, io=CommandIO(inputs=("model",), outputs=("output", "json")))

    p = sub.add_parser("simulate", help=command_help("simulate"),
                       description="Feed coded test samples through the network and print accuracy, spikes per layer "
                                   "(total and per inference) and wall time. State is reset between samples.")
    _sim_args(p)
    p.add_argument("--energy", action="store_true", help="also print the energy table")
    p.add_argument("--energy-target", default="loihi", choices=TARGETS.names(), help=TARGETS.help(default="loihi"))
    p.add_argument("--plot", metavar="PNG", help="with --energy: plot energy per layer")
    p.set_defaults(func=cmd_simulate, io=SIMULATION_IO)

    p = sub.add_parser("verify", help=command_help("verify"),
                       description="Run both backends on the same coded samples, recording every layer's spikes and "
                                   "voltages at every step; report zero mismatches or the first one.")
    _sim_args(p, samples_default=4)
    p.set_defaults(func=cmd_verify, io=CommandIO(inputs=("model", "inputs", "labels")))

    p = sub.add_parser("energy", help=command_help("energy"),
                       description="Count spikes, synaptic operations (each input spike times its real fan-out) and "
                                   "neuron updates per layer and inference, and price them on a target; the equivalent "
                                   "ANN's MACs on 45 nm CMOS beside them. Every constant carries its source.")
    _sim_args(p, hardware_target=False)
    p.add_argument("--target", dest="energy_target", default="loihi", choices=TARGETS.names(),
                   help=TARGETS.help(default="loihi"))
    p.set_defaults(sim_target="sim")
    p.add_argument("--from", dest="from_json", metavar="SIMULATION.json", help="use a 'snntc simulate --json' result")
    p.add_argument("--plot", metavar="PNG", help="bar chart of energy per layer, SNN beside ANN")
    p.set_defaults(func=cmd_energy, io=CommandIO(inputs=("model", "from_json", "inputs", "labels"), outputs=("json", "plot")))

    p = sub.add_parser("fit", help=command_help("fit"),
                       description="Cores per layer from neurons, synaptic memory and fan-in per core; chips needed. "
                                   "Exits non-zero, naming the layer and the limit, when it does not fit.")
    p.add_argument("model", help="netx file")
    fitting = TARGETS.names(lambda t: t.fit is not None)
    p.add_argument("--limits", default="loihi2", choices=fitting,
                   help=f"the hardware whose limits (its limits.json) to check against: {', '.join(fitting)} (default loihi2)")
    add_json_arg(p)
    p.set_defaults(func=cmd_fit, io=CommandIO(inputs=("model",)))

    from . import commands_demo
    commands_demo.register(sub)

"""Commands of the deployment side: export, simulate, verify, energy, fit (and demo)."""
from __future__ import annotations

import json
import os

import numpy as np

from ..io.checkpoint import load_checkpoint
from ..quantization.fixed_point import SimulationResult
from ..targets import SIMULATORS, TARGETS
from ..errors import ConfigError
from .commands_formats import add_nir_export_args
from .common import CliError, check_output, configure_threads, positive_int, recorded_dataset, write_json



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
    check_output(args.output, args)
    if args.format != "netx":
        from .commands_formats import export_other_format
        return export_other_format(args)
    ckpt = load_checkpoint(args.model, kind="snn")
    from .commands_train import data_for_checkpoint
    train_x = data_for_checkpoint(ckpt, args).train_x      # the input range (direct coding) and sign (Poisson)
    net, report = export_snn(ckpt, args.output, train_x, allow_misfit=args.allow_misfit)
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
    return recorded_dataset(net.metadata.get("dataset_info"), args)


def result_to_json(net, result: SimulationResult) -> dict:
    out = result.to_json()
    out["spike_count_maps"] = {"input": result.input_spike_counts,
                               **{n: c for n, c in zip(result.layer_names, result.spike_counts)}}
    return out


def result_from_json(path: str) -> SimulationResult:
    try:
        with open(path) as f:
            d = json.load(f)
        maps = d["spike_count_maps"]
        return SimulationResult(backend=d["backend"], samples=d["samples"], timesteps=d["timesteps"],
                                predictions=np.zeros(d["samples"], np.int64), labels=None,
                                layer_names=[l["name"] for l in d["layers"]],
                                spike_counts=[np.asarray(maps[l["name"]]) for l in d["layers"]],
                                input_spike_counts=np.asarray(maps["input"]))
    except FileNotFoundError:
        raise CliError(f"{path}: no such simulation JSON") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{path}: not a JSON written by 'snntc simulate --json' ({type(exc).__name__}: {exc})") from None


def run_simulation(args):
    from ..deploy import simulate
    from ..io.netx import read_netx
    net = read_netx(args.model, timesteps=args.timesteps)
    data = data_for_netx(net, args)
    n = min(args.samples, len(data.test_x))
    return simulate(args.model, data.test_x[:n], data.test_y[:n], timesteps=args.timesteps, backend=args.backend,
                    fixed_point=not args.float, target=getattr(args, "sim_target", None) or args.target,
                    seed=args.seed, progress=not args.no_progress)


def print_simulation(net, result: SimulationResult) -> None:
    acc = result.accuracy
    print(f"{result.backend}: {result.samples} samples x {result.timesteps} steps in {result.wall_time_s:.2f} s "
          f"({result.samples / max(result.wall_time_s, 1e-9):.1f} samples/s); accuracy {acc:.2%}")
    print(f"{'layer':<10} {'neurons':>8} {'spikes':>10} {'per inference':>14} {'per neuron':>11}")
    print(f"{'input':<10} {int(np.prod(result.input_spike_counts.shape)):>8} {int(result.input_spike_counts.sum()):>10} "
          f"{result.input_spike_counts.sum() / result.samples:>14.1f}")
    for row in result.to_json()["layers"]:
        print(f"{row['name']:<10} {row['neurons']:>8} {row['spikes']:>10} {row['spikes_per_inference']:>14.1f} "
              f"{row['spikes_per_inference'] / row['neurons']:>11.3f}")


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
    from ..deploy import encode_for_chip
    from ..io.netx import read_netx
    configure_threads()
    net = read_netx(args.model, timesteps=args.timesteps)
    data = data_for_netx(net, args)
    inputs = encode_for_chip(net, data.test_x[:args.samples], seed=args.seed)
    report = SIMULATORS.get("lava").compare(args.model if not args.timesteps else net, inputs,
                                             progress=not args.no_progress)
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
    net = read_netx(args.model, timesteps=args.timesteps)
    if args.from_json:
        result = result_from_json(args.from_json)
        if [l.name for l in net.layers] != result.layer_names:
            raise CliError(f"{args.from_json} was simulated on another network (layers {result.layer_names})")
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


def _sim_args(p, samples_default=200, hardware_target=True):
    p.add_argument("model", help="netx file (from snntc export, or any netx file of input/conv/flatten/dense CUBA layers)")
    p.add_argument("--samples", type=positive_int, default=samples_default, help=f"test samples (default {samples_default})")
    p.add_argument("--timesteps", type=positive_int, default=None, help="time steps (default: the file's)")
    p.add_argument("--backend", default=None, choices=SIMULATORS.names(),
                   help=SIMULATORS.help() + " (default: Lava up to 32 samples, the emulator above)")
    p.add_argument("--float", action="store_true", help="Lava's floating-point models instead of fixed point")
    if hardware_target:
        hardware = list(dict.fromkeys(h for s in SIMULATORS.entries() for h in s.hardware))
        p.add_argument("--target", default="sim", choices=hardware,
                       help="where to run: sim (this machine's CPU) or a chip (loihi2 needs lava-loihi)")
    p.add_argument("--seed", type=int, default=0, help="seed of the Poisson input")
    p.add_argument("--dataset", default=None, help="dataset (default: the one recorded in the file)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", metavar="FILE", help="write the summary as JSON")


def register(sub) -> None:
    p = sub.add_parser("export", help="quantize an SNN to Loihi fixed point and write a netx HDF5 file",
                       description="Lower the SNN (fold pooling and batch norm into the next/previous layer), quantize "
                                   "it to Loihi's fixed point (8-bit weights, 17-bit thresholds, 12-bit decays) and "
                                   "write a Lava-DL netx file that the stock netx loader runs. Prints the layer table, "
                                   "the quantization report and the Loihi 2 fit check.")
    p.add_argument("model", help="SNN checkpoint")
    p.add_argument("-o", "--output", required=True, help="output file (model.net)")
    p.add_argument("--format", default="netx", choices=["netx", "nir", "onnx"], help="netx (default), nir, onnx")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--allow-misfit", action="store_true",
                   help="write a netx file even if the network does not fit Loihi 2 (by default export then exits "
                        "with status 2, naming the layer and the limit, and writes nothing)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--json", metavar="FILE", help="write the summary as JSON")
    add_nir_export_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("simulate", help="run a netx file in Lava (or the bit-exact emulator) on test samples",
                       description="Feed coded test samples through the network and print accuracy, spikes per layer "
                                   "(total and per inference) and wall time. State is reset between samples.")
    _sim_args(p)
    p.add_argument("--energy", action="store_true", help="also print the energy table")
    p.add_argument("--energy-target", default="loihi", choices=TARGETS.names(), help=TARGETS.help(default="loihi"))
    p.add_argument("--plot", metavar="PNG", help="with --energy: plot energy per layer")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("verify", help="compare the emulator with Lava spike for spike and voltage for voltage",
                       description="Run both backends on the same coded samples, recording every layer's spikes and "
                                   "voltages at every step; report zero mismatches or the first one.")
    _sim_args(p, samples_default=4)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("energy", help="energy per inference from counted synaptic operations",
                       description="Count spikes, synaptic operations (each input spike times its real fan-out) and "
                                   "neuron updates per layer and inference, and price them on a target; the equivalent "
                                   "ANN's MACs on 45 nm CMOS beside them. Every constant carries its source.")
    _sim_args(p, hardware_target=False)
    p.add_argument("--target", dest="energy_target", default="loihi", choices=TARGETS.names(),
                   help=TARGETS.help(default="loihi"))
    p.set_defaults(sim_target="sim")
    p.add_argument("--from", dest="from_json", metavar="SIMULATION.json", help="use a 'snntc simulate --json' result")
    p.add_argument("--plot", metavar="PNG", help="bar chart of energy per layer, SNN beside ANN")
    p.set_defaults(func=cmd_energy)

    p = sub.add_parser("fit", help="check that a netx network fits on Loihi 2",
                       description="Cores per layer from neurons, synaptic memory and fan-in per core; chips needed. "
                                   "Exits non-zero, naming the layer and the limit, when it does not fit.")
    p.add_argument("model", help="netx file")
    fitting = TARGETS.names(lambda t: t.fit is not None)
    p.add_argument("--limits", default="loihi2", choices=fitting,
                   help=f"the hardware whose limits (its limits.json) to check against: {', '.join(fitting)} (default loihi2)")
    p.add_argument("--json", metavar="FILE")
    p.set_defaults(func=cmd_fit)

    from . import commands_demo
    commands_demo.register(sub)

"""Commands for other formats: `snntc import` (an ANN from ONNX, an SNN from NIR) and the NIR / ONNX side of
`snntc export --format nir|onnx` (export_other_format, called by commands_deploy.cmd_export)."""
from __future__ import annotations

import os

from ..io.checkpoint import load_checkpoint, save_checkpoint
from ..errors import DataError
from ..ir import Residual, chain_shapes
from .common import (CliError, add_data_args, add_output_args, check_output, configure_threads, positive_int,
                     write_json)
from .catalog import command_help


def _layer_rows(layers, shape, sources, depth=0):
    rows = []
    shapes = chain_shapes(layers, shape)
    for layer, out in zip(layers, shapes):
        name = "  " * depth + layer.name
        rows.append((name, type(layer).__name__, out, sources.get(layer.name, "")))
        if isinstance(layer, Residual):
            rows.append(("  " * (depth + 1) + "body:", "", "", ""))
            rows += _layer_rows(layer.body, shape, sources, depth + 2)
            rows.append(("  " * (depth + 1) + "shortcut:", "", "", "") if layer.shortcut
                        else ("  " * (depth + 1) + "shortcut: identity", "", "", ""))
            rows += _layer_rows(layer.shortcut, shape, sources, depth + 2)
        shape = out
    return rows


def import_table(ckpt) -> str:
    info = ckpt.training.get("import", {})
    sources = info.get("layer_sources", {})
    rows = _layer_rows(ckpt.network.layers, tuple(ckpt.network.input_shape), sources)
    out = [f"{'layer':<22} {'type':<10} {'output':>14}  {'NIR' if info.get('format') == 'nir' else 'ONNX'} node"]
    out += [f"{n:<22} {t:<10} {str(tuple(s)) if s != '' else '':>14}  {src}" for n, t, s, src in rows]
    return "\n".join(out)


# -- import ------------------------------------------------------------------------------------
def _check_against_data(args, net, data) -> None:
    if tuple(net.input_shape) != tuple(data.input_shape):
        raise CliError(f"{args.model} takes inputs of shape {tuple(net.input_shape)}, but dataset '{data.name}' has "
                       f"{tuple(data.input_shape)}: pass the --dataset the model was trained on")
    if net.num_classes != data.num_classes:
        raise CliError(f"{args.model} has {net.num_classes} outputs, but dataset '{data.name}' has {data.num_classes} "
                       f"classes")


def _import_nir(args) -> dict:
    """`snntc import model.nir`: an SNN checkpoint, evaluated on the dataset's test split."""
    from ..training.ann import dataset_info
    from ..training.evaluate import evaluate_snn, load_snn
    from ..io.nir_import import import_nir
    from .commands_train import data_from_args
    data = data_from_args(args)
    ckpt = import_nir(args.model, dt=args.dt, timesteps=args.timesteps, coding=args.coding,
                      dataset_shape=tuple(data.input_shape))
    net, config = ckpt.network, ckpt.snn
    _check_against_data(args, net, data)
    ckpt.dataset = dataset_info(data, root=args.data_root, seed=args.data_seed, limit=args.limit,
                                normalize=args.normalize)
    if config.model.trains_deployed and config.input_coding.graded:     # the chip's input scale, from the data
        config.input_scale = config.input_coding.input_scale(data.train_x)
    T = config.timesteps
    result = evaluate_snn(load_snn(ckpt), data.test_x, data.test_y, [T])[T]
    ckpt.metrics = {"test_accuracy": result["accuracy"], "timesteps": T,
                    "test_spikes_per_inference": result["spikes_per_inference"]}
    save_checkpoint(ckpt, args.output)
    info = ckpt.training["import"]
    print(import_table(ckpt))
    for note in info["notes"]:
        print(f"note: {note}")
    reset = "" if not config.model.resettable else f", reset {'to zero' if config.reset == 'zero' else 'by subtraction'}"
    print(f"imported {args.model} ({info['producer']}; {len(net.spiking_layers)} spiking layers, {config.neuron} "
          f"neurons{reset}, dt {info['dt']:g} s, T={T}, {config.coding} input): test accuracy "
          f"{result['accuracy']:.2%} on {data.name} ({len(data.test_x)} samples) -> {args.output}")
    summary = {"command": "import", "format": "nir", "model": args.model, "output": args.output, "dataset": data.name,
               "input_shape": list(net.input_shape), "num_classes": net.num_classes, "timesteps": T,
               "neuron": config.neuron, "reset": config.reset, "dt": info["dt"],
               "test_accuracy": result["accuracy"], "network": net.to_dict(), "layer_sources": info["layer_sources"],
               "notes": info["notes"]}
    write_json(args.json, summary)
    return summary


def cmd_import(args) -> dict:
    from ..training.ann import ann_accuracy, dataset_info, load_ann
    from ..io.nir_import import is_nir_file
    from ..io.onnx import import_onnx
    from .commands_train import data_from_args
    configure_threads()
    check_output(args.output, args)
    if args.model.endswith(".nir") or is_nir_file(args.model):
        return _import_nir(args)
    ckpt = import_onnx(args.model, num_classes=args.num_classes)
    net = ckpt.network
    data = data_from_args(args)
    _check_against_data(args, net, data)
    ckpt.dataset = dataset_info(data, root=args.data_root, seed=args.data_seed, limit=args.limit,
                                normalize=args.normalize)
    acc = ann_accuracy(load_ann(ckpt), data.test_x, data.test_y)
    ckpt.metrics = {"test_accuracy": acc}
    save_checkpoint(ckpt, args.output)
    info = ckpt.training["import"]
    print(import_table(ckpt))
    for note in info["notes"]:
        print(f"note: {note}")
    # its warnings came through `warnings` (one line each on stderr)
    print(f"imported {args.model} ({len(net.spiking_layers)} ReLUs -> spiking layers, input {tuple(net.input_shape)}, "
          f"{net.num_classes} classes): test accuracy {acc:.2%} on {data.name} ({len(data.test_x)} samples) -> {args.output}")
    summary = {"command": "import", "model": args.model, "output": args.output, "dataset": data.name,
               "input_shape": list(net.input_shape), "num_classes": net.num_classes, "test_accuracy": acc,
               "network": net.to_dict(), "layer_sources": info["layer_sources"], "notes": info["notes"],
               "warnings": info["warnings"]}
    write_json(args.json, summary)
    return summary


# -- export --format nir | onnx ----------------------------------------------------------------
def _train_x_if_available(ckpt, args):
    """The training images (the fixed-point input range); the float NIR graph does not need them."""
    from .commands_train import data_for_checkpoint
    try:
        return data_for_checkpoint(ckpt, args).train_x
    except DataError as exc:
        print(f"note: dataset not available ({exc}); fixed-point metadata may be left out")
        return None


def _nir_options(args):
    from ..io.nir import NirOptions
    return NirOptions(dt=args.dt, pool=args.pool, dense=args.dense, if_node=args.if_node, quantized=args.quantized)


def _reset_effect(ckpt, args):
    """What reset to zero changes on up to 512 test samples (IF/LIF networks that reset by subtraction)."""
    from .commands_train import data_for_checkpoint
    from ..io.nir import reset_to_zero_effect
    if not ckpt.snn.model.resettable or ckpt.snn.reset != "subtract" or args.quantized:
        return None
    try:
        data = data_for_checkpoint(ckpt, args)
    except DataError:
        return None
    return reset_to_zero_effect(ckpt, data.test_x[:512], data.test_y[:512])


def _export_nir(args) -> dict:
    from ..io.nir import export_nir, reset_warning
    ckpt = load_checkpoint(args.model, kind="snn")
    options = _nir_options(args)
    effect = _reset_effect(ckpt, args)
    graph = export_nir(ckpt, args.output, _train_x_if_available(ckpt, args), options, reset_effect=effect)
    meta = graph.metadata
    kinds = {}
    for node in graph.nodes.values():
        kinds[type(node).__name__] = kinds.get(type(node).__name__, 0) + 1
    fixed = meta["fixed_point"]
    print(f"wrote {args.output} ({os.path.getsize(args.output)} bytes): NIR graph of {len(graph.nodes)} nodes "
          f"({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))}), {len(graph.edges)} edges")
    print(f"neurons: {meta['neuron_model']}, {meta['reset_semantics']}; dt {meta['dt']:g} s per time step, "
          f"T={meta['timesteps']}, {meta['input_coding']} input, {meta['weights']} weights")
    if options.quantized:
        print("deployed integer weights and thresholds in the nodes' fields" +
              (f"; input round(x * {meta['input']['input_scale']:g})" if "input_scale" in meta["input"] else ""))
        for note in filter(None, meta["notes"].split("; ")):
            print(f"note: {note}")
    else:
        print("fixed-point parameters in node metadata" if fixed["available"]
              else f"no fixed-point parameters: {fixed['reason']}")
    if effect:
        print(f"warning: {reset_warning(ckpt.snn.neuron, effect)}")
    return {"command": "export", "format": "nir", "output": args.output, "nodes": len(graph.nodes),
            "edges": [list(e) for e in graph.edges], "node_types": kinds, "neuron_model": meta["neuron_model"],
            "reset_mode": meta["reset_mode"], "dt": meta["dt"], "timesteps": meta["timesteps"],
            "pool": options.pool, "dense": options.dense, "if_node": options.if_node, "quantized": options.quantized,
            "reset_to_zero_effect": effect,
            "fixed_point": {k: v for k, v in fixed.items() if k in ("available", "reason", "input_scale", "input_coding")}}


def export_other_format(args) -> dict:
    """`snntc export MODEL --format nir|onnx -o FILE` (the output was checked by cmd_export)."""
    check_output(args.output, args)
    if args.format == "nir":
        summary = _export_nir(args)
    elif args.format == "onnx":
        from ..io.onnx import export_onnx
        ckpt = load_checkpoint(args.model)
        export_onnx(ckpt, args.output)
        what = "the SNN's ANN (ReLUs where it has spiking neurons; thresholds in metadata_props)" if ckpt.kind == "snn" \
            else "the ANN"
        print(f"wrote {args.output} ({os.path.getsize(args.output)} bytes): ONNX opset 17, {what}; input 'input' "
              f"(N, {', '.join(map(str, ckpt.network.input_shape))}), output 'logits' (N, {ckpt.network.num_classes})")
        summary = {"command": "export", "format": "onnx", "output": args.output, "kind": ckpt.kind, "opset": 17,
                   "input_shape": list(ckpt.network.input_shape), "num_classes": ckpt.network.num_classes}
    else:
        raise CliError(f"unknown export format {args.format!r}; valid: netx, nir, onnx")
    write_json(args.json, summary)
    return summary


def add_nir_export_args(p) -> None:
    """The options of `snntc export --format nir` (they apply to that format only)."""
    from ..io.nir import DEFAULT_DT
    g = p.add_argument_group("NIR (--format nir)")
    g.add_argument("--dt", type=float, default=DEFAULT_DT,
                   help=f"seconds per time step (default {DEFAULT_DT:g}): NIR stores continuous-time constants "
                        "(tau = dt / (1 - leak), r = tau / dt ...), so a consumer must run the file with this same dt. "
                        "1e-4 is what SpikingJelly's import assumes by default and snnTorch's hard-codes (its LIF "
                        "and CubaLIF mapping is wrong at any other dt); Norse takes from_nir(dt=...) and defaults to "
                        "1e-3. The network computed is the same for every dt")
    g.add_argument("--pool", default="sum", choices=["sum", "avg"],
                   help="sum (default): each average pool as a SumPool2d, the next conv/dense layer's weights "
                        "divided by k*k (exact for 2x2 pools): snnTorch, Norse, SpikingJelly and Sinabs all read it. "
                        "avg: AvgPool2d, which Norse and Sinabs cannot read")
    g.add_argument("--dense", default="affine", choices=["affine", "linear"],
                   help="affine (default): every dense layer as an Affine node (zero bias where it has none; Sinabs "
                        "reads only Affine). linear: a Linear node where the layer has no bias")
    g.add_argument("--if-node", default="if", choices=["if", "lif"],
                   help="if (default): IF neurons as NIR IF nodes. lif: as LIF nodes of time constant dt * 2^26, "
                        "whose leak per step rounds to 1.0 in float32: for snnTorch, which cannot run IF nodes (it "
                        "runs these, resetting to zero); not for Norse, whose LIF ignores r and so scales the input "
                        "by dt / tau")
    g.add_argument("--quantized", action="store_true",
                   help="write the deployed network (what netx and Lava run): pooling folded, Loihi's integer "
                        "weights and CUBA neurons in the standard fields, direct input as round(x * input_scale); "
                        "without it the float weights are written and the integers go to metadata only")


def register(sub) -> None:
    p = sub.add_parser("import", help=command_help("import"),
                       description="ONNX: read a classifier (Conv, Gemm/MatMul, Relu, AveragePool, GlobalAveragePool, "
                                   "BatchNormalization, Flatten/Reshape, Dropout, Add residual blocks) into an ANN "
                                   "checkpoint that 'snntc convert' takes like a trained one. Batch norm is folded into "
                                   "the conv/dense layer before it; a final Softmax is dropped. "
                                   "NIR (a .nir file, e.g. from snnTorch, Norse, SpikingJelly or snntc): read a chain of "
                                   "Conv2d, Affine/Linear, AvgPool2d/SumPool2d, Flatten, IF, LIF and CubaLIF nodes into "
                                   "an SNN checkpoint for evaluate, finetune (e.g. --neuron loihi-cuba) and export. "
                                   "IF/LIF neurons keep their reset to zero; CubaLIF becomes Loihi's CUBA neuron, which "
                                   "the toolchain runs quantized; the last dense layer must feed the output (its output "
                                   "summed over the time steps is the readout). Either way the model's input must match "
                                   "the dataset, normalized as --normalize says (as the model was trained).")
    p.add_argument("model", help="ONNX or NIR file")
    p.add_argument("--num-classes", type=positive_int, default=None,
                   help="expected number of classes (checked against the model's output; ONNX)")
    g = p.add_argument_group("NIR")
    g.add_argument("--dt", type=float, default=None,
                   help="seconds per time step the network was trained with (default: the file's 'dt' metadata, "
                        "else 1e-4, SpikingJelly's default; Norse's is 1e-3). NIR stores continuous-time constants: "
                        "a wrong dt gives other leaks and input gains, a different network")
    g.add_argument("--timesteps", type=positive_int, default=None,
                   help="time steps per sample (default: the file's metadata; required where it has none)")
    g.add_argument("--coding", default=None, choices=["direct", "poisson"],
                   help="input coding (default: the file's metadata, else direct: the image every step)")
    add_data_args(p)
    add_output_args(p, help_text="output ANN checkpoint")
    p.set_defaults(func=cmd_import)

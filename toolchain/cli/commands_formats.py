"""Commands for other formats: `snntc import` (an ANN from ONNX) and the NIR / ONNX side of
`snntc export --format nir|onnx` (export_other_format, called by commands_deploy.cmd_export)."""
from __future__ import annotations

import os

from ..io.checkpoint import load_checkpoint, save_checkpoint
from ..errors import DataError
from ..ir import Residual, chain_shapes
from .common import CliError, CommandIO, add_data_args, add_output_args, configure_threads, positive_int, write_json


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
    sources = ckpt.training.get("import", {}).get("layer_sources", {})
    rows = _layer_rows(ckpt.network.layers, tuple(ckpt.network.input_shape), sources)
    out = [f"{'layer':<22} {'type':<10} {'output':>14}  ONNX node"]
    out += [f"{n:<22} {t:<10} {str(tuple(s)) if s != '' else '':>14}  {src}" for n, t, s, src in rows]
    return "\n".join(out)


# -- import ------------------------------------------------------------------------------------
def cmd_import(args) -> dict:
    from ..training.ann import ann_accuracy, dataset_info, load_ann
    from ..io.onnx import import_onnx
    from .commands_train import data_from_args
    configure_threads()
    ckpt = import_onnx(args.model, num_classes=args.num_classes)
    net = ckpt.network
    data = data_from_args(args)
    if tuple(net.input_shape) != tuple(data.input_shape):
        raise CliError(f"{args.model} takes inputs of shape {tuple(net.input_shape)}, but dataset '{data.name}' has "
                       f"{tuple(data.input_shape)}: pass the --dataset the model was trained on")
    if net.num_classes != data.num_classes:
        raise CliError(f"{args.model} has {net.num_classes} outputs, but dataset '{data.name}' has {data.num_classes} "
                       f"classes")
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


def export_other_format(args) -> dict:
    """`snntc export MODEL --format nir|onnx -o FILE` (the outputs were checked before the command ran)."""
    if args.format == "nir":
        from ..io.nir import export_nir
        ckpt = load_checkpoint(args.model, kind="snn")
        graph = export_nir(ckpt, args.output, _train_x_if_available(ckpt, args))
        meta = graph.metadata
        kinds = {}
        for node in graph.nodes.values():
            kinds[type(node).__name__] = kinds.get(type(node).__name__, 0) + 1
        fixed = meta["fixed_point"]
        print(f"wrote {args.output} ({os.path.getsize(args.output)} bytes): NIR graph of {len(graph.nodes)} nodes "
              f"({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))}), {len(graph.edges)} edges")
        print(f"neurons: {meta['neuron_model']}, {meta['reset_semantics']}; dt {meta['dt']:g} per time step, "
              f"T={meta['timesteps']}, {meta['input_coding']} input")
        print("fixed-point parameters in node metadata" if fixed["available"]
              else f"no fixed-point parameters: {fixed['reason']}")
        summary = {"command": "export", "format": "nir", "output": args.output, "nodes": len(graph.nodes),
                   "edges": [list(e) for e in graph.edges], "node_types": kinds, "neuron_model": meta["neuron_model"],
                   "reset_mode": meta["reset_mode"], "dt": meta["dt"], "timesteps": meta["timesteps"],
                   "fixed_point": {k: v for k, v in fixed.items() if k in ("available", "reason", "input_scale", "input_coding")}}
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


def register(sub) -> None:
    p = sub.add_parser("import", help="import an ANN from ONNX (bring your own model)",
                       description="Read an ONNX classifier (Conv, Gemm/MatMul, Relu, AveragePool, GlobalAveragePool, "
                                   "BatchNormalization, Flatten/Reshape, Dropout, Add residual blocks) into an ANN "
                                   "checkpoint that 'snntc convert' takes like a trained one. Batch norm is folded into "
                                   "the conv/dense layer before it; a final Softmax is dropped. The model's input must "
                                   "match the dataset, normalized as --normalize says (as the model was trained).")
    p.add_argument("model", help="ONNX file")
    p.add_argument("--num-classes", type=positive_int, default=None,
                   help="expected number of classes (checked against the model's output)")
    add_data_args(p)
    add_output_args(p, help_text="output ANN checkpoint")
    p.set_defaults(func=cmd_import, io=CommandIO(inputs=("model",), outputs=("output", "json")))

"""The demo's deployment half: fine-tune under Loihi's dynamics and quantization (QAT), export netx,
evaluate the exported network on the whole test split with the bit-exact emulator, run a few samples
in Lava's simulator (checking they agree with the emulator), and price the spikes on every target."""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from ..deploy import export_snn, simulate
from ..quantization.fixed_point import VOLTAGE_READOUT
from ..targets import TARGETS
from ..training.finetune import finetune
from ..training.loop import TrainConfig

def _energy_per_target(net, result, out_dir):
    from ..analysis.energy import count_operations, estimate_energy, plot_energy
    counts = count_operations(net, result)
    rows = {}
    for target in TARGETS.names():
        report = estimate_energy(counts, target)
        rows[target] = {"snn_pj_per_inference": report.snn_total_pj, "ann_pj_per_inference": report.ann_total_pj,
                        "snn_is_upper_bound": report.snn_is_upper_bound}
        if target == "loihi":
            plot_energy(report, os.path.join(out_dir, "energy_loihi.png"))
    return counts, rows


def run_deploy(cfg, out_dir: str, data, hybrid, log: Callable[[str], None] = print, progress: bool = True) -> dict:
    T = cfg.hybrid_timesteps
    qat = finetune(hybrid, data, TrainConfig(epochs=cfg.deploy_epochs, lr=cfg.deploy_lr, batch_size=32, seed=cfg.seed,
                                             augment=cfg.augment),
                   os.path.join(out_dir, "loihi.pt"), neuron="loihi-cuba", surrogate={"name": "linear"},
                   progress=progress, overwrite=True)                # the demo rewrites its own --out directory
    qat_acc = qat.metrics["test_accuracy"]
    log(f"[deploy 1/4] fine-tuned under Loihi CUBA dynamics and 8-bit quantization: validation "
        f"{qat.metrics['val_accuracy']:.2%} (start {qat.training['state']['history'][0]['val_accuracy']:.2%}), "
        f"test {qat_acc:.2%} at T={T}")
    path = os.path.join(out_dir, "model.net")
    net, report = export_snn(qat, path, data.train_x, overwrite=True)
    log(f"[deploy 2/4] exported {path}: " + ", ".join(f"{l.name} ({l.kind} {l.source})" for l in net.layers))
    net, emu = simulate(path, data.test_x, data.test_y, backend="emulator")
    log(f"[deploy 3/4] bit-exact emulator, whole test split: {emu.accuracy:.2%} on {emu.samples} samples "
        f"({emu.samples / max(emu.wall_time_s, 1e-9):.0f} samples/s)")
    n = min(cfg.lava_samples, len(data.test_x))
    _, lava = simulate(path, data.test_x[:n], data.test_y[:n], backend="lava", progress=progress)
    agree = bool(np.array_equal(lava.predictions, emu.predictions[:n]))
    per_layer = ", ".join(f"{row['name']} " + (VOLTAGE_READOUT if row.get("readout") == "voltage" else
                                                f"{row['spikes_per_inference']:.1f}") for row in lava.to_json(net)["layers"])
    log(f"[deploy 4/4] Lava fixed point, {n} samples: accuracy {lava.accuracy:.2%}, predictions "
        f"{'identical to' if agree else 'DIFFERENT from'} the emulator's; spikes per inference: {per_layer}")
    counts, energy = _energy_per_target(net, emu, out_dir)
    log(f"energy per inference ({counts.total('synaptic_ops'):.0f} synaptic ops, "
        f"{counts.total('spikes'):.0f} spikes): "
        + "; ".join(f"{t} {e['snn_pj_per_inference'] / 1e3:.1f} nJ{' (bound)' if e['snn_is_upper_bound'] else ''}"
                    for t, e in energy.items())
        + f"; the ANN on 45 nm CMOS {energy['cmos45nm']['ann_pj_per_inference'] / 1e3:.1f} nJ")
    return {"timesteps": T, "qat_accuracy": qat_acc, "netx": path, "emulator_accuracy": emu.accuracy,
            "emulator_samples": emu.samples, "lava": {"samples": n, "accuracy": lava.accuracy,
                                                      "agrees_with_emulator": agree, **lava.to_json(net)},
            "quantization": report.to_json(), "energy": energy,
            "synaptic_ops_per_inference": counts.total("synaptic_ops"),
            "spikes_per_inference": counts.total("spikes")}

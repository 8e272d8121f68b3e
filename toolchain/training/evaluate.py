"""Evaluation: accuracy and spikes of an SNN at a list of time steps (and the ANN beside it)."""
from __future__ import annotations

from typing import Dict, Iterable

import numpy as np
import torch
from ..progress import progress_bar

from ..io.checkpoint import Checkpoint
from dataclasses import replace

from ..coding import InputEncoder
from ..snn import SnnModel
from .loop import batches


def load_snn(ckpt: Checkpoint, device="cpu", **overrides) -> SnnModel:
    config = replace(ckpt.snn, **overrides)
    model = SnnModel(ckpt.network, config)
    model.load_state_dict(ckpt.state_dict)
    return model.to(device).eval()


@torch.no_grad()
def evaluate_snn(model: SnnModel, x: np.ndarray, y: np.ndarray, timesteps: Iterable[int], batch_size: int = 256,
                 seed: int = 0, progress: bool = False) -> Dict[int, dict]:
    """Per T: accuracy, spikes per inference (all spiking layers), and per layer spikes per neuron per inference."""
    model.eval()
    device = next(model.parameters()).device
    results = {}
    for T in timesteps:
        encoder = InputEncoder(model.config.coding, seed=seed)
        correct, spikes, neurons = 0, {}, {}
        for xb, yb in progress_bar(batches(x, y, batch_size, device), progress, desc=f"SNN T={T}", leave=False):
            out = model(xb, T, encoder)
            correct += int((out.logits.argmax(1) == yb).sum())
            for name, c in out.spike_counts.items():
                spikes[name] = spikes.get(name, 0.0) + float(c.sum())
            neurons = out.neurons
        n = max(len(x), 1)
        results[int(T)] = {
            "accuracy": correct / n,
            "spikes_per_inference": sum(spikes.values()) / n,
            "layers": {name: {"neurons": neurons[name], "spikes_per_inference": s / n,
                              "spikes_per_neuron": s / n / neurons[name]} for name, s in spikes.items()},
        }
    return results

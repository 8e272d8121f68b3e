"""Evaluation: accuracy and spikes of an SNN at a list of time steps (and the ANN beside it)."""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, Iterable

import numpy as np
import torch

from ..coding import InputEncoder
from ..io.checkpoint import Checkpoint
from ..progress import progress_bar
from ..limits import check_snn_run
from ..snn import SnnModel
from .. import sharding
from . import distributed
from .loop import shards


def load_snn(ckpt: Checkpoint, device="cpu", **overrides) -> SnnModel:
    config = replace(ckpt.snn, **overrides)
    model = SnnModel(ckpt.network, config)
    model.load_state_dict(ckpt.state_dict)
    return model.to(device).eval()


@torch.no_grad()
def evaluate_snn(model: SnnModel, x: np.ndarray, y: np.ndarray, timesteps: Iterable[int], batch_size: int = 256,
                 seed: int = 0, progress: bool = False) -> Dict[int, dict]:
    """Per T: accuracy, spikes per inference (all spiking layers), and per layer spikes per neuron per inference.
    Under torchrun each process runs its rows of each batch (the same input spikes as one process) and the counts
    are summed: call it on every process."""
    model.eval()
    device = next(model.parameters()).device
    timesteps = [int(T) for T in timesteps]
    check_snn_run(model.net, min(batch_size, max(len(x), 1)), max(timesteps), "evaluating the SNN", device)
    results = {}
    for T in timesteps:
        encoder = InputEncoder(model.config.coding, seed=seed)
        correct, spikes, neurons = 0, {}, {}
        for xb, yb, shard in progress_bar(shards(x, y, batch_size, device), progress and distributed.is_main(),
                                          desc=f"SNN T={T}", leave=False):
            if shard is not None and not shard.real:
                continue
            with sharding.shard_of_batch(shard):
                out = model(xb, T, encoder)
            correct += int((out.logits.argmax(1) == yb).sum())
            for name, c in out.spike_counts.items():
                spikes[name] = spikes.get(name, 0.0) + float(c.sum())
            neurons = out.neurons
        correct, spikes, neurons = _summed(correct, spikes, neurons)
        n = max(len(x), 1)
        results[int(T)] = {
            "accuracy": correct / n,
            "spikes_per_inference": sum(spikes.values()) / n,
            "layers": {name: {"neurons": neurons[name], "spikes_per_inference": s / n,
                              "spikes_per_neuron": s / n / neurons[name]} for name, s in spikes.items()},
        }
    return results


def _summed(correct: int, spikes: Dict[str, float], neurons: Dict[str, int]):
    """The counts of every process summed (in one process: as they are)."""
    parts = distributed.all_gather_objects((correct, spikes, neurons))
    if len(parts) == 1:
        return correct, spikes, neurons
    total, summed, sizes = 0, {}, {}
    for c, s, n in parts:
        total += c
        for name, v in s.items():
            summed[name] = summed.get(name, 0.0) + v
        sizes.update(n)
    return total, summed, sizes

"""Stage 1: dataset -> ANN checkpoint. Train the ANN under the SNN constraints (no bias, ReLU,
average pooling, dropout; batch norm only where it folds into a conv)."""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from models import build_model

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .data import Dataset
from .errors import CheckpointError
from .torch_net import AnnModel
from .training import TrainConfig, batches, resolve_device, seed_everything, train


def dataset_info(data: Dataset, **args) -> dict:
    """What a later stage needs to load the same data again, and to code inputs as training did."""
    return {"name": data.name, "input_shape": list(data.input_shape), "num_classes": data.num_classes,
            "mean": list(map(float, data.mean)), "std": list(map(float, data.std)), "classes": list(data.classes),
            **args}


@torch.no_grad()
def ann_accuracy(model: AnnModel, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for xb, yb in batches(x, y, batch_size, device):
        correct += int((model(xb).argmax(1) == yb).sum())
    return correct / max(len(x), 1)


def train_ann(data: Dataset, model_name: str, cfg: TrainConfig, out_path: str, resume: bool = False,
              batch_norm: bool = False, progress: bool = True, data_args: Optional[dict] = None) -> Checkpoint:
    """Train `model_name` on `data`; a checkpoint is written to `out_path` after every epoch."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    net = build_model(model_name, data.input_shape, data.num_classes, batch_norm=batch_norm)
    model = AnnModel(net).to(device)
    resume_state = None
    if resume and os.path.exists(out_path):
        prev = load_checkpoint(out_path, kind="ann")
        if prev.network.to_dict() != net.to_dict():
            raise CheckpointError(f"{out_path}: was trained with another model; cannot resume it as '{model_name}'")
        model.load_state_dict(prev.state_dict)
        resume_state = prev.training.get("state")
    info = dataset_info(data, **(data_args or {}))

    def save(state):
        metrics = state.history[-1] if state.history else {}
        save_checkpoint(Checkpoint("ann", net, {k: v.cpu() for k, v in model.state_dict().items()}, info,
                                   training={"config": cfg.to_dict(), "state": state.to_dict()},
                                   metrics={"test_accuracy": metrics.get("test_accuracy")}), out_path)

    def step_loss(x, y, epoch):
        return F.cross_entropy(model(x), y)

    def evaluate():
        return {"test_accuracy": ann_accuracy(model, data.test_x, data.test_y)}

    train(model, data, cfg, step_loss, evaluate, save, resume_state, desc="ANN epoch", progress=progress)
    return load_checkpoint(out_path, kind="ann")


def load_ann(ckpt: Checkpoint, device="cpu") -> AnnModel:
    model = AnnModel(ckpt.network)
    model.load_state_dict(ckpt.state_dict)
    return model.to(device).eval()

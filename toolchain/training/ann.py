"""Stage 1: dataset -> ANN checkpoint. Train the ANN under the SNN constraints (no bias, ReLU,
average pooling, dropout; batch norm only where it folds into a conv)."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..io.checkpoint import Checkpoint
from ..ir.models import build_model
from ..data import Dataset
from ..errors import CheckpointError
from ..ir.torch_net import AnnModel
from .loop import Run, TrainConfig, batches, resolve_device, run_training, seed_everything


def dataset_info(data: Dataset, **args) -> dict:
    """What a later stage needs to load the same data again (name, split, seed, fingerprint ...), and to code
    inputs as training did (mean, std); `args` add to it."""
    return {**data.info(), **{k: v for k, v in args.items() if v is not None}}


@torch.no_grad()
def ann_accuracy(model: AnnModel, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for xb, yb in batches(x, y, batch_size, device):
        correct += int((model(xb).argmax(1) == yb).sum())
    return correct / max(len(x), 1)


def train_ann(data: Dataset, model_name: str, cfg: TrainConfig, out_path: Optional[str] = None, resume: bool = False,
              batch_norm: bool = False, progress: bool = True, data_args: Optional[dict] = None,
              log: Optional[Callable[[str], None]] = None, overwrite: bool = False) -> Checkpoint:
    """Train `model_name` on `data`; a checkpoint is written to `out_path` (if given; an existing one only with
    `overwrite` or `resume`) after every epoch. Its weights are those of the epoch with the best validation
    accuracy; its metrics hold that and the test accuracy."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    net = build_model(model_name, data.input_shape, data.num_classes, batch_norm=batch_norm)
    model = AnnModel(net).to(device)
    info = dataset_info(data, **(data_args or {}))

    def check_resume(prev):
        if prev.kind != "ann" or prev.network.to_dict() != net.to_dict():
            raise CheckpointError(f"{out_path}: was trained with another model; cannot resume it as '{model_name}'")

    def make_checkpoint(weights, training, metrics):
        return Checkpoint("ann", net, weights, info, training=training, metrics=metrics)

    def evaluate(x, y):
        return {"accuracy": ann_accuracy(model, x, y)}

    run = Run(lambda x, y, epoch: F.cross_entropy(model(x), y), evaluate, make_checkpoint, desc=f"ANN {model_name}",
              check_resume=check_resume)
    return run_training(model, data, cfg, out_path, run, resume=resume, progress=progress, log=log,
                        overwrite=overwrite)
def load_ann(ckpt: Checkpoint, device="cpu") -> AnnModel:
    model = AnnModel(ckpt.network)
    model.load_state_dict(ckpt.state_dict)
    return model.to(device).eval()

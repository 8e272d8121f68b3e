"""Stage 3: SNN checkpoint -> fine-tuned SNN checkpoint, by spike-based back-propagation through
the T time steps (STDB, Rathi et al. 2020: d spike / d u = alpha * exp(-beta * dt)), or with another
surrogate. With neuron "loihi-cuba" the network is fine-tuned under Loihi's dynamics and its
quantization (quantization-aware training), so the deployed network is the trained one."""
from __future__ import annotations

import os
from typing import Optional

import torch.nn.functional as F

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .data import Dataset
from .data.encoding import InputEncoder
from .errors import CheckpointError
from .evaluate import evaluate_snn, load_snn
from .quantize import direct_input_scale
from .training import TrainConfig, resolve_device, seed_everything, train

def finetune(snn: Checkpoint, data: Dataset, cfg: TrainConfig, out_path: str, timesteps: Optional[int] = None,
             surrogate: Optional[dict] = None, neuron: Optional[str] = None, resume: bool = False,
             progress: bool = True) -> Checkpoint:
    """Fine-tune `snn` for cfg.epochs; writes `out_path` after every epoch and returns the final checkpoint."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    overrides = {}
    if timesteps:
        overrides["timesteps"] = int(timesteps)
    if surrogate:
        overrides["surrogate"] = surrogate
    if neuron:
        overrides["neuron"] = neuron
    if (neuron or snn.snn["neuron"]) == "loihi-cuba" and snn.snn["coding"] == "direct":
        overrides["input_scale"] = direct_input_scale(data.train_x)
    model = load_snn(snn, device, **overrides)
    resume_state = None
    if resume and os.path.exists(out_path):
        prev = load_checkpoint(out_path, kind="snn")
        if prev.network.to_dict() != snn.network.to_dict():
            raise CheckpointError(f"{out_path}: holds another network; cannot resume fine-tuning into it")
        model.load_state_dict(prev.state_dict)
        resume_state = prev.training.get("state")
    T = model.config.timesteps

    def save(state):
        last = state.history[-1] if state.history else {}
        training = dict(snn.training, finetune={"config": cfg.to_dict(), "timesteps": T}, state=state.to_dict())
        save_checkpoint(Checkpoint("snn", snn.network, {k: v.detach().cpu() for k, v in model.state_dict().items()},
                                   snn.dataset, snn=model.config.to_dict(), training=training,
                                   metrics={**snn.metrics, "test_accuracy": last.get("test_accuracy"), "timesteps": T}),
                        out_path)

    encoders = {}

    def step_loss(x, y, epoch):
        enc = encoders.setdefault(epoch, InputEncoder(model.config.coding, seed=cfg.seed * 7919 + epoch))
        return F.cross_entropy(model(x, T, enc).logits, y)

    def evaluate():
        res = evaluate_snn(model, data.test_x, data.test_y, [T], seed=cfg.seed)[T]
        return {"test_accuracy": res["accuracy"], "spikes_per_inference": res["spikes_per_inference"]}

    train(model, data, cfg, step_loss, evaluate, save, resume_state, desc=f"STDB T={T} epoch", progress=progress)
    return load_checkpoint(out_path, kind="snn")

"""The training loop shared by ANN training, STDB fine-tuning and direct SNN training.

One epoch at a time: shuffle (seeded), step over batches with a progress bar, evaluate, then save
a checkpoint holding the weights, optimizer, scheduler, RNG states and history, so an interrupted
run resumes from the last finished epoch (losing at most one epoch) and gives the same result as
an uninterrupted one on the same device.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from toolchain.progress import tqdm

from .allocator import training_allocator
from .errors import ConfigError
from .optim import make_adam

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "none")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ConfigError(f"epochs and batch size must be >= 1 and lr > 0 (got {self.epochs}, {self.batch_size}, {self.lr})")

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def make_optimizer(params, cfg: TrainConfig, step_in_backward: bool = False,
                   device: Optional[torch.device] = None) -> torch.optim.Optimizer:
    """SGD, or the toolchain's Adam (toolchain.optim: torch's Adam update, chunked on the CPU; with
    `step_in_backward`, each parameter is updated, and its gradient freed, as soon as the backward pass has
    accumulated it; call `release_optimizer` when done)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return make_adam(params, cfg.lr, cfg.weight_decay, step_in_backward, device)


def release_optimizer(opt: torch.optim.Optimizer) -> None:
    """Remove the backward-pass hooks an optimizer made with `step_in_backward` put on the parameters."""
    if hasattr(opt, "remove_hooks"):
        opt.remove_hooks()


def make_scheduler(opt, cfg: TrainConfig):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[int(cfg.epochs * 0.5), int(cfg.epochs * 0.75)], gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, device, generator: Optional[torch.Generator] = None
            ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches as tensors on `device`, shuffled with `generator` if given."""
    n = len(x)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        yield xt[idx].to(device), yt[idx].to(device)


@dataclass
class TrainState:
    """Where a run is: the next epoch to run and what has been recorded so far."""
    epoch: int = 0
    history: List[dict] = None
    optimizer: Optional[dict] = None
    scheduler: Optional[dict] = None
    rng: Optional[torch.Tensor] = None

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "history": self.history or [], "optimizer": self.optimizer,
                "scheduler": self.scheduler, "rng": self.rng}


def train(model: torch.nn.Module, data, cfg: TrainConfig, step_loss: Callable, evaluate: Callable[[], Dict],
          save: Callable[[TrainState], None], resume: Optional[dict] = None, desc: str = "train",
          progress: bool = True, on_epoch: Optional[Callable[[int, dict], None]] = None) -> TrainState:
    """Run the epochs; `step_loss(x, y, epoch)` returns the loss of one batch, `evaluate()` a metrics dict."""
    device = next(model.parameters()).device
    # one backward per update and no gradient read afterwards: the update can run inside the backward pass
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg, step_in_backward=True, device=device)
    # on the CPU the step's buffers are recycled instead of fresh pages every step (allocator.py), until we return
    with training_allocator(device.type == "cpu"):
        try:
            return _epochs(model, data, cfg, opt, step_loss, evaluate, save, resume, desc, progress, on_epoch, device)
        finally:
            release_optimizer(opt)


def _epochs(model, data, cfg, opt, step_loss, evaluate, save, resume, desc, progress, on_epoch, device) -> TrainState:
    sched = make_scheduler(opt, cfg)
    state = TrainState(history=[])
    seed_everything(cfg.seed)
    if resume:
        state = TrainState(resume["epoch"], list(resume.get("history") or []))
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        if resume.get("rng") is not None:
            torch.set_rng_state(resume["rng"])
    for epoch in range(state.epoch, cfg.epochs):
        model.train()
        gen = torch.Generator().manual_seed(cfg.seed * 1000003 + epoch)
        steps = math.ceil(len(data.train_x) / cfg.batch_size)
        bar = tqdm(batches(data.train_x, data.train_y, cfg.batch_size, device, gen), total=steps,
                   desc=f"{desc} {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        total, count = 0.0, 0
        for x, y in bar:
            opt.zero_grad(set_to_none=True)
            loss = step_loss(x, y, epoch)
            loss.backward()
            opt.step()
            total, count = total + float(loss) * len(x), count + len(x)
            bar.set_postfix(loss=f"{total / count:.4f}")
        sched.step()
        model.eval()
        metrics = {"epoch": epoch + 1, "loss": total / max(count, 1), "lr": opt.param_groups[0]["lr"], **evaluate()}
        state.history.append(metrics)
        state.epoch = epoch + 1
        state.optimizer, state.scheduler, state.rng = opt.state_dict(), sched.state_dict(), torch.get_rng_state()
        save(state)
        if on_epoch:
            on_epoch(epoch, metrics)
    return state

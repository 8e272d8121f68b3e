"""The training loop shared by ANN training, STDB fine-tuning and direct SNN training.

One epoch at a time: shuffle (seeded), step over batches (a progress bar on a terminal), evaluate on the
validation split, then save a checkpoint. The checkpoint's weights are the best epoch's on validation (for
fine-tuning, the starting network counts as epoch 0, so fine-tuning never ends below it on validation); the last
epoch's weights, optimizer, scheduler, RNG state and history ride along for `--resume`, so an interrupted run
resumes from the last finished epoch (losing at most one epoch) and gives the same result as an uninterrupted one
on the same device. When training ends, the best weights are evaluated once on the test split, for the report.
"""
from __future__ import annotations

import math
import os
import random
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .allocator import training_allocator
from ..io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ..io.files import refuse_overwrite
from ..errors import CheckpointError, ConfigError, TrainingWarning
from .optim import make_adam
from ..progress import progress_bar

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
    augment: int = 0            # images: random shifts of up to this many pixels (0: none)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1 or not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"epochs and batch size must be >= 1 and lr a finite number > 0 "
                              f"(got {self.epochs}, {self.batch_size}, {self.lr})")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)) or not 0 <= self.augment <= 8:
            raise ConfigError(f"weight decay must be >= 0 and augment 0..8 pixels (got {self.weight_decay}, {self.augment})")

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


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, device, generator: Optional[torch.Generator] = None,
            augment: int = 0) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches as tensors on `device`, shuffled with `generator` if given; with `augment` = s > 0 (images,
    with a generator), each image shifted by a random (dy, dx) in [-s, s]^2 (see `random_shifts`)."""
    n = len(x)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        xb = xt[idx]
        if augment and generator is not None and xb.dim() == 4:
            xb = random_shifts(xb, augment, generator)
        yield xb.to(device), yt[idx].to(device)


def random_shifts(x: torch.Tensor, s: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of (B, C, H, W) translated by its own random (dy, dx) in [-s, s]^2; the pixels shifted in repeat
    the border (the background of a centred digit)."""
    B, _, H, W = x.shape
    padded = F.pad(x, (s, s, s, s), mode="replicate")
    offsets = torch.randint(0, 2 * s + 1, (B, 2), generator=generator)
    return torch.stack([padded[b, :, dy:dy + H, dx:dx + W] for b, (dy, dx) in enumerate(offsets.tolist())])


@dataclass
class TrainState:
    """Where a run is: the next epoch to run, what has been recorded so far, and the best epoch on validation."""
    epoch: int = 0
    history: List[dict] = field(default_factory=list)
    optimizer: Optional[dict] = None
    scheduler: Optional[dict] = None
    rng: Optional[torch.Tensor] = None
    best_epoch: Optional[int] = None            # 0: the starting network (fine-tuning)
    best_val: Optional[float] = None
    last_weights: Optional[Dict[str, torch.Tensor]] = None   # the last epoch's, for --resume

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "history": self.history, "optimizer": self.optimizer,
                "scheduler": self.scheduler, "rng": self.rng, "best_epoch": self.best_epoch, "best_val": self.best_val,
                "last_weights": self.last_weights}

    @staticmethod
    def from_dict(d: dict) -> "TrainState":
        return TrainState(**{k: d.get(k) for k in ("epoch", "optimizer", "scheduler", "rng", "best_epoch", "best_val",
                                                    "last_weights")}, history=list(d.get("history") or []))


def weights_of(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """A detached CPU copy of the model's state dict."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass
class Run:
    """What one training stage gives the shared loop (`run_training`).

    - `step_loss(x, y, epoch)`: the loss of one batch;
    - `evaluate(x, y)`: metrics of the model as it is on a split ({"accuracy": ..., ...});
    - `make_checkpoint(weights, training, metrics)`: the stage's Checkpoint around these weights;
    - `check_resume(prev)`: raise CheckpointError if `prev` (the checkpoint at the output) is not this run's;
    - `epoch_extras()`: more metrics for the epoch's history (gradient norms ...);
    - `baseline`: evaluate the starting weights as epoch 0 (fine-tuning: never end below them);
    - `desc`: what the progress bar and log lines call the stage (e.g. "STDB fine-tuning (if, T=5)")."""
    step_loss: Callable
    evaluate: Callable[[np.ndarray, np.ndarray], dict]
    make_checkpoint: Callable[[dict, dict, dict], Checkpoint]
    desc: str
    check_resume: Optional[Callable[[Checkpoint], None]] = None
    epoch_extras: Optional[Callable[[], dict]] = None
    baseline: bool = False


def run_training(model: torch.nn.Module, data, cfg: TrainConfig, out_path: Optional[str], run: Run,
                 resume: bool = False, progress: bool = True, log: Optional[Callable[[str], None]] = None,
                 overwrite: bool = False) -> Checkpoint:
    """Train `model` for cfg.epochs (continuing the run at `out_path` with `resume`); returns the checkpoint written
    at `out_path`: the best epoch's weights on validation, with its validation and test metrics. An existing
    `out_path` is refused (OutputExistsError) unless `resume` or `overwrite`; without `out_path` the epochs' checkpoints
    go to a temporary directory, removed at the end, and only the returned checkpoint remains."""
    if out_path is None:
        with tempfile.TemporaryDirectory(prefix="snntc-") as tmp:
            return run_training(model, data, cfg, os.path.join(tmp, "run.pt"), run, progress=progress, log=log)
    if not resume:
        refuse_overwrite(out_path, overwrite)
    state, best = TrainState(), {"run_weights": None}
    if resume and os.path.exists(out_path):
        state, best["run_weights"] = _resumed(model, cfg, out_path, run)
    has_val = len(getattr(data, "val_y", ())) > 0

    def validate() -> dict:
        if not has_val:
            return {}
        return {f"val_{k}": v for k, v in run.evaluate(data.val_x, data.val_y).items()}

    def record(state: TrainState, metrics: dict) -> None:
        val = metrics.get("val_accuracy")
        if state.best_epoch is None or (val is not None and val > state.best_val) or not has_val:
            state.best_epoch, state.best_val, best["run_weights"] = metrics["epoch"], val, weights_of(model)
            metrics["best"] = True
        state.history.append(metrics)
        if log:
            log(_epoch_line(run.desc, metrics, cfg.epochs))

    def save(state: TrainState, test: Optional[dict] = None) -> None:
        state.last_weights = weights_of(model)
        chosen = state.history[[h["epoch"] for h in state.history].index(state.best_epoch)]
        metrics = {"best_epoch": state.best_epoch, **{k: v for k, v in chosen.items() if k.startswith("val_")},
                   **(test or {})}
        training = {"config": cfg.to_dict(), "state": state.to_dict()}
        save_checkpoint(run.make_checkpoint(best["run_weights"], training, metrics), out_path)

    if run.baseline and not state.history:
        model.eval()
        record(state, {"epoch": 0, **validate()})
    train(model, data, cfg, run.step_loss, lambda: {**validate(), **(run.epoch_extras() if run.epoch_extras else {})},
          save, state, desc=run.desc, progress=progress, record=record)
    final = best["run_weights"]
    model.load_state_dict(final)
    model.eval()
    test = {f"test_{k}": v for k, v in run.evaluate(data.test_x, data.test_y).items()}
    save(state, test)
    _warn_outcome(run, state, has_val)
    return load_checkpoint(out_path)


def _resumed(model, cfg: TrainConfig, out_path: str, run: Run) -> Tuple[TrainState, dict]:
    """The state of the run at `out_path`, its last weights loaded into `model`, and its best weights."""
    prev = load_checkpoint(out_path)
    if run.check_resume:
        run.check_resume(prev)
    if "state" not in prev.training:
        raise CheckpointError(f"{out_path}: holds no training state; cannot resume it (train again with --force)")
    before = dict(prev.training.get("config") or {})
    now = cfg.to_dict()
    diff = sorted(k for k in now if k != "device" and k in before and before[k] != now[k])
    if diff:
        raise CheckpointError(f"{out_path}: was trained with other settings ({', '.join(f'{k} {before[k]!r}' for k in diff)}); "
                              f"resume with the same ones")
    state = TrainState.from_dict(prev.training["state"])
    model.load_state_dict(state.last_weights or prev.state_dict)
    if state.best_epoch is None:          # written before best-epoch tracking: its weights are its last epoch's
        state.best_epoch = state.history[-1]["epoch"] if state.history else 0
        state.best_val = state.history[-1].get("val_accuracy") if state.history else None
    return state, prev.state_dict


def _epoch_line(desc: str, m: dict, epochs: int) -> str:
    parts = [f"{desc} epoch {m['epoch']}/{epochs}"]
    if "loss" in m:
        parts.append(f"train loss {m['loss']:.4f}")
    if m.get("val_accuracy") is not None:
        parts.append(f"val accuracy {m['val_accuracy']:.2%}")
    if m.get("val_spikes_per_inference") is not None:
        parts.append(f"{m['val_spikes_per_inference']:.0f} spikes/inference")
    line = ", ".join(parts)
    if m["epoch"] == 0:
        line = line.replace(f"epoch 0/{epochs}", "start")
    return line + ("  (best so far)" if m.get("best") else "")


def _warn_outcome(run: Run, state: TrainState, has_val: bool) -> None:
    if not has_val:
        message = "no validation split: the last epoch is the output (load the data with val_fraction > 0 to choose)"
    elif run.baseline and state.best_epoch == 0:
        start = state.history[0].get("val_accuracy")
        top = max((h.get("val_accuracy") or 0.0) for h in state.history[1:]) if len(state.history) > 1 else None
        message = (f"{run.desc} did not improve on the starting network on validation ({start:.2%}; best epoch "
                   f"{top:.2%}): the output is the starting network" if top is not None else
                   f"{run.desc} ran no epoch: the output is the starting network")
    else:
        return
    warnings.warn(message, TrainingWarning, stacklevel=3)


def train(model: torch.nn.Module, data, cfg: TrainConfig, step_loss: Callable, evaluate: Callable[[], Dict],
          save: Callable[[TrainState], None], state: Optional[TrainState] = None, desc: str = "train",
          progress: bool = True, on_epoch: Optional[Callable[[int, dict], None]] = None,
          record: Optional[Callable[[TrainState, dict], None]] = None) -> TrainState:
    """Run the epochs from `state` (a fresh run if None); `step_loss(x, y, epoch)` returns the loss of one batch,
    `evaluate()` a metrics dict, `record(state, metrics)` adds an epoch's metrics to the state (default: appends)."""
    device = next(model.parameters()).device
    # one backward per update and no gradient read afterwards: the update can run inside the backward pass
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg, step_in_backward=True, device=device)
    # on the CPU the step's buffers are recycled instead of fresh pages every step (allocator.py), until we return
    with training_allocator(device.type == "cpu"):
        try:
            return _epochs(model, data, cfg, opt, step_loss, evaluate, save, state or TrainState(), desc, progress,
                           on_epoch, record, device)
        finally:
            release_optimizer(opt)


def _epochs(model, data, cfg, opt, step_loss, evaluate, save, state, desc, progress, on_epoch, record,
            device) -> TrainState:
    sched = make_scheduler(opt, cfg)
    seed_everything(cfg.seed)
    if state.optimizer is not None:
        opt.load_state_dict(state.optimizer)
        sched.load_state_dict(state.scheduler)
        if state.rng is not None:
            torch.set_rng_state(state.rng)
    for epoch in range(state.epoch, cfg.epochs):
        model.train()
        gen = torch.Generator().manual_seed(cfg.seed * 1000003 + epoch)
        steps = math.ceil(len(data.train_x) / cfg.batch_size)
        bar = progress_bar(batches(data.train_x, data.train_y, cfg.batch_size, device, gen, cfg.augment),
                           progress, total=steps, desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", leave=False)
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
        if record:
            record(state, metrics)
        else:
            state.history.append(metrics)
        state.epoch = epoch + 1
        state.optimizer, state.scheduler, state.rng = opt.state_dict(), sched.state_dict(), torch.get_rng_state()
        save(state)
        if on_epoch:
            on_epoch(epoch, metrics)
    return state

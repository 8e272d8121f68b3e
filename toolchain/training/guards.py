"""What training checks as it goes: a loss or weight that is no longer finite stops the run in one line naming the
epoch and the likely cause (before the update it would spread, so the last checkpoint written stays good); and the
scheduler's state in the plain form a checkpoint holds (toolchain.io.checkpoint reads only tensors and plain
data)."""
from __future__ import annotations

import collections
import math
from typing import Optional

import torch

from ..errors import CheckpointError, TrainingDivergedError


def _advice(cfg) -> str:
    return (f"the learning rate ({cfg.lr:g}) is likely too high, or a surrogate gradient too steep (--alpha); "
            f"the last finished epoch's checkpoint is kept: lower --lr and run again")


def check_loss(loss: torch.Tensor, epoch: int, batch: int, cfg) -> float:
    """The batch's loss as a float; TrainingDivergedError if it is NaN or infinite."""
    value = float(loss)
    if not math.isfinite(value):
        raise TrainingDivergedError(f"training diverged in epoch {epoch}, batch {batch}: the loss is {value}; "
                                    f"{_advice(cfg)}")
    return value


def check_weights(model: torch.nn.Module, epoch: int, cfg, batch: Optional[int] = None) -> None:
    """TrainingDivergedError naming the first parameter that holds a NaN or an infinity. Also called when a step
    fails (a quantized forward pass refuses NaN weights before the loss could show them): the NaN is then the cause."""
    where = f"epoch {epoch}" if batch is None else f"epoch {epoch}, batch {batch}"
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise TrainingDivergedError(f"training diverged in {where}: parameter '{name}' is no longer finite; "
                                        f"{_advice(cfg)}")


def scheduler_state(sched, state: dict) -> dict:
    """A scheduler's state as `load_state_dict` wants it: MultiStepLR's milestones are a Counter, which a
    checkpoint stores as a plain dict."""
    state = dict(state)
    if isinstance(getattr(sched, "milestones", None), collections.Counter) and isinstance(state.get("milestones"), dict):
        state["milestones"] = collections.Counter(state["milestones"])
    return state


def restore_training_state(opt, sched, state) -> None:
    """Load a resumed run's optimizer, scheduler and RNG state; CheckpointError if they do not fit this run."""
    try:
        opt.load_state_dict(state.optimizer)
        sched.load_state_dict(scheduler_state(sched, state.scheduler or {}))
        if state.rng is not None:
            torch.set_rng_state(state.rng)
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
        raise CheckpointError(f"the training state to resume does not fit this run ({type(exc).__name__}: "
                              f"{str(exc)[:120]}); train again with --force") from None

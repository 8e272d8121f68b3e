"""Training: the loop shared by every stage that trains (`loop`), its optimizer and allocator, and the stages
themselves: `ann` (train the ANN), `convert` (ANN -> SNN), `finetune` (STDB / surrogate, QAT), `direct` (train an
SNN from scratch), `evaluate`."""
from .loop import (OPTIMIZERS, SCHEDULES, Run, TrainConfig, TrainingWarning, batches, make_optimizer, make_scheduler,
                   random_shifts, release_optimizer, resolve_device, run_training, seed_everything)

__all__ = ["OPTIMIZERS", "SCHEDULES", "Run", "TrainConfig", "TrainingWarning", "batches", "make_optimizer",
           "make_scheduler", "random_shifts", "release_optimizer", "resolve_device", "run_training", "seed_everything"]

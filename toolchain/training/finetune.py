"""Stage 3: SNN checkpoint -> fine-tuned SNN checkpoint, by spike-based back-propagation through
the T time steps (STDB, Rathi et al. 2020: d spike / d u = alpha * exp(-beta * dt)), or with another
surrogate. With neuron "loihi-cuba" the network is fine-tuned under Loihi's dynamics and its
quantization (quantization-aware training), so the deployed network is the trained one.

The starting network is evaluated on the validation split first (epoch 0): the output is the best of it and
every epoch on validation, so fine-tuning never returns a network worse than it was given on validation, and
says so (a TrainingWarning) when no epoch beat it."""
from __future__ import annotations

from typing import Callable, Optional

import torch.nn.functional as F

from ..io.checkpoint import Checkpoint
from ..data import Dataset
from ..coding import InputEncoder
from ..errors import CheckpointError
from ..neurons import NEURONS
from ..neurons.surrogates import surrogate_dict
from .evaluate import evaluate_snn, load_snn
from .loop import Run, TrainConfig, resolve_device, run_training, seed_everything


def finetune(snn: Checkpoint, data: Dataset, cfg: TrainConfig, out_path: Optional[str] = None,
             timesteps: Optional[int] = None, surrogate=None, neuron: Optional[str] = None,
             reset: Optional[str] = None, resume: bool = False, progress: bool = True,
             log: Optional[Callable[[str], None]] = None, overwrite: bool = False) -> Checkpoint:
    """Fine-tune `snn` for cfg.epochs; writes `out_path` (if given; an existing one only with `overwrite` or
    `resume`) after every epoch and returns the checkpoint of the best epoch on validation (the starting network
    included). `surrogate`: a name ("linear", "stdb", ...), a Surrogate (`toolchain.neurons.surrogates.get_surrogate`)
    or its dict; default: the checkpoint's."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    overrides = {}
    if timesteps:
        overrides["timesteps"] = int(timesteps)
    if surrogate:
        overrides["surrogate"] = surrogate_dict(surrogate)
    if neuron:
        overrides["neuron"] = neuron
    if reset:
        overrides["reset"] = reset
    coding = snn.snn.input_coding
    if NEURONS.get(neuron or snn.snn.neuron).trains_deployed and coding.graded:   # the chip's input scale, trained
        overrides["input_scale"] = coding.input_scale(data.train_x)
    model = load_snn(snn, device, **overrides)
    config = model.config
    T = config.timesteps

    def check_resume(prev):
        if prev.kind != "snn" or prev.network.to_dict() != snn.network.to_dict():
            raise CheckpointError(f"{out_path}: holds another network; cannot resume fine-tuning into it")
        if config.differences(prev.snn):
            raise CheckpointError(f"{out_path}: was fine-tuned with other SNN settings "
                                  f"({', '.join(config.differences(prev.snn))}); resume with the same ones")

    def make_checkpoint(weights, training, metrics):
        training = dict(snn.training, finetune={"config": cfg.to_dict(), "timesteps": T}, **training)
        start = {k: v for k, v in snn.metrics.items() if not k.startswith(("val_", "best_"))}
        return Checkpoint("snn", snn.network, weights, snn.dataset, snn=config, training=training,
                          metrics={**start, "start_test_accuracy": snn.metrics.get("test_accuracy"), **metrics,
                                   "timesteps": T})

    encoders = {}

    def step_loss(x, y, epoch):
        enc = encoders.setdefault(epoch, InputEncoder(config.coding, seed=cfg.seed * 7919 + epoch))
        # the loss reads the output layer's membrane potential accumulated over the T steps (Rathi et al.), not its
        # mean: the mean is T times smaller, a softmax so flat that every sample, right or wrong, pushes the network
        # to fire more, and fine-tuning then degrades a converted network
        return F.cross_entropy(model(x, T, enc).logits * T, y)

    def evaluate(x, y):
        res = evaluate_snn(model, x, y, [T], seed=cfg.seed)[T]
        return {"accuracy": res["accuracy"], "spikes_per_inference": res["spikes_per_inference"]}

    sur = config.spike_fn()
    desc = f"fine-tuning ({config.neuron} neurons, {sur.name} surrogate, T={T})"
    run = Run(step_loss, evaluate, make_checkpoint, desc=desc, check_resume=check_resume, baseline=True)
    return run_training(model, data, cfg, out_path, run, resume=resume, progress=progress, log=log,
                        overwrite=overwrite)

"""Stage 1b: dataset -> SNN checkpoint, trained directly (from scratch) by back-propagation through
the T time steps with a surrogate gradient (Ledinauskas et al. 2020, "Training deep spiking neural
networks"; Neftci et al. 2019).

A feed-forward SNN is recurrent in time (the membrane potential carries over), so the gradient that
reaches layer l is a product over the layers above it of (surrogate height x weights), summed over
time steps: with a mistuned surrogate (too high, or too wide: too many neurons pass a gradient) it
explodes with depth, and with a too narrow or too low one it vanishes. Two things make deep
networks trainable with few (<= 10) time steps:

- a surrogate of tuned width and height (the default: the paper's box, `--surrogate rectangular
  --width 1 --alpha 0.5`, measured on a 14-layer net at T=10 in benchmarks/snn_gradients.py; or
  another of `toolchain.neurons.surrogates`);
- batch norm on the input currents of every spiking layer (`BatchNorm2d` after a conv, `BatchNorm1d`
  after a hidden linear layer), with statistics over batch AND time (the SNN applies each synaptic
  layer and batch norm to all T steps as one (T * B) batch). It keeps every layer's currents near
  the (fixed) threshold, so a fixed share of neurons sits inside the surrogate's window.

Thresholds are fixed (1.0 by default: batch norm learns the scale instead), the neuron is IF or LIF
with reset by subtraction, the input is coded directly (the analog image every step) by default.
For export, batch norm is folded into the synaptic weights and biases (`toolchain.ir.lowering`).

Gradient diagnostics: a hook on every synaptic layer's weight records ||dL/dW|| at every batch;
each epoch's history entry holds the per-layer mean over the epoch's batches (`grad_norms`) and the
norms of its first batch (`grad_norms_first_batch`; epoch 1's is the network at initialization),
and `plot_gradients` draws them.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .ann import dataset_info
from ..io.checkpoint import Checkpoint
from ..io.files import atomic_write
from ..data import Dataset
from ..coding import InputEncoder
from ..errors import CheckpointError, ConfigError
from .evaluate import evaluate_snn
from ..ir import SYNAPTIC, Network, iter_layers
from ..ir.models import build_model
from ..neurons import NEURONS
from ..snn import SnnConfig, SnnModel
from ..neurons.surrogates import Surrogate, get_surrogate, surrogate_dict
from .loop import Run, TrainConfig, resolve_device, run_training, seed_everything

DEFAULT_SURROGATE = {"name": "rectangular", "width": 1.0, "alpha": 0.5}


def synaptic_layer_names(net: Network) -> List[str]:
    """Every conv and linear layer, input to output (residual blocks' body, then shortcut)."""
    return [l.name for l in iter_layers(net.layers) if isinstance(l, SYNAPTIC)]


class GradientRecorder:
    """Per-layer norms of the weight gradients, recorded by tensor hooks during backward.

    Norms stay tensors on the model's device until `collect`, so recording costs no device sync."""

    def __init__(self, model: SnnModel, names: Optional[Sequence[str]] = None):
        self.names = list(names or synaptic_layer_names(model.net))
        self._sums: Dict[str, torch.Tensor] = {}
        self._first: Dict[str, torch.Tensor] = {}
        self._batches = 0
        self._handles = [model.layers[n].weight.register_hook(self._hook(n)) for n in self.names]

    def _hook(self, name):
        def record(grad):
            norm = grad.detach().float().norm()
            self._sums[name] = self._sums[name] + norm if name in self._sums else norm
            if self._batches == 1:
                self._first[name] = norm
        return record

    def start_batch(self) -> None:
        self._batches += 1

    def collect(self) -> dict:
        """{"grad_norms": per-layer mean over the batches since the last collect, "grad_norms_first_batch": ...,
        "grad_ratio_first_last": mean norm of the first layer / that of the output layer}; then reset."""
        n = max(self._batches, 1)
        mean = {k: float(self._sums[k]) / n for k in self.names if k in self._sums}
        first = {k: float(self._first[k]) for k in self.names if k in self._first}
        self._sums, self._first, self._batches = {}, {}, 0
        out = {"grad_norms": mean, "grad_norms_first_batch": first}
        if mean and self.names[0] in mean and mean.get(self.names[-1]):
            out["grad_ratio_first_last"] = mean[self.names[0]] / mean[self.names[-1]]
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def direct_neurons() -> List[str]:
    """The neuron models an SNN can be trained with from scratch: those that train on the network as written."""
    return NEURONS.names(lambda m: not m.trains_deployed)


def snn_config_for(net: Network, timesteps: int, surrogate: Surrogate, threshold: float = 1.0, neuron: str = "if",
                   leak: float = 1.0, coding: str = "direct") -> SnnConfig:
    if NEURONS.get(neuron).trains_deployed:
        raise ConfigError(f"direct training supports neurons {', '.join(direct_neurons())}, not {neuron!r} "
                          f"(train with 'if', then fine-tune with --neuron {neuron})")
    if not threshold > 0 or not np.isfinite(threshold):
        raise ConfigError(f"threshold must be > 0, got {threshold}")
    return SnnConfig(thresholds={s.name: float(threshold) for s in net.spiking_layers}, neuron=neuron, leak=leak,
                     coding=coding, timesteps=int(timesteps), surrogate=surrogate.to_dict())


def train_snn(data: Dataset, model_name: str, cfg: TrainConfig, out_path: Optional[str] = None, timesteps: int = 8,
              surrogate=None, batch_norm: bool = True, threshold: float = 1.0, neuron: str = "if",
              leak: float = 1.0, coding: str = "direct", resume: bool = False, progress: bool = True,
              data_args: Optional[dict] = None, model_args: Optional[dict] = None,
              log: Optional[Callable[[str], None]] = None, overwrite: bool = False) -> Checkpoint:
    """Train `model_name` as an SNN from scratch; a checkpoint (kind "snn") is written to `out_path` after every
    epoch, with the gradient norms in its history. Returns the checkpoint of the best epoch on validation."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    spike_fn = get_surrogate(**surrogate_dict(surrogate or DEFAULT_SURROGATE))
    net = build_model(model_name, data.input_shape, data.num_classes, batch_norm=batch_norm, **(model_args or {}))
    config = snn_config_for(net, timesteps, spike_fn, threshold, neuron, leak, coding)
    model = SnnModel(net, config).to(device)
    info = dataset_info(data, **(data_args or {}))
    direct = {"model": model_name, "batch_norm": bool(batch_norm), "threshold": float(threshold),
              "layers": synaptic_layer_names(net)}
    recorder = GradientRecorder(model)
    T = config.timesteps

    def check_resume(prev):
        if prev.kind != "snn" or prev.network.to_dict() != net.to_dict():
            raise CheckpointError(f"{out_path}: was trained with another model; cannot resume it as '{model_name}'"
                                  f"{' with' if batch_norm else ' without'} batch norm")
        if "direct" not in prev.training:
            raise CheckpointError(f"{out_path}: is not a direct-training checkpoint; cannot resume it")
        if config.differences(prev.snn):
            raise CheckpointError(f"{out_path}: was trained with other SNN settings "
                                  f"({', '.join(config.differences(prev.snn))}); resume with the same ones")

    def make_checkpoint(weights, training, metrics):
        return Checkpoint("snn", net, weights, info, snn=config, training={**training, "direct": direct},
                          metrics={**metrics, "timesteps": T})

    encoders = {}

    def step_loss(x, y, epoch):
        recorder.start_batch()
        enc = encoders.setdefault(epoch, InputEncoder(config.coding, seed=cfg.seed * 7919 + epoch))
        return F.cross_entropy(model(x, T, enc).logits, y)

    def evaluate(x, y):
        res = evaluate_snn(model, x, y, [T], seed=cfg.seed)[T]
        return {"accuracy": res["accuracy"], "spikes_per_inference": res["spikes_per_inference"]}

    run = Run(step_loss, evaluate, make_checkpoint, desc=f"direct SNN training ({neuron} neurons, {spike_fn.name} "
              f"surrogate, T={T})", check_resume=check_resume, epoch_extras=recorder.collect)
    try:
        return run_training(model, data, cfg, out_path, run, resume=resume, progress=progress, log=log,
                            overwrite=overwrite)
    finally:
        recorder.remove()


# -- gradient experiment ---------------------------------------------------------------------
def gradient_norms(model: SnnModel, x: torch.Tensor, y: torch.Tensor, timesteps: Optional[int] = None,
                   encoder: Optional[InputEncoder] = None) -> Dict[str, float]:
    """||dL/dW|| of every synaptic layer for one batch (cross-entropy loss), in training mode (batch norm on
    batch statistics), input to output. The model's weights are not changed (their .grad is restored)."""
    names = synaptic_layer_names(model.net)
    saved = {n: model.layers[n].weight.grad for n in names}
    was_training = model.training
    model.train()
    try:
        for n in names:
            model.layers[n].weight.grad = None
        loss = F.cross_entropy(model(x, timesteps, encoder).logits, y)
        weights = [model.layers[n].weight for n in names]
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
        return {n: (0.0 if g is None else float(g.detach().norm())) for n, g in zip(names, grads)}
    finally:
        for n in names:
            model.layers[n].weight.grad = saved[n]
        model.train(was_training)


def first_last_ratio(norms: Dict[str, float]) -> float:
    """Gradient norm of the first synaptic layer / that of the last (the output layer)."""
    values = list(norms.values())
    if values[-1] > 0:
        return values[0] / values[-1]
    return float("inf") if values[0] > 0 else float("nan")       # nan: no gradient at all (a silent network)


# -- plot --------------------------------------------------------------------------------------
def plot_gradients(history: List[dict], path: str, title: str = "") -> None:
    """PNG: per-layer weight-gradient norm (log scale) vs layer depth, one line per epoch (mean over its
    batches; dashed: the first batch, at initialization), and the first/last-layer ratio per epoch.
    Written atomically."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = [h for h in history if h.get("grad_norms")]
    if not rows:
        raise ConfigError("no gradient norms recorded: nothing to plot")
    names = list(rows[0]["grad_norms"])
    depth = np.arange(1, len(names) + 1)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [2.2, 1]})
    cmap = plt.get_cmap("viridis")
    first = rows[0].get("grad_norms_first_batch") or {}
    if first:
        ax.semilogy(depth, [max(first.get(n, np.nan), 1e-30) for n in names], "k--", marker=".",
                    label=f"epoch {rows[0]['epoch']}, first batch")
    for i, h in enumerate(rows):
        color = cmap(i / max(len(rows) - 1, 1))
        ax.semilogy(depth, [max(h["grad_norms"].get(n, np.nan), 1e-30) for n in names], color=color, marker="o",
                    markersize=3, label=f"epoch {h['epoch']}" if (len(rows) <= 8 or i in (0, len(rows) - 1)) else None)
    ax.set_xticks(depth)
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("synaptic layer (input -> output)")
    ax.set_ylabel("||dL/dW|| (mean over the epoch's batches)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    epochs = [h["epoch"] for h in rows]
    ratios = [h["grad_norms"][names[0]] / h["grad_norms"][names[-1]] if h["grad_norms"].get(names[-1]) else np.nan
              for h in rows]
    ax2.semilogy(epochs, ratios, marker="o")
    ax2.axhspan(1e-2, 1e2, color="green", alpha=0.08)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(f"ratio {names[0]} / {names[-1]}")
    ax2.grid(True, which="both", alpha=0.3)
    fig.suptitle(title or "weight-gradient norms per layer")
    fig.tight_layout()

    def write(tmp):
        fig.savefig(tmp, format="png", dpi=110)
    try:
        atomic_write(path, write)
    finally:
        plt.close(fig)

"""Running a neuron model over the time axis, and the one place that decides how.

One IF/LIF equation has three implementations with the same numbers and gradients; the CUBA neuron two. Which one
runs is `execution_path`'s answer, with every condition stated there.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .base import NeuronState, initial_state
from .kernels.layout import native_ok
from .registry import NEURONS
from .surrogates import SURROGATES, Surrogate

BLOCK, FUSED, LOOP = "block", "fused", "loop"


def fused_run(step: Callable):
    """The fused run registered for this step function (by the neuron models that use it), or None."""
    return next((m.fused for m in NEURONS.entries() if m.step is step and m.fused is not None), None)


def registered_surrogate(spike_fn) -> bool:
    return type(spike_fn) is Surrogate and spike_fn.name in SURROGATES


def execution_path(step: Callable, spike_fn, x: torch.Tensor, params=None, state: Optional[NeuronState] = None,
                   pool: int = 0, mask: Optional[torch.Tensor] = None, stage: bool = False) -> str:
    """How the neurons of `step` run over the T = x.shape[0] steps of x (T, B, ...):

    BLOCK (asked with `stage=True`, for a run of Conv2d -> spike [-> AvgPool2d / Dropout] layers, or one Linear ->
      spike, whose input is x): a block of time steps at a time through all the run's layers
      (kernels/stack.py), when
        - the step's fused run has block kernels (the subtractive IF / LIF neuron),
        - spike_fn is a registered Surrogate,
        - x is on the CPU in float32 or float64, T is 1..254 (dt codes are bytes), and the compiled kernels
          are loaded (native.library(): a C compiler, SNNTC_NATIVE not 0).
      The caller checks the rest, which is about the graph: scalar thresholds, pools of at most 15 x 15, and
      that no layer's currents are needed whole (conversion's calibration reads them).
    FUSED (`stage=False`, x being the currents): the step's fused run (kernels/subtractive.py, kernels/cuba.py),
      all T steps without autograd and a hand-derived backward, when
        - no initial `state` is given,
        - the step has a fused run and spike_fn is a registered Surrogate,
        - x is floating point with a time and a batch axis, T >= 1,
        - the run accepts params, pool and mask (`FusedRun.accepts`: scalar leak and threshold for IF / LIF;
          not `exact`, integer decays, a scalar vth, a matching bias and no pool or mask for CUBA).
      Inside it the compiled kernels run where native_ok holds (CPU, float32/64, T < 255, a scalar threshold)
      and the kernel accepts its arguments; else the same loop in torch ops (same results).
    LOOP: anything else: `step` looped over time, autograd through the unrolled steps.
    """
    run = fused_run(step)
    if stage:
        ok = (run is not None and run.block and registered_surrogate(spike_fn) and x.shape[0] > 0
              and native_ok(x, 1.0, x.shape[0]))
        return BLOCK if ok else LOOP
    if state is not None or run is None or not registered_surrogate(spike_fn):
        return LOOP
    if not x.is_floating_point() or x.dim() < 2 or x.shape[0] < 1:
        return LOOP
    return FUSED if run.accepts(x, params, pool, mask) else LOOP


def run_neurons(currents: torch.Tensor, step: Callable, params, spike_fn: Callable,
                state: Optional[NeuronState] = None, pool: int = 0, mask: Optional[torch.Tensor] = None) -> tuple:
    """Loop `step` over the leading time axis of `currents` (T, B, ...); returns spikes (T, B, ...) and the final state.
    `pool` = k > 0: the spikes come back average-pooled k x k (currents (T, B, C, H, W), H and W divisible by k), as
    `F.avg_pool2d(spikes, k)` would give them, without the full-size spike tensor ever being stored.
    `mask` (B, ...), with `pool` = 0: a dropout mask, the same at every step; the spikes come back times the mask
    (the neurons' own spikes and counts are unchanged). The fused run takes over where `execution_path` says so:
    the same spikes, final state and gradients in a fraction of the time and memory.
    """
    if mask is not None and pool:
        raise ValueError("run_neurons: a dropout mask applies to un-pooled spikes only")
    if execution_path(step, spike_fn, currents, params, state, pool, mask) == FUSED:
        return fused_run(step).run(currents, params, spike_fn, pool, mask)
    state = initial_state(currents[0]) if state is None else state
    out = []
    for current in currents.unbind(0):          # unbind: one gradient buffer in backward, not one per step
        s, state = step(current, state, params, spike_fn)
        out.append(s)
    spikes = torch.stack(out)
    if pool:
        T, B = spikes.shape[:2]
        spikes = F.avg_pool2d(spikes.reshape((T * B,) + spikes.shape[2:]), pool)
        spikes = spikes.reshape((T, B) + spikes.shape[1:])
    if mask is not None:
        state = state._replace(count=spikes.detach().sum(0).to(torch.int32))
        spikes = spikes * mask
    return spikes, state

"""The neurons' fast runs: a `FusedRun` per neuron that has one (subtractive.py: IF / LIF; cuba.py: Loihi CUBA,
quantization-aware), the block-by-block run of spiking layers (stack.py, IF / LIF), their shared buffers (layout.py)
and the compiled C kernels behind them (native/, called through native/calls.py). Which one runs is decided in one
place: toolchain.neurons.run.execution_path."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class FusedRun:
    """A neuron's T-step run without autograd and its hand-derived backward: the same spikes, final state and
    gradients as autograd through the unrolled loop of its step function.

    run(currents (T, B, ...), params, spike_fn, pool, mask) -> (spikes, NeuronState)
    accepts(currents, params, pool, mask) -> whether `run` takes these arguments
    block: whether runs of conv / linear -> spike layers can also go block by block of time steps (stack.py)."""
    run: Callable
    accepts: Callable
    block: bool = False

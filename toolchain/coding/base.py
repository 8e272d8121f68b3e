"""The input-coding interface: what the first layer of a spiking network receives at each time step, in training
and on the chip, and how the energy model counts it.

An `InputCoding` entry gives
- `encode(x, generator)`: one step's training-side input from normalized images x (B, ...): floats (`generator()`
  gives the seeded generator of a random coding);
- `graded` and `input_scale(train_x)`: a spike coding's chip receives its spikes as they are; a graded one's
  receives integer input = round(x * scale) (`integer_input`, once for training on the deployed network and for
  the chip), its scale chosen from the training data;
- `input_bits(signed)`: the bits of an input event the chip receives (0: unary spikes);
- `dense_input`: the first layer receives a graded value at every position and step (counted as MACs);
- `nir`: how the NIR graph's metadata describes what its Input node receives.

The chip-side encoding is the training-side one, step by step, through `integer_input` (`chip_input`): what the
deployed network trains on is what the chip receives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch


@dataclass(frozen=True)
class InputCoding:
    name: str
    summary: str                                             # one line, for the CLI
    encode: Callable[[torch.Tensor, Callable[[], torch.Generator]], torch.Tensor]   # (x, the step's generator)
    input_bits: Callable[[bool], int]                        # (the data is signed) -> bits per input event
    nir: str
    graded: bool = False                                     # the chip receives round(x * input_scale), not spikes
    input_scale: Optional[Callable[[np.ndarray], float]] = None   # graded: the scale, from the training data
    dense_input: bool = False


def integer_input(x: torch.Tensor, scale: Optional[float], straight_through: bool = False) -> torch.Tensor:
    """What the deployed network's first layer receives at one step from the coded input x: graded input
    round(x * scale) (`straight_through`: with the identity's gradient, for training), or x as it is (scale None:
    spikes). Rounded step by step, each a batch below torch's parallel grain size: no thread synchronization."""
    if scale is None:
        return x
    scaled = x * scale
    levels = torch.round(scaled)
    return scaled + (levels - scaled).detach() if straight_through else levels


class InputEncoder:
    """Turns a batch x (B, C, H, W) or (B, F) into the first layer's input at time step t, by a registered coding
    (a name or the entry), from a seeded generator: the same seed gives the same input."""

    def __init__(self, coding="poisson", seed: Optional[int] = None):
        from .registry import CODINGS
        self.entry = coding if isinstance(coding, InputCoding) else CODINGS.get(str(coding).strip().lower())
        self.coding = self.entry.name
        self.seed = seed
        self._generator: Optional[torch.Generator] = None

    def reset(self, seed: Optional[int] = None) -> None:
        """Restart the spike trains: from `seed` if given, else from the constructor's seed
        (a fresh random one when that is None). The same seed gives the same spike trains."""
        if seed is not None:
            self.seed = seed
        self._generator = None

    def _generator_for(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            if self.seed is None:
                self._generator.seed()
            else:
                self._generator.manual_seed(int(self.seed))
        return self._generator

    def __call__(self, x: torch.Tensor, t: int = 0) -> torch.Tensor:
        return self.entry.encode(x, lambda: self._generator_for(x.device))

    def __repr__(self) -> str:
        return f"InputEncoder(coding={self.coding!r}, seed={self.seed!r})"


def chip_input(coding, x: np.ndarray, scale: Optional[float], timesteps: int, seed: int = 0) -> np.ndarray:
    """Normalized images (N, ...) -> the integer chip input (N, T, ...): each step's training-side encoding (seeded
    as the toolchain evaluates) through `integer_input`."""
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    enc = InputEncoder(coding, seed=seed)
    with torch.no_grad():
        steps = [integer_input(enc(xt, t), scale) for t in range(timesteps)]
    return torch.stack(steps, 1).to(torch.int64).numpy()

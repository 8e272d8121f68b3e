"""Input spike coders: what the first layer of a spiking network receives at each time step.

"direct" feeds the analog input as a constant current every step; "poisson" feeds signed rate-coded
spikes (Rathi et al., hybrid conversion / DIET-SNN): spike = sign(x) * (rand < |x|), so a pixel of
normalized intensity x fires with probability |x| per step, and |x| >= 1 fires every step.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..errors import ConfigError

CODINGS = ("poisson", "direct")


def poisson_spikes(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Signed Poisson spikes of x (any shape, any device): values in {-1, 0, 1}, x's dtype and device.

    With a `generator`, the random numbers are drawn from it (on its device, then moved to x's),
    so the same seeded generator gives the same spikes.
    """
    dtype = x.dtype if x.is_floating_point() else torch.float32
    device = generator.device if generator is not None else x.device
    rand = torch.rand(x.shape, generator=generator, device=device, dtype=dtype).to(x.device)
    return (torch.sign(x) * (rand < x.abs())).to(x.dtype)


class InputEncoder:
    """Turns a batch x (B, C, H, W) or (B, F) into the first layer's input at time step t."""

    def __init__(self, coding: str = "poisson", seed: Optional[int] = None):
        key = str(coding).strip().lower()
        if key not in CODINGS:
            raise ConfigError(f"unknown input coding '{coding}'; valid: {', '.join(CODINGS)}")
        self.coding = key
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
        if self.coding == "direct":
            return x
        return poisson_spikes(x, self._generator_for(x.device))

    def __repr__(self) -> str:
        return f"InputEncoder(coding={self.coding!r}, seed={self.seed!r})"

"""Poisson rate coding (Rathi et al., hybrid conversion / DIET-SNN): signed spikes sign(x) * (rand < |x|), so a
pixel of normalized intensity x fires with probability |x| per step, and |x| >= 1 fires every step. The chip
receives the same seeded spikes: unary, or 2-bit signed events when the data has negative values."""
from __future__ import annotations

from typing import Optional

import torch

from .. import sharding
from .base import InputCoding


def poisson_spikes(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Signed Poisson spikes of x (any shape, any device): values in {-1, 0, 1}, x's dtype and device.

    With a `generator`, the random numbers are drawn from it (on its device, then moved to x's),
    so the same seeded generator gives the same spikes.
    """
    dtype = x.dtype if x.is_floating_point() else torch.float32
    device = generator.device if generator is not None else x.device
    rand = sharding.rand(x.shape, generator=generator, device=device, dtype=dtype).to(x.device)   # see sharding
    return (torch.sign(x) * (rand < x.abs())).to(x.dtype)


POISSON = InputCoding(
    name="poisson", summary="signed rate-coded spikes: sign(x) with probability |x| per step",
    encode=lambda x, generator: poisson_spikes(x, generator()),
    input_bits=lambda signed: 2 if signed else 0,
    nir="signed spikes sign(x) * 1[u < |x|] of the normalized image, u uniform")

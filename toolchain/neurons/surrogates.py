"""Spike functions with surrogate gradients, chosen by name.

A spike function takes the threshold-normalized membrane potential `x = v / threshold - 1`
(a spike where x > 0) and, for STDB, `dt`, the number of time steps since the neuron last spiked.
Forward: the Heaviside step. Backward: d spike / d x = the surrogate below, times the incoming gradient.

- "stdb":    alpha * exp(-beta * dt)                  (Rathi et al. 2020; alpha 0.3, beta 0.01)
- "linear":  alpha * max(0, 1 - |x|)                  (triangle; Rathi et al.'s other option)
- "fast-sigmoid": alpha / (1 + width * |x|)**2        (Zenke & Ganguli 2018 SuperSpike)
- "arctan":  alpha / (1 + (pi * width * x)**2)        (Fang et al. 2021, up to constants)
- "rectangular": alpha * 1[|x| < width / 2]           (Ledinauskas et al. 2020's tunable box:
                 `width` sets how far from threshold a gradient flows, `alpha` its height; both
                 set how much gradient survives each layer and time step, see toolchain/training/direct.py)

`width` is in units of the threshold (x is normalized by it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch

from ..errors import ConfigError


def _heaviside(x: torch.Tensor) -> torch.Tensor:
    return (x > 0).to(x.dtype)


def stdb_grad(x, dt, alpha, beta, width):
    return alpha * torch.exp(-beta * dt)


def linear_grad(x, dt, alpha, beta, width):
    return alpha * torch.clamp(1.0 - x.abs() / width, min=0.0)


def fast_sigmoid_grad(x, dt, alpha, beta, width):
    return alpha / (1.0 + width * x.abs()) ** 2


def arctan_grad(x, dt, alpha, beta, width):
    return alpha / (1.0 + (math.pi * width * x) ** 2)


def rectangular_grad(x, dt, alpha, beta, width):
    return alpha * (x.abs() < width / 2).to(x.dtype)


# name -> (gradient shape, default alpha, default beta, default width, needs dt)
SURROGATES: Dict[str, tuple] = {
    "stdb": (stdb_grad, 0.3, 0.01, 1.0, True),
    "linear": (linear_grad, 0.3, 0.0, 1.0, False),
    "fast-sigmoid": (fast_sigmoid_grad, 1.0, 0.0, 10.0, False),
    "arctan": (arctan_grad, 1.0, 0.0, 1.0, False),
    "rectangular": (rectangular_grad, 1.0, 0.0, 1.0, False),
}


class _SpikeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, grad_fn, alpha, beta, width):
        ctx.save_for_backward(x, dt)
        ctx.params = (grad_fn, alpha, beta, width)
        return _heaviside(x)

    @staticmethod
    def backward(ctx, grad_out):
        x, dt = ctx.saved_tensors
        grad_fn, alpha, beta, width = ctx.params
        return grad_out * grad_fn(x, dt, alpha, beta, width), None, None, None, None, None


@dataclass(frozen=True)
class Surrogate:
    """A named surrogate with its parameters; call it as spike = surrogate(x, dt)."""
    name: str = "stdb"
    alpha: float = 0.3
    beta: float = 0.01
    width: float = 1.0

    @property
    def needs_dt(self) -> bool:
        return SURROGATES[self.name][4]

    def grad(self, x: torch.Tensor, dt: Optional[torch.Tensor] = None) -> torch.Tensor:
        """d spike / d x, the formula itself (used by tests and fused kernels)."""
        if dt is None:
            dt = torch.zeros_like(x)
        return SURROGATES[self.name][0](x, dt, self.alpha, self.beta, self.width)

    def __call__(self, x: torch.Tensor, dt: Optional[torch.Tensor] = None) -> torch.Tensor:
        if dt is None:
            dt = torch.zeros_like(x)
        return _SpikeFn.apply(x, dt, SURROGATES[self.name][0], self.alpha, self.beta, self.width)

    def to_dict(self) -> dict:
        return {"name": self.name, "alpha": self.alpha, "beta": self.beta, "width": self.width}


def surrogate_dict(surrogate) -> dict:
    """A surrogate as the config stores it: from its name ("linear": that surrogate's defaults), a Surrogate, or
    a dict (as it is)."""
    if isinstance(surrogate, str):
        return get_surrogate(surrogate).to_dict()
    if isinstance(surrogate, Surrogate):
        return surrogate.to_dict()
    if isinstance(surrogate, dict):
        return dict(surrogate)
    raise ConfigError(f"a surrogate is a name ({', '.join(SURROGATES)}), a Surrogate or a dict, not {surrogate!r}")


def get_surrogate(name: str = "stdb", alpha: Optional[float] = None, beta: Optional[float] = None,
                  width: Optional[float] = None) -> Surrogate:
    """The surrogate called `name`; unset parameters take that surrogate's defaults."""
    key = (name or "stdb").lower()
    if key not in SURROGATES:
        raise ConfigError(f"unknown surrogate {name!r}; valid: {', '.join(SURROGATES)}")
    _, a, b, w, _ = SURROGATES[key]
    surrogate = Surrogate(key, a if alpha is None else float(alpha), b if beta is None else float(beta),
                          w if width is None else float(width))
    if surrogate.width <= 0 or surrogate.alpha < 0:
        raise ConfigError(f"surrogate {key}: width must be > 0 and alpha >= 0 (got width {surrogate.width}, alpha {surrogate.alpha})")
    return surrogate

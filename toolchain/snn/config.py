"""The typed SNN configuration: everything besides the weights that defines a spiking network, stored in its
checkpoint. The neuron model and the input coding are registered names (toolchain.neurons, toolchain.coding),
checked when the configuration is made.

On disk a checkpoint holds `to_dict()` (a plain dict with a `version`), not a pickled class: files do not depend on
where this class lives. Checkpoints written before the typed configuration (version 1, no `version` key) load
through the same `from_dict`; they stored input_scale 1.0 for "not set", which reads as None.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar, Dict, Optional, Union

from ..coding import CODINGS, InputCoding
from ..errors import ConfigError
from ..limits import MAX_TIMESTEPS
from ..neurons import NEURONS, NeuronModel
from ..neurons.surrogates import Surrogate, get_surrogate
from ..quantization.fixed_point import DECAY_UNITY

RESETS = ("subtract", "zero")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class SnnConfig:
    thresholds: Dict[str, float] = field(default_factory=dict)    # per spiking layer
    neuron: str = "if"                                            # a registered neuron model
    leak: float = 1.0                                             # lif: v <- leak * v + I
    coding: str = "poisson"                                       # a registered input coding
    timesteps: int = 20
    surrogate: Dict[str, float] = field(default_factory=lambda: {"name": "stdb"})
    i_decay: int = DECAY_UNITY          # loihi-cuba current decay (4096: no current memory)
    v_decay: int = 0                    # loihi-cuba voltage decay (0: no leak)
    input_scale: Optional[float] = None  # graded input on the deployed network: integer input = round(x * scale);
                                         # None: not set (training runs round(x); export takes it from the data)
    reset: str = "subtract"             # a model with a choice of reset (IF / LIF): "subtract" or "zero"
    VERSION: ClassVar[int] = 2

    def __post_init__(self):
        if not isinstance(self.neuron, str) or not isinstance(self.coding, str):
            raise ConfigError(f"neuron and coding must be names, got {self.neuron!r} and {self.coding!r}")
        model = NEURONS.get(self.neuron)
        CODINGS.get(self.coding)
        if not isinstance(self.reset, str) or self.reset not in RESETS:
            raise ConfigError(f"unknown reset {self.reset!r}; valid: {', '.join(RESETS)}")
        model = model.with_reset(self.reset)
        self._check_thresholds()
        if not _number(self.leak) or not 0.0 < self.leak <= 1.0:
            raise ConfigError(f"leak must be in (0, 1], got {self.leak!r}")
        if self.leak != 1.0 and "leak" not in model.reads:
            leaky = " or ".join(NEURONS.names(lambda m: "leak" in m.reads))
            raise ConfigError(f"leak {self.leak} applies to {leaky} neurons only; '{self.neuron}' neurons have none "
                              f"(leave it at 1.0, or use a neuron with a leak)")
        if not _integer(self.timesteps) or not 1 <= self.timesteps <= MAX_TIMESTEPS:
            raise ConfigError(f"timesteps must be an integer from 1 to {MAX_TIMESTEPS:,}, got {self.timesteps!r}")
        if not (_integer(self.i_decay) and _integer(self.v_decay)) or not 1 <= self.i_decay <= DECAY_UNITY or \
                not 0 <= self.v_decay < DECAY_UNITY:
            raise ConfigError(f"decays must be integers 1..4096 (current) and 0..4095 (voltage), got {self.i_decay!r}, "
                              f"{self.v_decay!r}")
        if self.input_scale is not None and not (_number(self.input_scale) and 0 < self.input_scale < math.inf):
            raise ConfigError(f"input_scale must be a finite number > 0, got {self.input_scale!r}")
        if not isinstance(self.surrogate, dict):
            raise ConfigError(f"surrogate must be a dict of name, alpha, beta, width, got {self.surrogate!r}")
        try:
            get_surrogate(**self.surrogate)
        except TypeError as exc:
            raise ConfigError(f"surrogate {self.surrogate!r}: {exc}") from None

    def _check_thresholds(self) -> None:
        if not isinstance(self.thresholds, dict):
            raise ConfigError(f"thresholds must be a dict of spiking layer -> threshold, got {type(self.thresholds).__name__}")
        for name, value in self.thresholds.items():
            if not _number(value) or not 0 < value < math.inf:
                raise ConfigError(f"threshold of layer '{name}' is {value!r}; thresholds must be finite numbers > 0")

    @property
    def model(self) -> NeuronModel:
        """The neuron model this configuration runs (its reset chosen by `reset` where the model has a choice)."""
        return NEURONS.get(self.neuron).with_reset(self.reset)

    @property
    def input_coding(self) -> InputCoding:
        return CODINGS.get(self.coding)

    def deployed_input_scale(self) -> Optional[float]:
        """The scale of the deployed network's graded input in training (round(x) while not set); None for spikes."""
        if not self.input_coding.graded:
            return None
        return self.input_scale if self.input_scale is not None else 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "version": self.VERSION}

    @staticmethod
    def from_dict(d: dict) -> "SnnConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"SNN configuration: expected a dict, got {type(d).__name__}")
        d = dict(d)
        version = d.pop("version", 1)
        if not _integer(version) or version > SnnConfig.VERSION:
            raise ConfigError(f"SNN configuration version {version!r}: written by a newer snntc, or not by snntc")
        if version < 2 and d.get("input_scale") == 1.0:
            d["input_scale"] = None
        unknown = sorted(set(d) - {f.name for f in fields(SnnConfig)})
        if unknown:
            raise ConfigError(f"SNN configuration: unknown settings {unknown}")
        return SnnConfig(**d)

    @staticmethod
    def of(value: Union["SnnConfig", dict]) -> "SnnConfig":
        return value if isinstance(value, SnnConfig) else SnnConfig.from_dict(value)

    def differences(self, other: Union["SnnConfig", dict, None]) -> list:
        """The settings in which `other` differs from this one, sorted."""
        mine = self.to_dict()
        theirs = {} if other is None else SnnConfig.of(other).to_dict()
        return sorted(k for k in mine if theirs.get(k) != mine[k])

    def spike_fn(self) -> Surrogate:
        return get_surrogate(**self.surrogate)

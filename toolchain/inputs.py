"""Inputs a user brings to a deployed network: arrays read from .npy files, shaped to the network's input, normalized
and coded into what the chip receives each step (the CLI's `simulate|verify|energy --inputs X.npy`).

An array is either
- chip input, (N, T, *input_shape): integer spikes or graded events, fed as they are, step by step; or
- samples, (N, *input_shape): normalized (`normalize`) and coded (`code_samples`, a registered input coding, by
  default the file's) into (N, T, *input_shape).
Any trailing shape whose size equals the input's is reshaped to it (a (1, 28, 28) sample for a (784,) input).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from .coding import CODINGS, chip_input
from .errors import ConfigError, DataError
from .quantization.fixed_point import FxNetwork

NORMALIZATIONS = {
    "none": "the values as given",
    "unit": "pixels to [0, 1]: divided by 255 for integer arrays, as given for floats",
    "standard": "per channel (x - mean) / std with the mean and std the file records (raw pixel units)",
}


def load_array(path, what: str = "inputs", labels: bool = False) -> np.ndarray:
    """A numeric array from a .npy file (no pickled objects): samples or chip input, or with `labels` one label per
    sample; DataError in one line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what}: no such file {path}")
    try:
        x = np.load(str(path), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{what}: {path} is not a .npy array ({first})") from None
    if not isinstance(x, np.ndarray) or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{what}: {path} holds {getattr(x, 'dtype', type(x).__name__)}, not numbers")
    if labels:
        if x.ndim == 2 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 1:
            raise DataError(f"{what}: {path} has shape {x.shape}; expected (N,), one class index per sample")
        return x
    if x.ndim < 2 or x.shape[0] == 0:
        raise DataError(f"{what}: {path} has shape {x.shape}; expected (N, T, *input_shape) or (N, *input_shape)")
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise DataError(f"{what}: {path} holds NaN or infinite values")
    return x


def fit_shape(x: np.ndarray, input_shape: Tuple[int, ...], samples_only: bool = False) -> Tuple[np.ndarray, bool]:
    """(x reshaped, is_chip_input). Samples (N, *input_shape) come first, then chip input (N, T, *input_shape);
    an exact shape before one of the same size. ConfigError in one line when neither fits."""
    shape, size = tuple(int(s) for s in input_shape), int(np.prod(input_shape))
    if tuple(x.shape[1:]) == shape:
        return x, False
    if samples_only:
        if int(np.prod(x.shape[1:])) != size:
            raise ConfigError(f"inputs have shape {tuple(x.shape[1:])}, the network expects {shape}")
        return x.reshape((x.shape[0],) + shape), False
    if x.ndim >= 3 and tuple(x.shape[2:]) == shape:
        return x, True
    if int(np.prod(x.shape[1:])) == size:
        return x.reshape((x.shape[0],) + shape), False
    if x.ndim >= 3 and int(np.prod(x.shape[2:])) == size:
        return x.reshape(x.shape[:2] + shape), True
    raise ConfigError(f"inputs have shape {tuple(x.shape)}; the network takes (N, T, *{shape}) or (N, *{shape}) "
                      f"(or any shape of {size} values per sample or step)")


def normalize(x: np.ndarray, net: FxNetwork, how: str) -> np.ndarray:
    """Samples (N, *input_shape) normalized per `how` (NORMALIZATIONS), as float32."""
    if how not in NORMALIZATIONS:
        raise ConfigError(f"unknown normalization {how!r}; known: {', '.join(NORMALIZATIONS)}")
    if how == "unit":
        return (x.astype(np.float32) / 255.0) if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32)
    if how == "none":
        return x.astype(np.float32)
    mean, std = np.asarray(net.mean, np.float64), np.asarray(net.std, np.float64)
    if mean.size == 0 or std.size == 0:
        raise ConfigError("--normalize standard needs the mean and std of the training data, and this file records "
                          "none: normalize the inputs yourself (--normalize none) or use --normalize unit")
    channels = int(net.input_shape[0]) if len(net.input_shape) == 3 else 1
    if mean.size not in (1, channels) or std.size != mean.size or np.any(std <= 0):
        raise ConfigError(f"the file's mean {tuple(mean)} / std {tuple(std)} do not fit {channels} channels")
    view = (1, -1, 1, 1) if len(net.input_shape) == 3 else (1, -1)
    return ((x.astype(np.float64) - mean.reshape(view)) / std.reshape(view)).astype(np.float32)


def chip_bits(x: np.ndarray, input_bits: int) -> int:
    """The message bits chip input x needs: the network's own, or as many as its values take (signed)."""
    if x.size == 0 or input_bits > 0 or (x.min() >= 0 and x.max() <= 1):
        return int(input_bits)
    return max(8, int(np.abs(x).max()).bit_length() + 1)


def with_coding(net: FxNetwork, coding: Optional[str], samples: np.ndarray) -> FxNetwork:
    """The network with its input coded by `coding` (a registered name; None: the file's): the bits and, for a
    graded coding, the scale of the input. A graded coding the file does not record takes its scale from the
    samples (they span its levels)."""
    if coding is None or coding == net.input_coding:
        return net
    entry = CODINGS.get(coding)
    scale = net.input_scale
    if entry.graded:
        scale = float(entry.input_scale(samples))
    return replace(net, input_coding=entry.name, input_bits=int(entry.input_bits(bool((samples < 0).any()))),
                   input_scale=scale)


def check_timesteps(T: int, timesteps: Optional[int]) -> None:
    if timesteps is not None and int(timesteps) != int(T):
        raise ConfigError(f"the chip input has {T} time steps, --timesteps says {timesteps}")


def check_labels(labels: Optional[np.ndarray], samples: int, num_classes: int) -> Optional[np.ndarray]:
    """Labels (N,) of integer classes below the network's class count; ConfigError in one line otherwise."""
    if labels is None:
        return None
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != samples:
        raise ConfigError(f"labels have shape {tuple(y.shape)}; expected ({samples},), one per sample")
    if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise ConfigError("labels must be integer class indices")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ConfigError(f"labels span [{y.min()}, {y.max()}] but the network has {num_classes} classes (output "
                          f"neurons): not labels of this network")
    return y


def chip_inputs(net: FxNetwork, x: np.ndarray, coding: Optional[str] = None, how: str = "none",
                timesteps: Optional[int] = None, seed: int = 0, samples_only: bool = False
                ) -> Tuple[FxNetwork, np.ndarray]:
    """(the network as it is fed, chip input (N, T, *input_shape) int64) from a user's array x: chip input as it
    is (the message bits it needs), samples normalized and coded (`samples_only`: x holds samples, a dataset's)."""
    x, is_chip = fit_shape(np.asarray(x), net.input_shape, samples_only)
    if is_chip:
        if coding is not None:
            raise ConfigError("the inputs are already chip input (N, T, *input_shape): --coding applies to samples "
                              "(N, *input_shape)")
        check_timesteps(x.shape[1], timesteps)
        if np.issubdtype(x.dtype, np.floating) and not np.all(x == np.round(x)):
            raise ConfigError("chip input (N, T, *input_shape) must be integer spikes or graded events; pass samples "
                              "(N, *input_shape) to have them coded")
        xi = x.astype(np.int64)
        if xi.size and (xi.min() < -2 ** 31 or xi.max() >= 2 ** 31):
            raise ConfigError("chip input values must fit 32-bit messages")
        return replace(net, input_bits=chip_bits(xi, net.input_bits), timesteps=int(x.shape[1])), xi
    samples = normalize(x, net, how)
    fed = with_coding(net, coding, samples)
    T = int(timesteps or net.timesteps)
    entry = CODINGS.get(fed.input_coding)
    return replace(fed, timesteps=T), chip_input(entry, samples, fed.input_scale if entry.graded else None, T,
                                                 seed=seed)

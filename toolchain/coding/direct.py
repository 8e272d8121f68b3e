"""Direct coding: the analog (normalized) image is the first layer's input at every step. On the chip it is graded
8-bit input, round(x * scale) with the scale that spans [-127, 127] over the training set (INPUT_LEVELS), the first
layer multiplying it at every position and step (the energy model counts those as MACs)."""
from __future__ import annotations

import numpy as np

from .base import InputCoding

INPUT_LEVELS = 127          # graded 8-bit signed input


def direct_input_scale(train_x: np.ndarray) -> float:
    """Direct coding on Loihi: integer input = round(x * scale) spans [-127, 127] over the training set."""
    return INPUT_LEVELS / max(float(np.abs(train_x).max()), 1e-6)


DIRECT = InputCoding(
    name="direct", summary="the analog image every step (graded 8-bit input on the chip)",
    encode=lambda x, generator: x, input_bits=lambda signed: 8, graded=True, input_scale=direct_input_scale,
    dense_input=True, nir="the normalized image itself")

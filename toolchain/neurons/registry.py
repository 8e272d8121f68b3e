"""The neuron-model registry. A new model is one module (its step, parameters, and what forms it has) plus one line
here."""
from __future__ import annotations

from ..registry import Registry
from . import loihi_cuba, subtractive
from .base import NeuronModel

NEURONS: Registry[NeuronModel] = Registry("neuron model")

for _model in (subtractive.IF, subtractive.LIF, loihi_cuba.LOIHI_CUBA):
    NEURONS.register(_model)

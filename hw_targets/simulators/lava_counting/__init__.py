"""A Lava process that counts a layer's spikes inside the samples' windows, so that a run reads back one number per
neuron (and per sample for the output layer) instead of every spike of every step.

Lava reads a Var back one element at a time (``PyLoihiProcessModel._get_var`` sends each value through the
runtime's channel), so reading a ``sink.RingBuffer`` of neurons x steps costs more than running the network when
a layer is large. What ``simulate`` needs is the spike count of each neuron over the samples' windows and the output
layer's counts per sample: this process accumulates them as the spikes arrive. It lives in its own package because
Lava's compiler imports every module beside a process to find its models.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol


class WindowSpikeCounter(AbstractProcess):
    """Counts spikes (non-zero payloads) per neuron on global steps first .. first + samples * T - 1; with
    ``per_sample``, also per sample (window n: steps first + n*T .. first + n*T + T - 1)."""

    def __init__(self, shape, first: int, samples: int, timesteps: int, per_sample: bool = False):
        super().__init__(shape=shape, first=first, samples=samples, timesteps=timesteps, per_sample=per_sample)
        self.a_in = InPort(shape=shape)
        self.counts = Var(shape=shape, init=0)
        self.sample_counts = Var(shape=((samples,) + tuple(shape)) if per_sample else (1,), init=0)


@implements(proc=WindowSpikeCounter, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "floating_pt")
class PyWindowSpikeCounterModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)
    counts: np.ndarray = LavaPyType(np.ndarray, np.int32)
    sample_counts: np.ndarray = LavaPyType(np.ndarray, np.int32)

    def run_spk(self):
        s = self.a_in.recv()
        p = self.proc_params
        rel = self.time_step - p["first"]
        if 0 <= rel < p["samples"] * p["timesteps"]:
            hit = s != 0
            self.counts += hit
            if p["per_sample"]:
                self.sample_counts[rel // p["timesteps"]] += hit

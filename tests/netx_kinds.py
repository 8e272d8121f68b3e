"""A small netx network of each layer kind the stock loader builds, written with h5py in the layout lava-dl's
slayer exports (`export_hdf5` of its blocks: float weights, a 'neuron' group of device parameters, shapes in
(C, H, W) order), and chip input for it. tests/test_netx_kinds.py checks each against Lava; the benchmark
(benchmarks/emulator_vs_lava.py --suite) times each."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

import h5py
import numpy as np


def _type(g, name: str) -> None:
    g.create_dataset("type", (1,), "S10", [name.encode("ascii")])


def _neuron(g, v_th: int, i_decay: int = 1024, v_decay: int = 128, **extra) -> None:
    params = {"type": b"CUBA", "iDecay": i_decay, "vDecay": v_decay, "vThMant": v_th, "refDelay": 1,
              "gradedSpike": False, **extra}
    for key, value in params.items():
        g.create_dataset(f"neuron/{key}", data=value)


def _weights(rng, shape, lo=-40, hi=100) -> np.ndarray:
    return (rng.integers(lo, hi, shape) * 2).astype(np.float32)


def _input(layers, index: int, shape, v_th: int, **neuron) -> None:
    g = layers.create_group(str(index))
    _type(g, "input")
    g.create_dataset("shape", data=np.array(shape))
    g.create_dataset("weight", data=np.float32(1.0))        # slayer's input transform: netx keeps it, Lava ignores it
    g.create_dataset("bias", data=np.float32(0.0))
    _neuron(g, v_th, **neuron)


def _conv(layers, index: int, rng, c_in: int, c_out: int, out_hw, v_th: int, stride=1, padding=1, **neuron):
    g = layers.create_group(str(index))
    _type(g, "conv")
    g.create_dataset("shape", data=np.array((c_out,) + tuple(out_hw)))
    for key, value in {"inChannels": c_in, "outChannels": c_out, "groups": 1}.items():
        g.create_dataset(key, data=value)
    g.create_dataset("kernelSize", data=np.array([3, 3]))
    g.create_dataset("stride", data=np.array([stride, stride]))
    g.create_dataset("padding", data=np.array([padding, padding]))
    g.create_dataset("dilation", data=np.array([1, 1]))
    g.create_dataset("weight", data=_weights(rng, (c_out, c_in, 3, 3)))
    _neuron(g, v_th, **neuron)


def _flatten(layers, index: int, size: int) -> None:
    g = layers.create_group(str(index))
    _type(g, "flatten")
    g.create_dataset("shape", data=np.array([size, 1, 1]))


def _dense(layers, index: int, rng, n_in: int, n_out: int, v_th: int, lo=-40, hi=100, **neuron):
    g = layers.create_group(str(index))
    _type(g, "dense")
    g.create_dataset("shape", data=np.array([n_out]))
    g.create_dataset("inFeatures", data=n_in)
    g.create_dataset("outFeatures", data=n_out)
    g.create_dataset("weight", data=_weights(rng, (n_out, n_in), lo, hi))
    _neuron(g, v_th, **neuron)
    return g


def _simulation(f, t_sample: int) -> None:
    f.create_dataset("simulation/Ts", data=1.0)
    f.create_dataset("simulation/tSample", data=float(t_sample))


def write_input_neuron(directory, name="input_neuron.net", t_sample=6) -> Path:
    """input layer with a CUBA neuron (2x8x8) -> conv 2->4 s2 -> flatten -> dense 64->5, slayer's tSample."""
    rng = np.random.default_rng(11)
    path = Path(directory) / name
    with h5py.File(path, "w") as f:
        _simulation(f, t_sample)
        layers = f.create_group("layer")
        _input(layers, 0, (2, 8, 8), v_th=8, i_decay=1024, v_decay=256)
        _conv(layers, 1, rng, 2, 4, (4, 4), v_th=150, stride=2)
        _flatten(layers, 2, 64)
        _dense(layers, 3, rng, 64, 5, v_th=300)
    return path


def _dense_file(directory, name: str, seed: int, n_in: int, t_sample: int, layers_fn) -> Path:
    """A dense network: slayer's tSample, a plain input layer of n_in features, then layers_fn(layers, rng)."""
    rng = np.random.default_rng(seed)
    path = Path(directory) / name
    with h5py.File(path, "w") as f:
        _simulation(f, t_sample)
        layers = f.create_group("layer")
        g = layers.create_group("0")
        _type(g, "input")
        g.create_dataset("shape", data=np.array([n_in]))
        layers_fn(layers, rng)
    return path


def write_graded(directory, name="graded.net", t_sample=5) -> Path:
    """dense 24->16->12->4 whose hidden neurons are marked as sending graded spikes, as slayer exports them
    ('gradedSpike' True): netx reads only 'messageBits' (see the refusal), so Lava runs them as unary spikes."""
    def build(layers, rng):
        _dense(layers, 1, rng, 24, 16, v_th=250, gradedSpike=True)
        _dense(layers, 2, rng, 16, 12, v_th=250, gradedSpike=True)
        _dense(layers, 3, rng, 12, 4, v_th=300)
    return _dense_file(directory, name, 12, 24, t_sample, build)


def write_dense_rec(directory, name="dense_rec.net", t_sample=5) -> Path:
    """dense 20->16 (recurrent: dense_rec with weight_rec 16x16) -> dense 16->4."""
    def build(layers, rng):
        rec = _dense(layers, 1, rng, 20, 16, v_th=200)
        del rec["type"]
        _type(rec, "dense_rec")
        rec.create_dataset("weight_rec", data=_weights(rng, (16, 16), -60, 80))
        _dense(layers, 2, rng, 16, 4, v_th=250)
    return _dense_file(directory, name, 13, 20, t_sample, build)


def write_delays(directory, name="delays.net", t_sample=5) -> Path:
    """dense 20->16 with axonal delays 0..3 (one per output, as slayer exports them) -> dense 16->8 with a
    delay per synapse -> dense 8->4."""
    def build(layers, rng):
        _dense(layers, 1, rng, 20, 16, v_th=200).create_dataset(
            "delay", data=rng.integers(0, 4, 16).astype(np.float32))
        _dense(layers, 2, rng, 16, 8, v_th=200).create_dataset(
            "delay", data=rng.integers(0, 3, (8, 16)).astype(np.float32))
        _dense(layers, 3, rng, 8, 4, v_th=250)
    return _dense_file(directory, name, 14, 20, t_sample, build)


def _sdnn(g, v_th: Optional[int], sigma_output: bool = False) -> None:
    """slayer's sigma-delta device_params: type SDNN, activation, vThMant; sigma_output on its output block."""
    g.create_dataset("neuron/type", data=b"SDNN")
    g.create_dataset("neuron/activation", data=b"relu")
    if v_th is not None:
        g.create_dataset("neuron/vThMant", data=v_th)
    if sigma_output:
        g.create_dataset("neuron/sigma_output", data=True)


def _retype(g, v_th: Optional[int], sigma_output: bool = False) -> None:
    del g["neuron"]
    _sdnn(g, v_th, sigma_output)


def write_sigma_delta(directory, name="sigma_delta.net", t_sample=6) -> Path:
    """A sigma-delta network as slayer's sigma_delta blocks export it: an input layer with an SDNN neuron (Lava's
    Delta) 2x8x8 -> conv 2->4 s2 with a bias (SigmaDelta) -> flatten -> dense 64->12 with a bias (SigmaDelta) ->
    dense 12->5 with sigma_output (Sigma)."""
    rng = np.random.default_rng(15)
    path = Path(directory) / name
    with h5py.File(path, "w") as f:
        _simulation(f, t_sample)
        layers = f.create_group("layer")
        _input(layers, 0, (2, 8, 8), v_th=1)
        _retype(layers["0"], v_th=2)
        _conv(layers, 1, rng, 2, 4, (4, 4), v_th=1, stride=2)
        _retype(layers["1"], v_th=4)
        layers["1"].create_dataset("bias", data=rng.integers(-30, 30, 4).astype(np.float32))
        _flatten(layers, 2, 64)
        g = _dense(layers, 3, rng, 64, 12, v_th=1, lo=-6, hi=8)
        _retype(g, v_th=8)
        g.create_dataset("bias", data=rng.integers(-20, 20, 12).astype(np.float32))
        _retype(_dense(layers, 4, rng, 12, 5, v_th=1, lo=-6, hi=8), v_th=None, sigma_output=True)
    return path


def write_sigma_delta_wraps(directory, name="sigma_delta_wraps.net", t_sample=5) -> Path:
    """dense sigma-delta layers whose int32 sums wrap on large inputs: Delta 24 -> SigmaDelta 24->16 (weights up to
    +-254) -> Sigma 16->4."""
    def build(layers, rng):
        _retype(layers["0"], v_th=1)
        _retype(_dense(layers, 1, rng, 24, 16, v_th=1, lo=-127, hi=128), v_th=1)
        _retype(_dense(layers, 2, rng, 16, 4, v_th=1, lo=-127, hi=128), v_th=None, sigma_output=True)

    def with_input_neuron(layers, rng):
        layers["0"].create_group("neuron")
        build(layers, rng)
    return _dense_file(directory, name, 16, 24, t_sample, with_input_neuron)


@dataclass(frozen=True)
class Kind:
    name: str
    summary: str
    write: Callable[[str], Path]
    feed: str = "spikes"                  # how an input layer with a neuron is fed (FxNetwork.input_feed)
    graded_max: int = 0                   # chip input values in [-graded_max, graded_max]; 0: binary spikes
    input_shape: Optional[Tuple[int, ...]] = None

    def inputs(self, net, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        shape = (n, net.timesteps) + tuple(net.input_shape)
        if self.feed == "bias":            # one value per sample, the same at every step
            values = rng.integers(0, self.graded_max + 1, (n, 1) + tuple(net.input_shape))
            return np.repeat(values, net.timesteps, axis=1)
        if self.graded_max:
            return rng.integers(-self.graded_max, self.graded_max + 1, shape)
        return (rng.random(shape) < 0.4).astype(np.int32)


KINDS = (
    Kind("input-neuron spikes", "an input layer with a neuron, spikes into its a_in", write_input_neuron),
    Kind("input-neuron graded", "an input layer with a neuron, graded events into its a_in", write_input_neuron,
         graded_max=3),
    Kind("input-neuron bias", "an input layer with a neuron, the image as its bias", write_input_neuron,
         feed="bias", graded_max=40),
    Kind("graded spikes", "hidden CUBA neurons exported with gradedSpike (slayer's flag)", write_graded),
    Kind("dense_rec", "a recurrent dense layer (RecurrentDense)", write_dense_rec),
    Kind("synaptic delays", "dense layers with axonal and per-synapse delays (DelayDense)", write_delays),
    Kind("sigma-delta", "SDNN neurons: Delta input, SigmaDelta conv and dense with biases, Sigma output",
         write_sigma_delta, graded_max=7),
)

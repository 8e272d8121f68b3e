"""The fixed-point network: what the quantizer produces and what the netx writer, the Lava runner,
the emulator and the energy counter read.

Semantics (Lava's PyLifModelBitAcc with the netx blocks, checked bit for bit against lava-nc 0.10.0
by tests/test_emulator_vs_lava.py): each layer is a synapse (dense or conv, integer weights)
feeding CUBA LIF neurons. Lava's u, v and messages are int32 (every sum below wraps at 32 bits):

    a[t]  = synapse(s_prev[t - 1])                 # one step of delay per layer (Lava's buffering)
    u[t]  = w24(decay(u[t-1], i_decay) + (a[t] << 6))
    v[t]  = decay(v[t-1], v_decay) + u[t] + (bias << 6)   # clipped to +-(2**23 - 1)
    s[t]  = v[t] > (vth << 6);  v[t] = 0 where s[t]
    decay(x, d) = sign(x) * ((|x| * (4096 - d)) >> 12)
    w24(x) = x - 2**24 if x > 2**23; x + 2**24 if x <= -2**23; else x
             # Lava's "24-bit wrap" is this single correction, not a modulo: for |x| < 3 * 2**23
             # it wraps into [-2**23 + 1, 2**23] (2**23 is kept, -2**23 becomes +2**23);
             # a larger |x| stays outside the 24-bit range

so `vth` and `bias` are in the same integer units as the synaptic input `a`. netx stores
iDecay = i_decay (Lava's du = iDecay - 1, plus Lava's offset of 1) and vDecay = v_decay.
Weights are even integers in [-256, 254] (an 8-bit signed mantissa times 2); netx derives its own
weight exponent from them, so the integer values themselves are what the chip computes with,
with one exception: in a dense matrix without any positive weight Lava uses its inhibitory sign
mode, which clips -256 to -255 and then truncates it to a power-of-two step that depends on the
other weights (-255, -254 or -252 for typical matrices); hw_targets/simulators/emulator.py reproduces it.
Synapse details: a dense layer computes W . s exactly (an int32 dot product for graded input
spikes, which can wrap); a conv layer ignores the weight exponent, uses the raw integer weights,
computes in float64 (scipy) and wraps the result to 24 bits (`signed_clamp`) before the neuron.
The bias mantissa is held as int16. Time: layer k (1-based) sees global input step t at step
t + k; with samples presented back to back (T steps each, netx reset_interval=T,
reset_offset=1, staggered per layer), sample n occupies steps n*T + k + 1 .. n*T + k + T of
layer k, and in that window a_k[tau] = synapse(s_{k-1}[tau]) from zero state, tau = 1..T
(see hw_targets/simulators/lava.py). "The last step" of a sample is the end of the output layer's window.

Sigma-delta layers (`neuron` "sdnn" / "sigma", netx's SDNN neurons, Lava's Delta / SigmaDelta / Sigma processes with
netx's spike_exp = state_exp = 6; hw_targets/simulators/sigma_delta.py emulates them) send graded int32 messages and
keep their state across samples (netx ignores the reset interval for them):

    sigma[t] = sigma[t-1] + a[t]                   # SigmaDelta and Sigma
    act[t]   = max(sigma[t] + (bias << 12), 0)     # SigmaDelta (ReLU); Delta (an input layer): act = a[t] << 12
    d[t]     = act[t] - act[t-1] + r[t-1]
    m[t]     = d[t] if |d[t]| >= vth << 12 else 0;  r[t] = d[t] - m[t]
    message  = m[t] >> 6                           # Sigma sends sigma[t] itself
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import QuantizationError, SimulationError

WEIGHT_MIN, WEIGHT_MAX = -256, 254     # effective integer weight range (8-bit mantissa, times 2)
VTH_MAX = 2 ** 17 - 1                  # 17-bit threshold mantissa
BIAS_MIN, BIAS_MAX = -4096, 4095       # 13-bit signed bias mantissa
STATE_MAX = 2 ** 23 - 1                # 24-bit state (u wraps, v clips)
DECAY_UNITY = 4096                     # 12-bit decays
INPUT_FEEDS = ("spikes", "bias")       # how an input layer with a neuron receives the chip input (see FxNetwork)
VOLTAGE_READOUT = "voltage readout"    # what a layer read by its voltage shows where spikes would be
VOLTAGE_READOUT_NOTE = ("voltage readout: the output layer is read by its neurons' voltage at the last step (the "
                        "class is the highest), so it is built not to spike")
READOUTS = ("voltage", "spikes")
NEURONS = ("cuba", "sdnn", "sigma")    # CUBA LIF; sigma-delta (Delta on an input layer, else SigmaDelta); Sigma
SDNN_EXP = 12                          # netx's spike_exp + state_exp: vth and bias are stored << 12
SDNN_VTH_MAX = 2 ** 19 - 1             # vth << 12 must fit Lava's int32 Var
INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1
NO_DELTA_BIAS = ("a sigma-delta input layer (Lava's Delta) has no bias: its input is fed as values into its a_in "
                 "(--input-feed spikes)")


def _integers(values: np.ndarray, what: str, name: str) -> np.ndarray:
    """Values that must be finite integers (NaN would become INT64_MIN on the chip's integer path)."""
    if values.dtype.kind == "f" and not (np.all(np.isfinite(values)) and np.all(values == np.round(values))):
        bad = "NaN or infinite" if not np.all(np.isfinite(values)) else "non-integer"
        raise QuantizationError(f"layer '{name}': {what} hold {bad} values; Loihi's are integers")
    if values.dtype.kind not in "iufb":
        raise QuantizationError(f"layer '{name}': {what} are {values.dtype}, not integers")
    return values


@dataclass
class FxLayer:
    """One deployable layer: integer synapse + CUBA neurons."""
    name: str
    kind: str                           # "dense" | "conv" | "input" (netx's input layer with a neuron: no synapse)
    weight: np.ndarray                  # int; dense (out, in); conv (out, in/groups, kh, kw), torch layout
    input_shape: Tuple[int, ...]        # (C, H, W) or (F,)
    output_shape: Tuple[int, ...]       # (C, H, W) or (F,)
    vth: int                            # spike when v > vth (in synaptic-input units)
    i_decay: int = DECAY_UNITY          # current decay 1..4096 (4096: the current is this step's input only)
    v_decay: int = 0                    # voltage decay 0..4095 (0: no leak, an integrate-and-fire neuron)
    bias: Optional[np.ndarray] = None   # int, per output channel (conv) or per neuron (dense)
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int] = (0, 0)
    dilation: Tuple[int, int] = (1, 1)
    groups: int = 1
    flatten_before: bool = False        # a netx 'flatten' precedes this dense layer
    weight_rec: Optional[np.ndarray] = None   # dense_rec: recurrent weights (out, out), one step of delay
    delay: Optional[np.ndarray] = None        # dense: synaptic delays (out, in), steps 0..62 beyond the one of
                                              # every synapse (Lava's DelayDense)
    is_output: bool = False
    scale: float = 1.0                  # integer = float * scale (for reports)
    source: str = ""                    # the toolchain layers this was lowered from
    relays_out: int = 0                 # the last output channels are relays carrying a residual block's shortcut
    relays_in: int = 0                  # the last input channels are relays (toolchain.ir.relays)
    neuron: str = "cuba"                # one of NEURONS: "sdnn"/"sigma" send graded messages, keep state across samples

    @property
    def sigma_delta(self) -> bool:
        """A sigma-delta layer (SDNN: Delta, SigmaDelta or Sigma): graded messages, state kept across samples."""
        return self.neuron != "cuba"

    @property
    def neurons(self) -> int:
        return int(np.prod(self.output_shape))

    @property
    def relay_neurons(self) -> int:
        return self.neurons // int(self.output_shape[0]) * self.relays_out if self.relays_out else 0

    def validate(self) -> None:
        w = _integers(np.asarray(self.weight), "weights", self.name)
        for what, v in (("threshold", self.vth), ("current decay", self.i_decay), ("voltage decay", self.v_decay)):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise QuantizationError(f"layer '{self.name}': the {what} is {v!r}, not an integer")
        if w.size and (w.min() < WEIGHT_MIN or w.max() > WEIGHT_MAX):
            raise QuantizationError(f"layer '{self.name}': weights span [{w.min()}, {w.max()}], "
                                    f"outside Loihi's [{WEIGHT_MIN}, {WEIGHT_MAX}]")
        if self.neuron not in NEURONS:
            raise QuantizationError(f"layer '{self.name}': neuron {self.neuron!r} is not one of {', '.join(NEURONS)}")
        if self.sigma_delta:
            self._validate_sigma_delta()
            return
        if not 0 <= self.vth <= VTH_MAX:
            raise QuantizationError(f"layer '{self.name}': threshold {self.vth} is outside the 17-bit range [0, {VTH_MAX}]")
        if not 1 <= self.i_decay <= DECAY_UNITY or not 0 <= self.v_decay < DECAY_UNITY:
            raise QuantizationError(f"layer '{self.name}': decays (current {self.i_decay}, voltage {self.v_decay}) "
                                    f"outside [1, 4096] and [0, 4095]")
        if self.bias is not None:
            b = _integers(np.asarray(self.bias), "biases", self.name)
            if b.size and (b.min() < BIAS_MIN or b.max() > BIAS_MAX):
                raise QuantizationError(f"layer '{self.name}': bias spans [{b.min()}, {b.max()}], "
                                        f"outside the 13-bit range [{BIAS_MIN}, {BIAS_MAX}]")

    def _validate_sigma_delta(self) -> None:
        """A sigma-delta layer's threshold is stored << 12 in an int32 Var; its bias is int32 (netx casts it)."""
        if self.neuron == "sigma" and self.kind == "input":
            raise QuantizationError(f"layer '{self.name}': an input layer with a neuron is a Delta encoder in netx, "
                                    f"not a Sigma decoder")
        if not 0 <= self.vth <= SDNN_VTH_MAX:
            raise QuantizationError(f"layer '{self.name}': sigma-delta threshold {self.vth} is outside [0, "
                                    f"{SDNN_VTH_MAX}] (Lava holds it << 12 in an int32)")
        if self.bias is not None:
            b = _integers(np.asarray(self.bias), "biases", self.name)
            if b.size and (b.min() < INT32_MIN or b.max() > INT32_MAX):
                raise QuantizationError(f"layer '{self.name}': bias spans [{b.min()}, {b.max()}], outside int32")


@dataclass
class FxNetwork:
    """A chain of FxLayers plus how inputs are coded and outputs read."""
    input_shape: Tuple[int, ...]        # (C, H, W) or (F,)
    layers: List[FxLayer]
    num_classes: int
    timesteps: int
    input_coding: str = "poisson"       # "poisson": binary (signed: see input_bits) spikes; "direct": graded
    input_bits: int = 0                 # 0: unary spikes; >0: graded input spikes of this many bits
    input_scale: float = 1.0            # direct coding: integer input = round(normalized pixel * input_scale)
    readout: str = "voltage"            # "voltage": output layer's v at the last step; "spikes": spike counts
    input_feed: str = "spikes"          # a first "input" layer (a neuron, no synapse) receives the chip input as
                                        # "spikes" into its a_in each step, or as its "bias" (one value per sample)
    mean: Tuple[float, ...] = ()        # per-channel normalization applied before coding
    std: Tuple[float, ...] = ()
    metadata: Dict[str, object] = field(default_factory=dict)

    @property
    def sigma_delta(self) -> bool:
        """Any layer is sigma-delta (its state crosses the samples' windows)."""
        return any(layer.sigma_delta for layer in self.layers)

    @property
    def global_time_line(self) -> bool:
        """Some state crosses the samples' windows (sigma-delta layers, dense_rec, synaptic delays): the emulator then
        runs every sample of a run in one stream (hw_targets/simulators/stream.py), not batch by batch."""
        return self.sigma_delta or any(l.weight_rec is not None or l.delay is not None for l in self.layers)

    def check_input_feed(self) -> None:
        """SimulationError where the input cannot be fed as `input_feed` says: a Delta input has no bias."""
        if self.input_neuron and self.input_feed == "bias" and self.layers[0].sigma_delta:
            raise SimulationError(NO_DELTA_BIAS)

    def readout_layer(self) -> Optional[str]:
        """The layer read by its voltage, whose neurons do not spike (readout "voltage"), or None."""
        return self.layers[-1].name if self.readout == "voltage" and self.layers else None

    def validate(self) -> None:
        for layer in self.layers:
            layer.validate()
        if self.readout not in READOUTS:
            raise QuantizationError(f"readout must be 'voltage' or 'spikes', not {self.readout!r}")
        if self.input_feed not in INPUT_FEEDS:
            raise QuantizationError(f"input_feed must be one of {', '.join(INPUT_FEEDS)}, not {self.input_feed!r}")

    @property
    def input_neuron(self) -> bool:
        """The first layer is netx's input layer with a neuron (no synapse before it)."""
        return bool(self.layers) and self.layers[0].kind == "input"


@dataclass
class SimulationResult:
    """What a run (Lava or emulator) returns. Counts are summed over samples and time steps.

    `input_spike_counts` has the network's input shape; `spike_counts[i]` has layer i's output shape.
    For graded (direct) input, `input_spike_counts` counts non-zero input events.
    """
    backend: str
    samples: int
    timesteps: int
    predictions: np.ndarray             # (N,)
    labels: Optional[np.ndarray]        # (N,) or None
    layer_names: List[str]
    spike_counts: List[np.ndarray]
    input_spike_counts: np.ndarray
    wall_time_s: float = 0.0
    output_values: Optional[np.ndarray] = None   # (N, classes) readout values
    network: Optional[FxNetwork] = field(default=None, repr=False, compare=False)   # the network that ran

    def __iter__(self):
        """`net, result = simulate(...)`, the form before simulate returned the result alone, still unpacks."""
        return iter((self.network, self))

    @property
    def accuracy(self) -> Optional[float]:
        if self.labels is None:
            return None
        return float(np.mean(self.predictions == self.labels))

    def to_json(self, network: Optional[FxNetwork] = None) -> dict:
        """Per layer its spikes; with the `network`, the layer read by its voltage says so ("readout": "voltage")."""
        layers = []
        network = network if network is not None else self.network
        readout = network.readout_layer() if network is not None else None
        for i, (name, counts) in enumerate(zip(self.layer_names, self.spike_counts)):
            total = int(np.sum(counts))
            layers.append({"name": name, "neurons": int(np.prod(counts.shape)), "spikes": total,
                           "spikes_per_inference": total / max(self.samples, 1),
                           **({"readout": "voltage"} if name == readout else {})})
        return {"backend": self.backend, "accuracy": self.accuracy, "samples": self.samples,
                "timesteps": self.timesteps, "wall_time_s": self.wall_time_s,
                "input_spikes_per_inference": float(np.sum(self.input_spike_counts)) / max(self.samples, 1),
                "layers": layers}

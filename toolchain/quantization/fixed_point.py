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
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import QuantizationError

WEIGHT_MIN, WEIGHT_MAX = -256, 254     # effective integer weight range (8-bit mantissa, times 2)
VTH_MAX = 2 ** 17 - 1                  # 17-bit threshold mantissa
BIAS_MIN, BIAS_MAX = -4096, 4095       # 13-bit signed bias mantissa
STATE_MAX = 2 ** 23 - 1                # 24-bit state (u wraps, v clips)
DECAY_UNITY = 4096                     # 12-bit decays


@dataclass
class FxLayer:
    """One deployable layer: integer synapse + CUBA neurons."""
    name: str
    kind: str                           # "dense" | "conv"
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
    is_output: bool = False
    scale: float = 1.0                  # integer = float * scale (for reports)
    source: str = ""                    # the toolchain layers this was lowered from
    relays_out: int = 0                 # the last output channels are relays carrying a residual block's shortcut
    relays_in: int = 0                  # the last input channels are relays (toolchain.ir.relays)

    @property
    def neurons(self) -> int:
        return int(np.prod(self.output_shape))

    @property
    def relay_neurons(self) -> int:
        return self.neurons // int(self.output_shape[0]) * self.relays_out if self.relays_out else 0

    def validate(self) -> None:
        w = np.asarray(self.weight)
        if w.size and (w.min() < WEIGHT_MIN or w.max() > WEIGHT_MAX):
            raise QuantizationError(f"layer '{self.name}': weights span [{w.min()}, {w.max()}], "
                                    f"outside Loihi's [{WEIGHT_MIN}, {WEIGHT_MAX}]")
        if not 0 <= self.vth <= VTH_MAX:
            raise QuantizationError(f"layer '{self.name}': threshold {self.vth} is outside the 17-bit range [0, {VTH_MAX}]")
        if not 1 <= self.i_decay <= DECAY_UNITY or not 0 <= self.v_decay < DECAY_UNITY:
            raise QuantizationError(f"layer '{self.name}': decays (current {self.i_decay}, voltage {self.v_decay}) "
                                    f"outside [1, 4096] and [0, 4095]")
        if self.bias is not None:
            b = np.asarray(self.bias)
            if b.min() < BIAS_MIN or b.max() > BIAS_MAX:
                raise QuantizationError(f"layer '{self.name}': bias spans [{b.min()}, {b.max()}], "
                                        f"outside the 13-bit range [{BIAS_MIN}, {BIAS_MAX}]")


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
    mean: Tuple[float, ...] = ()        # per-channel normalization applied before coding
    std: Tuple[float, ...] = ()
    metadata: Dict[str, object] = field(default_factory=dict)

    def validate(self) -> None:
        for layer in self.layers:
            layer.validate()
        if self.readout not in ("voltage", "spikes"):
            raise QuantizationError(f"readout must be 'voltage' or 'spikes', not {self.readout!r}")


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

    @property
    def accuracy(self) -> Optional[float]:
        if self.labels is None:
            return None
        return float(np.mean(self.predictions == self.labels))

    def to_json(self, network: Optional[FxNetwork] = None) -> dict:
        layers = []
        for i, (name, counts) in enumerate(zip(self.layer_names, self.spike_counts)):
            total = int(np.sum(counts))
            layers.append({"name": name, "neurons": int(np.prod(counts.shape)), "spikes": total,
                           "spikes_per_inference": total / max(self.samples, 1)})
        return {"backend": self.backend, "accuracy": self.accuracy, "samples": self.samples,
                "timesteps": self.timesteps, "wall_time_s": self.wall_time_s,
                "input_spikes_per_inference": float(np.sum(self.input_spike_counts)) / max(self.samples, 1),
                "layers": layers}

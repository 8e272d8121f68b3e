"""Energy per inference from counted operations, per hardware target.

Counting (`count_operations`), per layer and per inference (counts summed over the run's samples,
divided by `result.samples`):

* spikes: the layer's output spikes.
* synaptic ops: for binary input spikes, sum over the layer's input neurons of (that input's spike
  count) x (its real fan-out in this layer). The fan-out is exact: for conv it is the gradient of
  sum(conv(x, kernel != 0)) with respect to x, accumulated tap by tap in numpy (borders, padding,
  strides, dilation and groups exact; checked against a brute-force loop and against torch in the
  tests); for dense it is the number of non-zero weights in the input's column.
  Zero weights are NOT counted by default: Loihi stores synapses sparsely, so a zero weight is no
  synapse and costs no synaptic op (`count_zero_weights=True` counts them, i.e. the full geometric
  fan-out).
* chip MACs: multiplies the SNN itself performs because its input is graded, not binary.
  - dense graded input (a coding with `dense_input`, direct): the first layer receives graded values
    every step, so it is counted as MACs = neurons x fan-in x T (dense in time and space, including
    padding positions and zero inputs), not as synaptic ops;
  - graded input spikes (`net.input_bits > 0`): event-driven, counted like synaptic ops (events x
    fan-out) but booked as MACs, since each op multiplies the payload.
* neuron updates: neurons x time steps (every neuron is updated every step); the updates that
  emitted a spike are the "active" ones (= spikes).
* ANN MACs: what the equivalent ANN layer computes once per inference, output neurons x fan-in
  (nominal fan-in in_channels/groups x kh x kw for conv, in_features for dense; padding positions
  and zero weights included, as MAC counters usually do).

Energy (`estimate_energy`): each hardware target (toolchain.targets.TARGETS; the entries and their formulas in
hw_targets/<target>/, constants in its energy.json, every one with its source) prices a layer's counts:

* loihi (Davies et al. 2018, simulated): synops x 23.6 + inactive updates x 52 + active updates x 81 + spikes x
  1.7 pJ; chip MACs (graded input) are charged as synaptic ops.
* loihi2 (derived from Hala Point): synops x 6.84 + neuron updates x 10.83 pJ, chip MACs charged as synaptic ops.
  An UPPER BOUND, not an estimate.
* cmos45nm (Horowitz 2014, operations only): on conventional hardware an SNN synaptic op is an accumulate (AC, one
  add: FP32 0.9 pJ / INT8 0.03 pJ) and a MAC is FP32 4.6 pJ / INT8 0.23 pJ; neuron updates and memory are not
  counted.
* memory_aware (after Lemaire et al. 2022): adds weight reads, membrane-potential reads and writes and addressing;
  the ANN beside it is charged on the same model.

The ANN column is priced by the target's `ann_pricing()`: the ANN-equivalent MACs on cmos45nm (ops-only, same
precision) for every target but memory_aware, which prices it on its own model.
"""
from __future__ import annotations



import textwrap
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Union

import numpy as np

from ..coding import CODINGS
from ..ir import conv_out_size
from ..targets import TARGETS, HardwareTarget

from ..errors import ConfigError
from ..io.files import atomic_write
from ..quantization.fixed_point import FxLayer, FxNetwork, SimulationResult

PRECISIONS = ("fp32", "int8")


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------

@dataclass
class LayerOps:
    """Operation counts of one layer, per inference."""
    name: str
    kind: str
    neurons: int
    fan_in: int                  # nominal fan-in of one output neuron
    timesteps: int
    input_kind: str              # "spikes" | "graded" (graded input events) | "direct" (analog input)
    input_events: float          # input spikes/events arriving at this layer
    spikes: float                # output spikes
    synaptic_ops: float          # binary-spike synaptic ops (accumulates)
    chip_macs: float             # multiplies the SNN does for graded/direct input
    neuron_updates: float        # neurons x T
    ann_macs: float              # ANN-equivalent MACs, once per inference
    note: str = ""
    relay_neurons: int = 0       # of `neurons`: relays carrying a residual block's shortcut (toolchain.ir.relays)
    relay_synaptic_ops: float = 0.0   # of `synaptic_ops`: into relays, and from relays into this layer

    @property
    def active_updates(self) -> float:
        return min(self.spikes, self.neuron_updates)


@dataclass
class OpCounts:
    """Per-layer, per-inference operation counts of one simulated network."""
    layers: List[LayerOps]
    samples: int
    timesteps: int
    input_coding: str
    count_zero_weights: bool = False
    backend: str = ""

    def total(self, attr: str) -> float:
        return float(sum(getattr(layer, attr) for layer in self.layers))

    def to_json(self) -> dict:
        totals = {k: self.total(k) for k in ("spikes", "synaptic_ops", "chip_macs", "neuron_updates", "ann_macs",
                                             "relay_neurons", "relay_synaptic_ops")}
        return {"samples": self.samples, "timesteps": self.timesteps, "input_coding": self.input_coding,
                "count_zero_weights": self.count_zero_weights, "backend": self.backend,
                "per": "inference", "layers": [asdict(layer) for layer in self.layers], "totals": totals}

    @classmethod
    def from_json(cls, data: dict) -> "OpCounts":
        return cls(layers=[LayerOps(**row) for row in data["layers"]], samples=int(data["samples"]),
                   timesteps=int(data["timesteps"]), input_coding=data["input_coding"],
                   count_zero_weights=bool(data.get("count_zero_weights", False)),
                   backend=data.get("backend", ""))


def _conv_geometry(layer: FxLayer):
    w = np.asarray(layer.weight)
    if w.ndim != 4:
        raise ConfigError(f"layer '{layer.name}': conv weight must be (out, in/groups, kh, kw), has shape {w.shape}")
    if len(layer.input_shape) != 3:
        raise ConfigError(f"layer '{layer.name}': conv input must be (C, H, W), is {tuple(layer.input_shape)}")
    cin = layer.input_shape[0]
    if w.shape[1] * layer.groups != cin or w.shape[0] % layer.groups:
        raise ConfigError(f"layer '{layer.name}': weight {w.shape} with groups={layer.groups} "
                          f"does not match {cin} input channels")
    return w


def conv_fanout_map(layer: FxLayer, count_zero_weights: bool = False) -> np.ndarray:
    """Exact fan-out of every input neuron of a conv layer, shape (C, H, W), as int64.

    Entry (c, y, x) is the number of (output neuron, non-zero weight) pairs that input reaches,
    i.e. d/dx sum(conv(x, weight != 0)). It is accumulated tap by tap: kernel tap (ky, kx) links
    output (oy, ox) to input (oy*sy - py + ky*dy, ox*sx - px + kx*dx) when that lies inside the
    input (padding positions are no synapses), for the output channels of the input's group whose
    weight at that tap is non-zero. So borders, padding, stride, dilation and groups are exact.
    """
    w = _conv_geometry(layer)
    cin, h, wd = (int(s) for s in layer.input_shape)
    cout, cpg, kh, kw = w.shape
    (sy, sx), (py, px), (dy, dx) = layer.stride, layer.padding, layer.dilation
    ho, wo = conv_out_size(h, kh, sy, py, dy), conv_out_size(wd, kw, sx, px, dx)
    if (cout, ho, wo) != tuple(int(s) for s in layer.output_shape):
        raise ConfigError(f"layer '{layer.name}': the conv of {tuple(layer.input_shape)} gives "
                          f"{(cout, ho, wo)}, but the layer says {tuple(layer.output_shape)}")
    mask = np.ones(w.shape, dtype=np.int64) if count_zero_weights else (w != 0).astype(np.int64)
    opg = cout // layer.groups
    # per group, tap and input channel: how many of the group's output channels use that tap
    taps = mask.reshape(layer.groups, opg, cpg, kh, kw).sum(axis=1)       # (groups, cpg, kh, kw)
    fan = np.zeros((cin, h, wd), dtype=np.int64)
    oy, ox = np.arange(ho) * sy - py, np.arange(wo) * sx - px
    for ky in range(kh):
        ys = oy + ky * dy
        ys = ys[(ys >= 0) & (ys < h)]                 # distinct rows: one output row per input row per tap
        for kx in range(kw):
            xs = ox + kx * dx
            xs = xs[(xs >= 0) & (xs < wd)]
            if ys.size == 0 or xs.size == 0:
                continue
            counts = taps[:, :, ky, kx].reshape(cin)                      # channel c = g * cpg + i
            fan[:, ys[:, None], xs[None, :]] += counts[:, None, None]
    return fan


def fanout_map(layer: FxLayer, count_zero_weights: bool = False) -> np.ndarray:
    """Exact fan-out of every input neuron (conv: (C, H, W); dense: (in_features,))."""
    if layer.kind == "conv":
        return conv_fanout_map(layer, count_zero_weights)
    if layer.kind == "dense":
        w = np.asarray(layer.weight)
        if w.ndim != 2:
            raise ConfigError(f"layer '{layer.name}': dense weight must be (out, in), has shape {w.shape}")
        return (np.full(w.shape[1], w.shape[0], dtype=np.int64) if count_zero_weights
                else np.count_nonzero(w, axis=0).astype(np.int64))
    raise ConfigError(f"layer '{layer.name}': unknown layer kind {layer.kind!r} (expected 'dense' or 'conv')")


def relay_part(layer: FxLayer) -> FxLayer:
    """The layer with only its relay synapses (rows into relays, columns from relays) kept, the rest zero."""
    w = np.asarray(layer.weight)
    keep = np.zeros(w.shape, dtype=bool)
    if layer.relays_out:
        keep[-layer.relays_out:] = True
    if layer.relays_in:
        keep[:, -layer.relays_in:] = True
    return replace(layer, weight=np.where(keep, w, 0))


def relay_synapses(layer: FxLayer) -> int:
    """Synapses (input neuron, output neuron, non-zero weight) of a layer that belong to its relays."""
    if not (layer.relays_in or layer.relays_out):
        return 0
    return int(fanout_map(relay_part(layer)).sum())


def ann_equivalent_macs(layer: FxLayer) -> float:
    """What the ANN layer computes once per inference, output neurons x fan-in, relays left out: a relayed block's
    last layer adds its shortcut's MACs (the non-zero shortcut taps per output neuron: 1 for the identity's add)."""
    w = np.asarray(layer.weight)
    if not (layer.relays_in or layer.relays_out):
        return float(layer.neurons) * nominal_fan_in(layer)
    own_out = layer.neurons - layer.relay_neurons
    per_channel = own_out // (int(layer.output_shape[0]) - layer.relays_out)
    own = w[:w.shape[0] - layer.relays_out, :w.shape[1] - layer.relays_in]
    shortcut = np.count_nonzero(w[:w.shape[0] - layer.relays_out, w.shape[1] - layer.relays_in:]) if layer.relays_in else 0
    return float(own_out) * int(np.prod(own.shape[1:])) + float(shortcut) * per_channel


def nominal_fan_in(layer: FxLayer) -> int:
    """Synapses per output neuron: conv in_channels/groups x kh x kw; dense in_features."""
    w = np.asarray(layer.weight)
    return int(np.prod(w.shape[1:]))


def _input_counts(layer: FxLayer, counts: np.ndarray, fanout: np.ndarray, what: str) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    if counts.size != fanout.size:
        raise ConfigError(f"layer '{layer.name}': {what} has {counts.size} entries (shape {counts.shape}), "
                          f"the layer has {fanout.size} inputs (shape {fanout.shape})")
    if layer.kind == "conv" and counts.shape != fanout.shape:
        raise ConfigError(f"layer '{layer.name}': {what} has shape {counts.shape}, the layer's input is {fanout.shape}")
    return counts.reshape(fanout.shape)


def count_operations(net: FxNetwork, result: SimulationResult, count_zero_weights: bool = False) -> OpCounts:
    """Per-layer, per-inference operation counts of `net` from the spike counts of `result`."""
    if len(result.spike_counts) != len(net.layers):
        raise ConfigError(f"the result has spike counts for {len(result.spike_counts)} layers, "
                          f"the network has {len(net.layers)}")
    if result.samples < 1:
        raise ConfigError(f"the result covers {result.samples} samples; need at least 1")
    n, steps = int(result.samples), int(result.timesteps)
    dense = CODINGS.get(net.input_coding).dense_input
    rows: List[LayerOps] = []
    for i, layer in enumerate(net.layers):
        fanout = fanout_map(layer, count_zero_weights)
        fan_in = nominal_fan_in(layer)
        if i == 0:
            incoming = _input_counts(layer, result.input_spike_counts, fanout, "result.input_spike_counts")
        else:
            incoming = _input_counts(layer, result.spike_counts[i - 1], fanout,
                                     f"the spike counts of layer '{net.layers[i - 1].name}'")
        out = np.asarray(result.spike_counts[i], dtype=np.float64)
        if out.size != layer.neurons:
            raise ConfigError(f"layer '{layer.name}': spike counts have {out.size} entries, the layer has {layer.neurons} neurons")
        events = float(incoming.sum()) / n
        ops = float((incoming * fanout).sum()) / n
        relay_ops = float((incoming * fanout_map(relay_part(layer), count_zero_weights)).sum()) / n \
            if (layer.relays_in or layer.relays_out) else 0.0
        synops, macs, note = ops, 0.0, ""
        input_kind = "spikes"
        if i == 0 and dense:
            input_kind = "direct"
            synops, macs = 0.0, float(layer.neurons) * fan_in * steps
            note = ("direct (analog) input: counted as MACs = neurons x fan-in x T, "
                    "the chip multiplies the graded input every step")
        elif i == 0 and net.input_bits > 0:
            input_kind = "graded"
            synops, macs = 0.0, ops
            note = (f"graded input spikes ({net.input_bits} bits): event-driven ops counted as MACs, "
                    f"each multiplies the payload")
        rows.append(LayerOps(name=layer.name, kind=layer.kind, neurons=layer.neurons, fan_in=fan_in,
                             timesteps=steps, input_kind=input_kind, input_events=events,
                             spikes=float(out.sum()) / n, synaptic_ops=synops, chip_macs=macs,
                             neuron_updates=float(layer.neurons) * steps,
                             ann_macs=ann_equivalent_macs(layer), note=note, relay_neurons=layer.relay_neurons,
                             relay_synaptic_ops=relay_ops))
    return OpCounts(layers=rows, samples=n, timesteps=steps, input_coding=net.input_coding,
                    count_zero_weights=count_zero_weights, backend=result.backend)


# --------------------------------------------------------------------------------------------
# Energy
# --------------------------------------------------------------------------------------------

@dataclass
class LayerEnergy:
    name: str
    input_kind: str
    spikes: float
    synaptic_ops: float
    chip_macs: float
    neuron_updates: float
    ann_macs: float
    snn_pj: float
    ann_pj: float
    snn_breakdown: Dict[str, float] = field(default_factory=dict)
    ann_breakdown: Dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass
class EnergyReport:
    """SNN energy on a target beside the ANN equivalent, per layer and per inference (pJ)."""
    target: str
    target_title: str
    model: str
    precision: str
    snn_is_upper_bound: bool
    ann_model: str
    layers: List[LayerEnergy]
    samples: int
    timesteps: int
    sources: List[str]
    constants: Dict[str, dict]
    notes: List[str] = field(default_factory=list)
    ann_target: str = ""                 # the target that priced the ANN column

    @property
    def snn_total_pj(self) -> float:
        return float(sum(layer.snn_pj for layer in self.layers))

    @property
    def ann_total_pj(self) -> float:
        return float(sum(layer.ann_pj for layer in self.layers))

    def to_json(self) -> dict:
        totals = {"snn_pj": self.snn_total_pj, "ann_pj": self.ann_total_pj,
                  "snn_over_ann": (self.snn_total_pj / self.ann_total_pj) if self.ann_total_pj else None}
        for key in ("spikes", "synaptic_ops", "chip_macs", "neuron_updates", "ann_macs"):
            totals[key] = float(sum(getattr(layer, key) for layer in self.layers))
        return {"target": self.target, "target_title": self.target_title, "model": self.model,
                "precision": self.precision, "snn_is_upper_bound": self.snn_is_upper_bound,
                "ann_model": self.ann_model, "unit": "pJ", "per": "inference",
                "samples": self.samples, "timesteps": self.timesteps,
                "layers": [asdict(layer) for layer in self.layers], "totals": totals,
                "sources": list(self.sources), "constants": dict(self.constants), "notes": list(self.notes),
                "ann_target": self.ann_target}

    @classmethod
    def from_json(cls, data: dict) -> "EnergyReport":
        return cls(target=data["target"], target_title=data["target_title"], model=data["model"],
                   precision=data["precision"], snn_is_upper_bound=bool(data["snn_is_upper_bound"]),
                   ann_model=data["ann_model"], layers=[LayerEnergy(**row) for row in data["layers"]],
                   samples=int(data["samples"]), timesteps=int(data["timesteps"]),
                   sources=list(data["sources"]), constants=dict(data["constants"]),
                   notes=list(data.get("notes", [])), ann_target=data.get("ann_target", ""))


RELAY_NOTE = "residual blocks as relay channels"


def relay_note(counts: OpCounts) -> str:
    """What the relays that carry residual shortcuts cost, in the counts above; "" for a network without them."""
    neurons, ops = int(counts.total("relay_neurons")), counts.total("relay_synaptic_ops")
    if not neurons:
        return ""
    share = ops / max(counts.total("synaptic_ops"), 1e-12)
    updates = neurons * counts.timesteps
    return (f"{RELAY_NOTE}: {neurons:,} extra neurons ({updates:,} neuron updates, "
            f"{updates / max(counts.total('neuron_updates'), 1e-12):.1%}), {ops:,.0f} extra synaptic ops per inference "
            f"({share:.1%} of the synaptic ops), included above (ANN MACs without them)")


def estimate_energy(counts: OpCounts, target: Union[str, HardwareTarget], precision: str = "fp32") -> EnergyReport:
    """Energy per inference of the SNN on `target` (a registered name or entry) and of the ANN equivalent, per layer
    (pJ).

    `precision` ("fp32" | "int8") selects the Horowitz add/MAC figures of the ops-only model, used
    by the cmos45nm target and by the ANN column of every target but memory_aware.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    t = TARGETS.get(target) if isinstance(target, str) else target
    ann = t.ann_pricing()
    table, ann_table = t.energy(), ann.energy()
    rows = []
    for layer in counts.layers:
        snn = t.snn_energy(layer, table, precision)
        annb = ann.ann_energy(layer, ann_table, precision)
        rows.append(LayerEnergy(name=layer.name, input_kind=layer.input_kind, spikes=layer.spikes,
                                synaptic_ops=layer.synaptic_ops, chip_macs=layer.chip_macs,
                                neuron_updates=layer.neuron_updates, ann_macs=layer.ann_macs,
                                snn_pj=float(sum(snn.values())), ann_pj=float(sum(annb.values())),
                                snn_breakdown=snn, ann_breakdown=annb, note=layer.note))
    notes = [table.description]
    if t.graded_input_note and any(r.chip_macs for r in rows):
        notes.append(t.graded_input_note)
    if any(r.input_kind == "direct" for r in rows):
        notes.append("the first layer is fed by direct (analog) input and is counted as MACs, not synaptic ops")
    relay = relay_note(counts)
    if relay:
        notes.append(relay)
    notes.append("zero weights counted as synapses" if counts.count_zero_weights
                 else "zero weights are not synapses (sparse storage): they cost no synaptic op")
    sources = list(table.sources) + [s for s in ann_table.sources if s not in table.sources]
    constants = {f"{table.name}.{k}": c.to_json() for k, c in table.constants.items()}
    if ann is not t:
        constants.update({f"{ann_table.name}.{k}": ann_table.constants[k].to_json() for k in ann.ann_constants(precision)})
    return EnergyReport(target=table.name, target_title=table.title, model=table.model, precision=precision,
                        snn_is_upper_bound=table.is_upper_bound, ann_model=ann.ann_model(ann_table, precision),
                        layers=rows, samples=counts.samples, timesteps=counts.timesteps, sources=sources,
                        constants=constants, notes=notes, ann_target=ann.name)


# --------------------------------------------------------------------------------------------
# Presentation
# --------------------------------------------------------------------------------------------

_PREFIXES = (("pJ", 1.0), ("nJ", 1e3), ("uJ", 1e6), ("mJ", 1e9), ("J", 1e12))


def format_pj(value: float) -> str:
    """An energy given in pJ, printed with a readable prefix."""
    unit, scale = _PREFIXES[0]
    for u, s in _PREFIXES:
        if abs(value) >= s:
            unit, scale = u, s
    return f"{value / scale:.3g} {unit}"


def _count(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e6:
        return f"{value:.3e}"
    return f"{value:,.1f}" if value != int(value) else f"{int(value):,}"


def format_energy_table(report: EnergyReport) -> str:
    """A readable per-layer table with totals, all per inference."""
    head = ["layer", "spikes", "synaptic ops", "chip MACs", "neuron updates", "SNN energy", "ANN MACs", "ANN energy"]
    body = []
    for r in report.layers:
        body.append([r.name + (" *" if r.input_kind in ("direct", "graded") else ""), _count(r.spikes),
                     _count(r.synaptic_ops), _count(r.chip_macs), _count(r.neuron_updates),
                     format_pj(r.snn_pj), _count(r.ann_macs), format_pj(r.ann_pj)])
    total = ["total", _count(sum(r.spikes for r in report.layers)),
             _count(sum(r.synaptic_ops for r in report.layers)), _count(sum(r.chip_macs for r in report.layers)),
             _count(sum(r.neuron_updates for r in report.layers)), format_pj(report.snn_total_pj),
             _count(sum(r.ann_macs for r in report.layers)), format_pj(report.ann_total_pj)]
    widths = [max(len(row[c]) for row in [head, total] + body) for c in range(len(head))]

    def line(row):
        return "  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths)))

    rule = "-" * len(line(head))
    bound = " (UPPER BOUND)" if report.snn_is_upper_bound else ""
    out = [f"Energy per inference on {report.target_title}{bound}",
           f"T = {report.timesteps} steps, {report.samples} samples; ANN: {report.ann_model}",
           rule, line(head), rule] + [line(row) for row in body] + [rule, line(total), rule]
    if report.ann_total_pj > 0:
        out.append(f"SNN / ANN energy: {report.snn_total_pj / report.ann_total_pj:.3g}")
    if any(r.input_kind in ("direct", "graded") for r in report.layers):
        out.append("* graded input: counted as MACs the chip performs, not as synaptic ops")
    out += [n for n in report.notes if n.startswith(RELAY_NOTE)]
    out.append("sources: " + "; ".join(report.sources))
    return "\n".join(out)


def plot_energy(report: EnergyReport, path: Union[str, Path]) -> Path:
    """A PNG bar chart of energy per layer (SNN beside ANN), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    names = [r.name for r in report.layers]
    snn = np.array([r.snn_pj for r in report.layers], dtype=np.float64)
    ann = np.array([r.ann_pj for r in report.layers], dtype=np.float64)
    both = np.concatenate([snn, ann])
    positive = both[both > 0]
    peak = float(positive.max()) if positive.size else 1.0
    unit, scale = _PREFIXES[0]
    for u, s in _PREFIXES:
        if peak >= s:
            unit, scale = u, s
    log = positive.size > 0 and positive.max() / positive.min() > 100

    fig = Figure(figsize=(max(7.0, 0.9 * len(names) + 3), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(names))
    label = f"SNN on {report.target}" + (" (upper bound)" if report.snn_is_upper_bound else "")
    ax.bar(x - 0.2, snn / scale, width=0.4, label=label, color="tab:blue")
    same = report.ann_target == report.target
    ann_label = " (same model)" if same else f" ({report.precision.upper()} MACs, {report.ann_target or 'cmos45nm'})"
    ax.bar(x + 0.2, ann / scale, width=0.4, label="ANN equivalent" + ann_label, color="tab:orange")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set_xlabel("layer")
    ax.set_ylabel(f"energy per inference ({unit})" + (", log scale" if log else ""))
    if log:
        ax.set_yscale("log")
    title = textwrap.fill(f"Energy per inference on {report.target_title}", 70)
    ax.set_title(f"{title}\nSNN {format_pj(report.snn_total_pj)} vs ANN "
                 f"{format_pj(report.ann_total_pj)}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return path

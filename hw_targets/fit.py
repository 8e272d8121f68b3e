"""Does a fixed-point network fit Loihi 2 (or Loihi)? Cores and chips per layer: the fit mapper of the targets
with neuro-core limits (hw_targets/loihi, hw_targets/loihi2).

Limits come from the target's `limits.json` (hw_targets/<target>/limits.json, each with its source). Loihi 2's per-core
axon limits are not public: the Loihi 1 figure (4,096) is used and marked "assumed".

Model (conservative; one layer per core, cores are never shared between layers):

* weights: every stored weight takes `weight_bits` (8) bits, whatever its value. A layer whose
  integer weights need a wider mantissa than `weight_bits` (with the best power-of-two exponent)
  does not fit.
* dense: stored as a full matrix (zero weights included); a core hosting any neuron of the layer
  receives every input, so the layer's fan-in axons = in_features, which must not exceed
  `fan_in_axons_per_core`. Neurons per core = min(neurons_per_core, memory // (in_features x bytes)).
* conv, `conv_weights="shared"` (default): Loihi 2 shares convolution weights, so a core stores the
  kernel (in_channels/groups x kh x kw weights) of each output channel it hosts, once per core
  (replicated on every core that hosts that channel); addressing overhead is not modelled.
  `conv_weights="expanded"`: every connection stored as its own weight (dense-equivalent, what a
  chip without weight sharing needs), per neuron in_channels/groups x kh x kw weights.
  The layer is split into tiles of (output channels x rows x columns); a tile's input axons are the
  distinct input neurons its receptive field touches (exact for aligned tiles, padding excluded),
  which must not exceed `fan_in_axons_per_core`. The tiling that needs the fewest cores is chosen.
* cores per layer >= max(neurons / neurons_per_core, synaptic bytes / memory per core, axon
  constraint), rounded up (the tiling reaches or exceeds these bounds); chips = ceil(total cores /
  cores_per_chip).
* fan-out: a core's output axons are estimated as (neurons on the core) x (cores of the next layer);
  exceeding `fan_out_axons_per_core` is reported as a warning only (Loihi 2 multicasts spikes).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping

import numpy as np

from toolchain.errors import ConfigError, HardwareFitError, NotSupportedError
from toolchain.quantization.fixed_point import FxLayer, FxNetwork
from toolchain.targets import TARGETS, HardwareTarget

LIMIT_KEYS = ("cores_per_chip", "neurons_per_core", "synaptic_memory_per_core",
              "fan_in_axons_per_core", "fan_out_axons_per_core", "weight_bits")
CONV_WEIGHT_MODELS = ("shared", "expanded")


@dataclass(frozen=True)
class HardwareLimits:
    name: str
    title: str
    cores_per_chip: int
    neurons_per_core: int
    synaptic_memory_per_core: int      # bytes
    fan_in_axons_per_core: int
    fan_out_axons_per_core: int
    weight_bits: int
    sources: Dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def load_limits(name: str = "loihi2") -> HardwareLimits:
    """The limits of a registered hardware target ("loihi2", "loihi") from its limits.json."""
    target = TARGETS.get(name)
    if target.limits_file is None:
        raise NotSupportedError(f"hardware target '{name}' has no resource limits")
    return limits_from_dict(json.loads(Path(target.limits_file).read_text()), target.name)


def fit_mapper(name: str):
    """The fit check of the target `name` against its own limits: a target entry's `fit`."""
    def fit(net: FxNetwork, conv_weights: str = "shared") -> "FitReport":
        return check_fit(net, name, conv_weights)
    return fit


def neurocore_target(name: str, summary: str, here: Path, snn_energy) -> HardwareTarget:
    """A chip of the Loihi family as a target entry: its energy.json and limits.json beside its module (`here`), this
    fit mapper, the ANN priced on 45 nm CMOS, run by the bit-exact emulator and Lava."""
    return HardwareTarget(
        name=name, summary=summary, energy_file=here / "energy.json", snn_energy=snn_energy, ann_target="cmos45nm",
        graded_input_note="graded/direct input MACs on the chip are charged as synaptic ops of this target",
        limits_file=here / "limits.json", fit=fit_mapper(name), simulators=("emulator", "lava"))


def limits_from_dict(entry: Mapping, name: str = "custom") -> HardwareLimits:
    values, sources = {}, {}
    for key in LIMIT_KEYS:
        if key not in entry:
            raise ConfigError(f"hardware limits '{name}' lack '{key}'")
        item = entry[key]
        if isinstance(item, Mapping):
            values[key], sources[key] = int(item["value"]), str(item.get("source", ""))
        else:
            values[key] = int(item)
        if values[key] < 1:
            raise ConfigError(f"hardware limits '{name}': '{key}' must be positive, is {values[key]}")
    if isinstance(entry.get("sources"), Mapping):
        sources = dict(entry["sources"], **{k: v for k, v in sources.items() if v})
    return HardwareLimits(name=name, title=str(entry.get("title", name)), sources=sources, **values)


def _resolve(limits) -> HardwareLimits:
    if limits is None:
        return load_limits("loihi2")
    if isinstance(limits, HardwareLimits):
        return limits
    if isinstance(limits, str):
        return load_limits(limits)
    if isinstance(limits, Mapping):
        return limits_from_dict(limits, str(limits.get("name", "custom")))
    raise ConfigError(f"limits must be a name, a dict or HardwareLimits, not {type(limits).__name__}")


# --------------------------------------------------------------------------------------------

def weight_bits_needed(weight: np.ndarray, max_exponent: int = 7) -> int:
    """Bits of the smallest signed mantissa m with weight = m * 2**e for one shared e in [0, max_exponent].
    (Every weight is divisible by 2**e up to the trailing zeros of their bitwise OR; a larger e only shrinks the
    mantissas, so the best e is the largest allowed: three passes over the weights.)"""
    w = np.asarray(weight)
    if w.dtype.kind not in "iu":
        w = w.astype(np.int64)
    if w.size == 0 or not w.any():
        return 1
    ored = int(np.bitwise_or.reduce(w, axis=None))
    e = min(max_exponent, (ored & -ored).bit_length() - 1)
    lo, hi = int(w.min()) >> e, int(w.max()) >> e
    bits = 1
    while lo < -(1 << (bits - 1)) or hi > (1 << (bits - 1)) - 1:
        bits += 1
    return bits


@dataclass
class LayerFit:
    name: str
    kind: str
    neurons: int
    fan_in: int                 # synapses per neuron (conv: in_channels/groups x kh x kw)
    weight_bits: int            # bits the layer's weights need
    axons_per_core: int         # largest number of input axons one of its cores receives
    neurons_per_core: int       # largest number of neurons on one of its cores
    synaptic_bytes: int         # total over its cores (conv kernels counted once per core holding them)
    bytes_per_core: int         # largest synaptic memory one of its cores uses
    cores: int
    chips: int                  # if this layer were alone
    limited_by: str             # the per-core limit its fullest core is closest to
    tiling: str = ""
    problem: str = ""           # why it does not fit; "" when it fits
    tile_rows: int = 0          # conv: output rows x columns per core; dense: 0
    tile_cols: int = 0
    tiles_h: int = 1            # conv: spatial tiles down and across
    tiles_w: int = 1
    channel_chunks: int = 1     # conv: output-channel chunks (cores = chunks x tiles); dense: cores
    relay_neurons: int = 0      # of `neurons`: relays carrying a residual block's shortcut (counted in the cores)

    @property
    def fits(self) -> bool:
        return not self.problem


@dataclass
class FitReport:
    hardware: str
    title: str
    conv_weights: str
    limits: Dict[str, object]
    layers: List[LayerFit]
    warnings: List[str] = field(default_factory=list)

    @property
    def total_cores(self) -> int:
        return int(sum(layer.cores for layer in self.layers))

    @property
    def chips(self) -> int:
        return int(math.ceil(self.total_cores / int(self.limits["cores_per_chip"]))) if self.layers else 0

    @property
    def fits(self) -> bool:
        """Every layer can be mapped (the chip count may exceed one: multi-chip systems exist)."""
        return all(layer.fits for layer in self.layers)

    @property
    def fits_one_chip(self) -> bool:
        return self.fits and self.chips <= 1

    @property
    def problems(self) -> List[str]:
        return [layer.problem for layer in self.layers if layer.problem]

    def raise_if_not_fit(self) -> None:
        if not self.fits:
            raise HardwareFitError("; ".join(self.problems))

    def to_json(self) -> dict:
        return {"hardware": self.hardware, "title": self.title, "conv_weights": self.conv_weights,
                "fits": self.fits, "fits_one_chip": self.fits_one_chip, "total_cores": self.total_cores,
                "chips": self.chips, "limits": dict(self.limits),
                "layers": [dict(asdict(layer), fits=layer.fits) for layer in self.layers],
                "problems": self.problems, "warnings": list(self.warnings)}

    @classmethod
    def from_json(cls, data: dict) -> "FitReport":
        rows = [LayerFit(**{k: v for k, v in row.items() if k != "fits"}) for row in data["layers"]]
        return cls(hardware=data["hardware"], title=data["title"], conv_weights=data["conv_weights"],
                   limits=dict(data["limits"]), layers=rows, warnings=list(data.get("warnings", [])))

    def format_fit_table(self, warnings: bool = True) -> str:
        return format_fit_table(self, warnings)


# --------------------------------------------------------------------------------------------

def _candidates(n: int) -> List[int]:
    """Tile sizes t in 1..n giving distinct tile counts ceil(n / t) (the largest t for each count)."""
    sizes = {int(math.ceil(n / k)) for k in range(1, n + 1)}
    return sorted(sizes)


def _span(out_size: int, tile: int, stride: int, pad: int, dil: int, kernel: int, in_size: int) -> int:
    """Most distinct input rows (or columns) an aligned tile of `tile` output rows touches."""
    offsets = np.arange(kernel) * dil - pad
    best = 0
    for start in range(0, out_size, tile):
        rows = np.arange(start, min(start + tile, out_size)) * stride
        touched = np.unique((rows[:, None] + offsets[None, :]).ravel())
        best = max(best, int(np.count_nonzero((touched >= 0) & (touched < in_size))))
    return best


def _limited_by(lim: HardwareLimits, neurons: int, nbytes: int, axons: int) -> str:
    """The per-core limit the fullest core comes closest to."""
    fills = {"neurons per core": neurons / lim.neurons_per_core,
             "synaptic memory": nbytes / lim.synaptic_memory_per_core,
             "fan-in axons": axons / lim.fan_in_axons_per_core}
    return max(fills, key=fills.get)


def _dense_fit(layer: FxLayer, lim: HardwareLimits, bits: int) -> LayerFit:
    w = np.asarray(layer.weight)
    fan_in = int(w.shape[1]) + (layer.neurons if layer.weight_rec is not None else 0)    # dense_rec: its own spikes too
    per_neuron = int(math.ceil(fan_in * lim.weight_bits / 8))
    neurons = layer.neurons
    problem = ""
    if fan_in > lim.fan_in_axons_per_core:
        problem = (f"layer '{layer.name}': fan-in {fan_in} axons exceeds the {lim.fan_in_axons_per_core} "
                   f"a {lim.title} core accepts")
    elif per_neuron > lim.synaptic_memory_per_core:
        problem = (f"layer '{layer.name}': one neuron's synapses need {per_neuron} bytes, more than the "
                   f"{lim.synaptic_memory_per_core} bytes of synaptic memory of a {lim.title} core")
    if problem:
        return LayerFit(layer.name, "dense", neurons, fan_in, bits, fan_in, 0, neurons * per_neuron, 0, 0, 0,
                        "", "", problem)
    by_mem = lim.synaptic_memory_per_core // per_neuron
    per_core = min(lim.neurons_per_core, by_mem)
    cores = int(math.ceil(neurons / per_core))
    per_core_actual = int(math.ceil(neurons / cores))
    limited = _limited_by(lim, per_core_actual, per_core_actual * per_neuron, fan_in)
    return LayerFit(layer.name, "dense", neurons, fan_in, bits, fan_in, per_core_actual,
                    neurons * per_neuron, per_core_actual * per_neuron, cores,
                    int(math.ceil(cores / lim.cores_per_chip)), limited,
                    f"{cores} cores x {per_core_actual} neurons", channel_chunks=cores)


def _input_fit(layer: FxLayer, lim: HardwareLimits) -> LayerFit:
    """netx's input layer with a neuron: one axon per neuron from the chip's input, no synaptic memory."""
    neurons = layer.neurons
    per_core = min(lim.neurons_per_core, lim.fan_in_axons_per_core)
    cores = int(math.ceil(neurons / per_core))
    actual = int(math.ceil(neurons / cores))
    return LayerFit(layer.name, "input", neurons, 1, 0, actual, actual, 0, 0, cores,
                    int(math.ceil(cores / lim.cores_per_chip)), _limited_by(lim, actual, 0, actual),
                    f"{cores} cores x {actual} neurons", channel_chunks=cores)


def _conv_fit(layer: FxLayer, lim: HardwareLimits, bits: int, conv_weights: str) -> LayerFit:
    w = np.asarray(layer.weight)
    co, ipg, kh, kw = (int(s) for s in w.shape)
    g = int(layer.groups)
    opg = co // g
    ci, hi, wi = (int(s) for s in layer.input_shape)
    _, ho, wo = (int(s) for s in layer.output_shape)
    (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
    fan_in = ipg * kh * kw
    bytes_per_weight = lim.weight_bits / 8
    kernel_bytes = int(math.ceil(fan_in * bytes_per_weight))      # one output channel's kernel
    neurons = layer.neurons
    mem, npc, axons = lim.synaptic_memory_per_core, lim.neurons_per_core, lim.fan_in_axons_per_core

    one_in = ipg * _span(ho, 1, sh, ph, dh, kh, hi) * _span(wo, 1, sw, pw, dw, kw, wi)
    problem = ""
    if one_in > axons:
        problem = (f"layer '{layer.name}': fan-in {one_in} axons exceeds the {axons} a {lim.title} core accepts")
    elif kernel_bytes > mem:
        problem = (f"layer '{layer.name}': one neuron's synapses need {kernel_bytes} bytes, more than the "
                   f"{mem} bytes of synaptic memory of a {lim.title} core")
    if problem:
        return LayerFit(layer.name, "conv", neurons, fan_in, bits, one_in, 0, neurons * kernel_bytes, 0, 0, 0,
                        "", "", problem)

    spans_h = {t: _span(ho, t, sh, ph, dh, kh, hi) for t in _candidates(ho)}
    spans_w = {t: _span(wo, t, sw, pw, dw, kw, wi) for t in _candidates(wo)}
    best = None
    for th, rh in spans_h.items():
        for tw, rw in spans_w.items():
            area = th * tw
            in_per_group = ipg * rh * rw
            if area > npc or in_per_group > axons:
                continue
            c_max = npc // area
            if conv_weights == "shared":
                c_max = min(c_max, mem // kernel_bytes)
            else:
                c_max = min(c_max, mem // (area * kernel_bytes))
            if c_max < 1:
                continue
            # channel chunks: within one group (c <= opg), or whole groups (k groups per core);
            # chunks are balanced (e.g. 128 channels at most 113 per core -> 2 chunks of 64)
            if c_max >= opg and g > 1:
                k = min(g, c_max // opg, axons // in_per_group)
                chunks = int(math.ceil(g / k))
                groups_per_core = int(math.ceil(g / chunks))
                c = groups_per_core * opg
            else:
                per_group = int(math.ceil(opg / min(c_max, opg)))
                chunks, groups_per_core = g * per_group, 1
                c = int(math.ceil(opg / per_group))
            tiles_h, tiles_w = int(math.ceil(ho / th)), int(math.ceil(wo / tw))
            cores = chunks * tiles_h * tiles_w
            key = (cores, -area)
            if best is None or key < best[0]:
                best = (key, th, tw, c, rh, rw, groups_per_core, tiles_h, tiles_w, chunks)
    if best is None:     # cannot happen when a 1x1x1 tile passed the checks above
        raise HardwareFitError(f"layer '{layer.name}': no tiling fits a {lim.title} core")
    (cores, _), th, tw, c, rh, rw, gpc, tiles_h, tiles_w, chunks = best
    axons_used = ipg * rh * rw * gpc
    per_core_neurons = min(th, ho) * min(tw, wo) * c
    if conv_weights == "shared":
        per_core_bytes = c * kernel_bytes
        total_bytes = per_core_bytes * cores
    else:
        per_core_bytes = per_core_neurons * kernel_bytes
        total_bytes = neurons * kernel_bytes
    limited = _limited_by(lim, per_core_neurons, per_core_bytes, axons_used)
    return LayerFit(layer.name, "conv", neurons, fan_in, bits, axons_used, per_core_neurons, total_bytes,
                    per_core_bytes, cores, int(math.ceil(cores / lim.cores_per_chip)), limited,
                    f"{chunks} channel chunk(s) of {c} x {tiles_h}x{tiles_w} tiles of {th}x{tw}",
                    tile_rows=th, tile_cols=tw, tiles_h=tiles_h, tiles_w=tiles_w, channel_chunks=chunks)


def _destination_cores(nxt: FxLayer, fit: LayerFit) -> int:
    """Cores of the next layer one source neuron may reach (conservative)."""
    if nxt.kind != "conv" or not fit.tile_rows:
        return fit.cores
    kh, kw = np.asarray(nxt.weight).shape[2:]
    (sh, sw), (dh, dw) = nxt.stride, nxt.dilation
    # one input reaches output rows spread over ((kh-1)*dh)//sh + 1 rows: at most that many
    # rows' worth of tiles plus one for misalignment
    reach_h = min(fit.tiles_h, int(math.ceil((((kh - 1) * dh) // sh + 1) / fit.tile_rows)) + 1)
    reach_w = min(fit.tiles_w, int(math.ceil((((kw - 1) * dw) // sw + 1) / fit.tile_cols)) + 1)
    chunks = fit.channel_chunks if nxt.groups == 1 else max(1, int(math.ceil(fit.channel_chunks / nxt.groups)))
    return chunks * reach_h * reach_w


def check_fit(net: FxNetwork, limits=None, conv_weights: str = "shared") -> FitReport:
    """Per-layer neurons, fan-in, synaptic memory, cores and chips on Loihi 2 (default) or `limits`."""
    if conv_weights not in CONV_WEIGHT_MODELS:
        raise ConfigError(f"conv_weights must be one of {', '.join(CONV_WEIGHT_MODELS)}, not {conv_weights!r}")
    lim = _resolve(limits)
    rows: List[LayerFit] = []
    for layer in net.layers:
        bits = weight_bits_needed(layer.weight)
        if layer.kind == "input":
            row = _input_fit(layer, lim)
        elif layer.kind == "dense":
            row = _dense_fit(layer, lim, bits)
        elif layer.kind == "conv":
            row = _conv_fit(layer, lim, bits, conv_weights)
        else:
            raise ConfigError(f"layer '{layer.name}': unknown layer kind {layer.kind!r}")
        row.relay_neurons = layer.relay_neurons
        if bits > lim.weight_bits and not row.problem:
            row.problem = (f"layer '{layer.name}': weights need {bits} bits, wider than the "
                           f"{lim.weight_bits} bits a {lim.title} synapse stores")
        rows.append(row)
    warnings = []
    for i, (here, nxt) in enumerate(zip(rows[:-1], rows[1:])):
        if here.cores and nxt.cores:
            dest = _destination_cores(net.layers[i + 1], nxt)
            out_axons = here.neurons_per_core * dest
            if out_axons > lim.fan_out_axons_per_core:
                warnings.append(f"layer '{here.name}': up to {out_axons} output axons per core "
                                f"({here.neurons_per_core} neurons x {dest} destination cores) exceed "
                                f"{lim.fan_out_axons_per_core} (a Loihi 1 figure; Loihi 2 multicasts, so only a warning)")
    limits_json = {k: getattr(lim, k) for k in LIMIT_KEYS}
    limits_json["sources"] = dict(lim.sources)
    return FitReport(hardware=lim.name, title=lim.title, conv_weights=conv_weights, limits=limits_json,
                     layers=rows, warnings=warnings)


def raise_if_not_fit(net: FxNetwork, limits=None, conv_weights: str = "shared") -> FitReport:
    report = check_fit(net, limits, conv_weights)
    report.raise_if_not_fit()
    return report


def format_fit_table(report: FitReport, warnings: bool = True) -> str:
    head = ["layer", "kind", "neurons", "fan-in", "w bits", "axons/core", "neurons/core", "syn. bytes",
            "cores", "limited by", "status"]
    body = []
    for r in report.layers:
        body.append([r.name, r.kind, f"{r.neurons:,}", f"{r.fan_in:,}", str(r.weight_bits),
                     f"{r.axons_per_core:,}", f"{r.neurons_per_core:,}", f"{r.synaptic_bytes:,}",
                     str(r.cores), r.limited_by or "-", "ok" if r.fits else "DOES NOT FIT"])
    widths = [max(len(row[c]) for row in [head] + body) for c in range(len(head))]

    def line(row):
        return "  ".join(cell.ljust(w) if c in (0, 1, 9, 10) else cell.rjust(w)
                         for c, (cell, w) in enumerate(zip(row, widths)))

    rule = "-" * len(line(head))
    lim = report.limits
    out = [f"Fit on {report.title}: {lim['neurons_per_core']} neurons, {lim['synaptic_memory_per_core'] // 1024} KB "
           f"synaptic memory, {lim['fan_in_axons_per_core']} fan-in axons per core; {lim['cores_per_chip']} cores/chip; "
           f"{lim['weight_bits']}-bit weights; conv weights {report.conv_weights}",
           rule, line(head), rule] + [line(row) for row in body] + [rule]
    verdict = "fits" if report.fits else "DOES NOT FIT"
    out.append(f"total: {report.total_cores} cores, {report.chips} chip(s): {verdict}")
    relays = sum(r.relay_neurons for r in report.layers)
    if relays:
        out.append(f"residual blocks as relay channels: {relays:,} of the neurons are relays (their synapses and "
                   f"the shortcuts' are in the layers' fan-in, memory and cores)")
    out += [f"problem: {p}" for p in report.problems]
    out += [f"warning: {w}" for w in report.warnings] if warnings else []
    return "\n".join(out)

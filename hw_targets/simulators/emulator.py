"""A batched, bit-exact torch emulator of an FxNetwork as Lava's fixed_pt process models run it.

What it computes (lava-nc 0.10.0, lava-dl 0.6.0 netx; every step mirrors a line of Lava):

* dense synapse (``PyDenseModelBitAcc`` built by netx): netx's ``optimize_weight_bits`` turns the
  file's integer weights W into (W << s, num_weight_bits, weight_exp = -s); the Dense model then
  applies ``clip_weights`` and ``truncate_weights`` once. Per step it computes
  ``accum = W_eff . s_in`` (int64 for binary spikes; an int32 dot product, which wraps, for graded
  spikes), shifts it right by ``-weight_exp`` (left if positive) and sends it through an int32
  channel (wraps). We run the same functions on the numpy weights once and do the products as
  float64 matmuls (exact below 2**53).
* conv synapse (``PyConvModelFixed``): ``weight_exp`` is ignored, the raw integer weights are
  used; Lava computes the convolution with scipy in float64 (torch is disabled inside Lava
  processes, ``TORCH_IS_AVAILABLE = False``), casts to int32 and wraps to 24 bits with
  ``signed_clamp``. We use a float64 torch conv2d (exact), the same int32 cast (values out of the
  int32 range become -2**31, as numpy's float->int32 cast does on x86) and the same 24-bit wrap.
* CUBA neuron (``PyLifModelBitAcc``), with int32 arithmetic where Lava has it:
  ``u = wrap24(int32(decay(u, iDecay)) + int32(a << 6))`` where Lava's "wrap" is a single
  conditional: u > 2**23 -> u - 2**24; u <= -2**23 -> u + 2**24 (so 2**23 itself is kept);
  ``v = clip(int32(decay(v, vDecay)) + u + (int16(bias) << 6), -(2**23 - 1), 2**23 - 1)``;
  ``s = v > (vth << 6)``; ``v[s] = 0``; ``decay(x, d) = sign(x) * ((|x| * (4096 - d)) >> 12)``.
* timing: every synapse sends the value it accumulated on the previous step, so layer k
  (1-based) sees the input of global step t at step t + k. Each sample gets a window of T steps
  per layer, shifted by the layer's depth, and starts from zero state (see
  ``hw_targets/simulators/lava.py``). In the sample's local time tau = 1..T this means
  ``a_k[tau] = synapse_k(s_{k-1}[tau])`` with ``s_0 = x``: every layer sees all T input steps.
  Local step tau of layer k is Lava's global step ``n*T + k + tau`` for sample n.

Because there is no recurrence across layers within a step in this formulation, the emulator runs
layer by layer: one big batched matmul/conv over (batch x time) per layer, then the neuron's
recurrence over T steps on (batch x neurons) tensors. State is int64 on ``device``, or int32
when a per-layer bound on |a| (from the weights and the input range) proves that no int32
overflow can occur (|a| <= 2**18: then |u|, |v| <= 2**23 and every intermediate fits); the
int64 path emulates each of Lava's int32 overflows. On the CPU a compiled kernel runs that
recurrence (``snn_lava_cuba`` in toolchain/neurons/kernels/native: both paths, op for op, all T
steps per block of neurons in one pass over memory); on CUDA, or without a C compiler (or with
SNNTC_NATIVE=0), torch ops do, with masks from arithmetic shifts instead of bool tensors. Outputs
are copied to the CPU per batch.
"""
from __future__ import annotations

import contextlib
import io
import os
import time
from dataclasses import dataclass
from typing import List, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from toolchain.errors import SimulationError
from toolchain.quantization.fixed_point import SDNN_EXP, FxLayer, FxNetwork, SimulationResult

_I32 = 2 ** 31
_M24 = 2 ** 23
_SYNAPSE_BYTES = 128 * 2 ** 20     # float64 working set per synapse chunk


def wrap_int32(x: torch.Tensor) -> torch.Tensor:
    """Two's-complement wrap of an int64 tensor into the int32 range (numpy's int32 overflow)."""
    return torch.bitwise_and(x + _I32, 0xFFFFFFFF) - _I32


def wrap_int16(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, dtype=np.int64) + 2 ** 15) % 2 ** 16 - 2 ** 15


def lava_decay(x: torch.Tensor, decay: int) -> torch.Tensor:
    """sign(x * (4096 - d)) * (|x * (4096 - d)| >> 12), then Lava's cast to int32."""
    p = x * (4096 - int(decay))
    return wrap_int32(torch.sign(p) * torch.bitwise_right_shift(torch.abs(p), 12))


def _netx_optimize_weight_bits():
    """netx's own optimize_weight_bits, loaded from lava/lib/dl/netx/utils.py by file path: importing it as
    `lava.lib.dl.netx.utils` runs the package's __init__, which imports all of Lava, slayer and torchvision
    (seconds) for one numpy function."""
    global _OPTIMIZE_WEIGHT_BITS
    if _OPTIMIZE_WEIGHT_BITS is None:
        import importlib.util
        spec = importlib.util.find_spec("lava")
        if spec is None or not spec.submodule_search_locations:
            raise SimulationError("lava-dl is not installed: the emulator reproduces netx's weight handling from it")
        path = os.path.join(list(spec.submodule_search_locations)[0], "lib", "dl", "netx", "utils.py")
        module_spec = importlib.util.spec_from_file_location("_snntc_netx_utils", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        _OPTIMIZE_WEIGHT_BITS = module.optimize_weight_bits
    return _OPTIMIZE_WEIGHT_BITS


_OPTIMIZE_WEIGHT_BITS = None


def dense_effective_weights(weight: np.ndarray, weight_rec: Optional[np.ndarray] = None):
    """(W_eff (out, in) int64, weight_exp) exactly as netx + PyDenseModelBitAcc prepare them; with `weight_rec`
    (a dense_rec layer), (W_eff, W_rec_eff, weight_exp): netx optimizes the two side by side (one exponent, one
    bit width) and each Dense process then clips and truncates its own matrix."""
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights
    optimize_weight_bits = _netx_optimize_weight_bits()

    w = np.asarray(weight).astype(int)
    both = w if weight_rec is None else np.hstack((w, np.asarray(weight_rec).astype(int)))
    if both.size and np.all(both == 0):
        # netx's optimize_weight_bits divides by the max weight: an all-zero dense cannot load
        raise SimulationError("an all-zero dense weight matrix cannot be loaded by netx "
                              "(optimize_weight_bits divides by zero)")
    with contextlib.redirect_stdout(io.StringIO()), np.errstate(divide="ignore", invalid="ignore"):
        w1, num_weight_bits, weight_exp, _ = optimize_weight_bits(both)   # netx prints warnings
    w1 = np.asarray(w1).astype(np.int32)                 # Dense's weights Var is int32

    def effective(m):
        sign_mode = determine_sign_mode(m)               # netx does not pass its sign mode
        m = clip_weights(m, sign_mode, num_bits=8)
        return np.asarray(truncate_weights(m, sign_mode, num_weight_bits), dtype=np.int64)

    if weight_rec is None:
        return effective(w1), int(weight_exp)
    return effective(w1[:, :w.shape[1]]), effective(w1[:, w.shape[1]:]), int(weight_exp)


@dataclass
class _Prepared:
    layer: FxLayer
    kind: str
    weight: torch.Tensor            # dense: (in, out) float64; conv: (out, in/g, kh, kw) float64
    weight32: torch.Tensor          # the same in float32, for layers whose sums provably stay exact
    weight_exp: int
    graded_in: bool
    bias: Optional[torch.Tensor]    # int64, broadcastable to (B, *out_shape)
    vth: int                        # vth << 6
    du: int                         # current decay constant (netx iDecay)
    dv: int                         # voltage decay constant (netx vDecay)
    out_shape: tuple
    in_shape: tuple
    w_abs_sum: int                  # max over outputs of sum |w| (bound on |accum| per unit input)
    weight_rec: Optional[torch.Tensor] = None   # dense_rec: (out, out) float64, the effective recurrent weights
    delays: Optional[list] = None               # synaptic delays: [(d, (in, out) float64 weights with delay d)]


def prepare(net: FxNetwork, device: Union[str, torch.device, None] = None) -> List[_Prepared]:
    """Per-layer constants (effective weights, shifts, scaled bias/threshold) on ``device``."""
    device = torch.device(device) if device is not None else _default_device()
    out = []
    for i, layer in enumerate(net.layers):
        w = np.asarray(layer.weight)
        weight_rec = delays = None
        if layer.kind == "dense":
            w2 = w.reshape(int(np.prod(layer.output_shape)), -1)
            if layer.weight_rec is not None:
                w_eff, w_rec, wexp = dense_effective_weights(w2, layer.weight_rec)
                weight_rec = torch.as_tensor(w_rec.T.astype(np.float64), device=device).contiguous()
            else:
                w_eff, wexp = dense_effective_weights(w2)
            wt = torch.as_tensor(w_eff.T.astype(np.float64), device=device).contiguous()
            w_abs_sum = int(np.abs(w_eff).sum(axis=1).max()) if w_eff.size else 0
            if layer.delay is not None:
                dl = np.asarray(layer.delay).reshape(w_eff.shape)
                delays = [(int(d), torch.as_tensor(np.where(dl == d, w_eff, 0).T.astype(np.float64),
                                                   device=device).contiguous()) for d in np.unique(dl)]
        elif layer.kind == "input":
            # netx's Input block: a neuron without a synapse; a_in is the chip input itself (or zero, when the input
            # is fed as the neuron's bias)
            wt, wexp, w_abs_sum = torch.zeros(0, dtype=torch.float64, device=device), 0, 1
        elif layer.kind == "conv":
            # Lava's conv weights Var is int32; weight_exp is ignored by PyConvModelFixed
            w32 = (np.asarray(w).astype(np.int64) + _I32) % 2 ** 32 - _I32
            wt = torch.as_tensor(w32.astype(np.float64), device=device)
            wexp = 0
            w_abs_sum = int(np.abs(w32).reshape(w32.shape[0], -1).sum(axis=1).max()) \
                if w32.size else 0
        else:
            raise SimulationError(f"layer '{layer.name}': unknown kind {layer.kind!r}")
        bias = _bias(layer, device) if layer.bias is not None else None
        out.append(_Prepared(layer=layer, kind=layer.kind, weight=wt, weight32=wt.to(torch.float32), weight_exp=wexp,
                             graded_in=_graded_in(net, i), bias=bias,
                             vth=int(layer.vth) << (SDNN_EXP if layer.sigma_delta else 6),
                             du=int(layer.i_decay), dv=int(layer.v_decay),
                             out_shape=tuple(int(s) for s in layer.output_shape),
                             in_shape=tuple(int(s) for s in layer.input_shape),
                             w_abs_sum=w_abs_sum, weight_rec=weight_rec, delays=delays))
    return out


def _graded_in(net: FxNetwork, i: int) -> bool:
    """Layer i receives graded messages: the chip input's graded spikes, or a sigma-delta layer's messages."""
    return (i == 0 and net.input_bits > 0) or (i > 0 and net.layers[i - 1].sigma_delta)


def _bias(layer: FxLayer, device) -> torch.Tensor:
    """The layer's bias as Lava holds it, broadcastable to (B, *out_shape) (per channel: (C, 1, 1)): a CUBA
    neuron's int16 bias_mant << 6 (bias_exp 6); a sigma-delta neuron's int32 bias_mant times 2**12 in int32,
    which wraps."""
    if layer.sigma_delta:
        b = (np.asarray(layer.bias).astype(np.int64) + _I32) % 2 ** 32 - _I32
        b = (b * 2 ** SDNN_EXP + _I32) % 2 ** 32 - _I32
    else:
        b = wrap_int16(np.asarray(layer.bias)) << 6
    n_out = int(layer.output_shape[0])
    if layer.kind == "conv" and b.size == n_out:
        b = b.reshape(n_out, 1, 1)
    else:
        b = b.reshape(tuple(layer.output_shape)) if b.size > 1 else b.reshape(())
    return torch.as_tensor(b, dtype=torch.int64, device=device)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_F32_EXACT = 2 ** 24        # float32 represents every integer up to this exactly


def _exact_float32(p: _Prepared, s: torch.Tensor) -> bool:
    """True when every partial sum of this layer's products is an integer below 2**23 in magnitude:
    float32 arithmetic (fast oneDNN kernels) is then exact in any summation order, and neither the
    int32 wrap nor the 24-bit wrap can occur."""
    if s.numel() == 0:
        return False
    lo, hi = torch.aminmax(s)                    # one pass, no |s| tensor
    return p.w_abs_sum * max(abs(float(lo)), abs(float(hi))) < _F32_EXACT // 2


def _synapse(p: _Prepared, s: torch.Tensor) -> torch.Tensor:
    """s: (M, *in_shape) spikes (float64, or any integer-valued dtype) -> (M, *out_shape) synaptic
    input a (what the neuron's a_in receives): int64, or int32 where the float32 path ran (its sums
    are below 2**23)."""
    m = s.shape[0]
    if _exact_float32(p, s):
        return _synapse_float32(p, s)
    s = s.to(torch.float64)
    if p.kind == "dense":
        acc = torch.round(s.reshape(m, -1) @ p.weight).to(torch.int64)
        if p.graded_in:
            acc = wrap_int32(acc)          # int32 dot product in PyDenseModelBitAcc
        if p.weight_exp > 0:
            acc = torch.bitwise_left_shift(acc, p.weight_exp)
        else:
            acc = torch.bitwise_right_shift(acc, -p.weight_exp)
        return wrap_int32(acc).reshape((m,) + p.out_shape)
    lay = p.layer
    x = s.reshape((m,) + p.in_shape)
    acc = F.conv2d(x, p.weight, stride=tuple(lay.stride), padding=tuple(lay.padding),
                   dilation=tuple(lay.dilation), groups=int(lay.groups))
    acc = torch.round(acc)
    big = (acc >= _I32) | (acc < -_I32)
    acc = acc.to(torch.int64)
    if bool(big.any()):
        acc = torch.where(big, torch.full_like(acc, -_I32), acc)
    acc = torch.remainder(acc + _M24, 2 ** 24) - _M24         # signed_clamp(x, bits=24)
    return acc


def _synapse_float32(p: _Prepared, s: torch.Tensor) -> torch.Tensor:
    """The same synapse in float32, for layers whose sums provably stay exact (see _exact_float32)."""
    m = s.shape[0]
    w = p.weight32
    if p.kind == "dense":         # int32 unless a left shift could leave it (netx's exponents are <= 0)
        acc = (s.reshape(m, -1).to(torch.float32) @ w).to(torch.int64 if p.weight_exp > 0 else torch.int32)
        if p.weight_exp > 0:
            acc = torch.bitwise_left_shift(acc, p.weight_exp)
        elif p.weight_exp < 0:
            acc = torch.bitwise_right_shift(acc, -p.weight_exp)
        return acc.reshape((m,) + p.out_shape)
    lay = p.layer
    x = s.reshape((m,) + p.in_shape).to(torch.float32)
    return F.conv2d(x, w, stride=tuple(lay.stride), padding=tuple(lay.padding), dilation=tuple(lay.dilation),
                    groups=int(lay.groups)).to(torch.int32)


@dataclass
class EmulatorTrace:
    """What ``emulate`` returns (tensors on the CPU).

    spike_counts[i]:   (B, *out_shape_i) int64 spikes of layer i summed over the T window steps
    output_voltage:    (B, T, *out_shape_out) int64 output layer's v after each step (after reset)
    spikes[i]:         (B, T, *out_shape_i) bool, if record_spikes (or record_voltages); int64 message values for
                       a sigma-delta layer (its "spikes" are graded; spike_counts count the non-zero ones)
    voltages[i], currents[i]: (B, T, *out_shape_i) int64, if record_voltages (a sigma-delta layer: its sigma, a
                       Delta's residue, and the synaptic input it received; see sigma_delta.py)
    Step index tau (0-based) of layer i (0-based) for sample n is Lava's global step
    n*T + (i + 1) + (tau + 1).
    """
    layer_names: List[str]
    timesteps: int
    spike_counts: List[torch.Tensor]
    output_voltage: torch.Tensor
    spikes: Optional[List[torch.Tensor]] = None
    voltages: Optional[List[torch.Tensor]] = None
    currents: Optional[List[torch.Tensor]] = None
    input_event_counts: Optional[torch.Tensor] = None   # (*input_shape) non-zero input events
    wall_time_s: float = 0.0
    device: str = "cpu"


def _as_tensor(inputs) -> torch.Tensor:
    if isinstance(inputs, torch.Tensor):
        return inputs
    return torch.as_tensor(np.asarray(inputs))


def emulate(net: FxNetwork, inputs, device=None, record_voltages: bool = False,
            batch_size: int = 64, record_spikes: bool = False,
            prepared: Optional[List[_Prepared]] = None) -> EmulatorTrace:
    """Run ``net`` on ``inputs`` (B, T, *input_shape), integer-valued: binary spikes when
    ``net.input_bits == 0`` (any non-zero value is a spike, as Lava's astype(bool)), graded
    (signed) spikes otherwise. Every sample starts from zero state."""
    if net.global_time_line:
        from .stream import emulate_stream            # state crosses the samples' windows: the global time line
        return emulate_stream(net, inputs, device=device, record_voltages=record_voltages,
                              record_spikes=record_spikes)
    t_start = time.perf_counter()
    x_all = _as_tensor(inputs)
    if x_all.dim() < 2:
        raise SimulationError(f"inputs must be (B, T, *input_shape), got shape {tuple(x_all.shape)}")
    if tuple(x_all.shape[2:]) != tuple(net.input_shape):
        if int(np.prod(x_all.shape[2:])) == int(np.prod(net.input_shape)):
            x_all = x_all.reshape(tuple(x_all.shape[:2]) + tuple(net.input_shape))
        else:
            raise SimulationError(f"inputs have shape {tuple(x_all.shape[2:])} per step; the "
                                  f"network expects {tuple(net.input_shape)}")
    if x_all.is_floating_point() and bool((x_all != torch.round(x_all)).any()):
        raise SimulationError("inputs must be integer-valued spikes")
    device = torch.device(device) if device is not None else _default_device()
    prepared = prepared if prepared is not None else prepare(net, device)
    B, T = int(x_all.shape[0]), int(x_all.shape[1])
    nl = len(prepared)
    keep_spikes = record_spikes or record_voltages
    counts: List[List[torch.Tensor]] = [[] for _ in range(nl)]
    out_v: List[torch.Tensor] = []
    spikes = [[] for _ in range(nl)] if keep_spikes else None
    volts = [[] for _ in range(nl)] if record_voltages else None
    currs = [[] for _ in range(nl)] if record_voltages else None
    in_counts = torch.zeros(tuple(net.input_shape), dtype=torch.int64)
    batch_size = max(1, int(batch_size))

    with torch.no_grad():
        for b0 in range(0, B, batch_size):
            xb = x_all[b0:b0 + batch_size].to(device)
            b = int(xb.shape[0])
            xi = torch.round(xb.to(torch.float64)).to(torch.int64) if xb.is_floating_point() \
                else xb.to(torch.int64)
            in_counts += (xi != 0).sum(dim=(0, 1)).cpu()
            if net.input_neuron:
                x_max = int(xi.abs().max()) if xi.numel() else 0
                s_prev = xi.to(torch.float64)          # the input neuron's a_in receives the values themselves
            elif net.input_bits > 0:
                xi = wrap_int32(xi)                                 # RingBuffer's int32 channel
                x_max = int(xi.abs().max()) if xi.numel() else 0
                s_prev = xi.to(torch.float64)
            else:
                x_max = 1
                s_prev = (xi != 0).to(torch.uint8)               # binary spikes, as later layers get them
            del xi, xb
            for k, p in enumerate(prepared):
                if p.kind == "input" and net.input_feed == "bias":
                    p = _bias_fed(p, s_prev)
                    x_max = 0
                a = _synapse_batched(p, s_prev, b, T)               # (b, T, *out) int64 or int32
                bound = synaptic_bound(p, x_max if k == 0 else 1)
                s_out, v_hist, u_hist, v_last = _neuron(p, a, record_voltages,
                                                        k == nl - 1, bound)
                del a
                counts[k].append(s_out.sum(dim=1, dtype=torch.int64).cpu())
                if keep_spikes:
                    spikes[k].append(s_out.to(torch.bool).cpu())
                if record_voltages:
                    volts[k].append(v_hist.cpu())
                    currs[k].append(u_hist.cpu())
                if k == nl - 1:
                    out_v.append(v_last.cpu())
                s_prev = s_out
                del s_out
    cat = lambda lst: torch.cat(lst, dim=0)
    return EmulatorTrace(
        layer_names=[p.layer.name for p in prepared], timesteps=T,
        spike_counts=[cat(c) for c in counts], output_voltage=cat(out_v),
        spikes=[cat(s) for s in spikes] if keep_spikes else None,
        voltages=[cat(v) for v in volts] if record_voltages else None,
        currents=[cat(u) for u in currs] if record_voltages else None,
        input_event_counts=in_counts, wall_time_s=time.perf_counter() - t_start,
        device=str(device))


def _bias_fed(p: _Prepared, s_prev: torch.Tensor) -> _Prepared:
    """The input neuron fed through its bias: each sample's value (the same at every step) is its bias_mant
    (int16, exponent 6), and its a_in receives nothing."""
    from dataclasses import replace
    first = s_prev[:, :1]
    if bool((s_prev != first).any()):
        raise SimulationError("an input fed as the input neuron's bias takes one value per sample: every step of a "
                              "sample must be the same")
    bias = torch.as_tensor(wrap_int16(first[:, 0].to(torch.int64).cpu().numpy()) << 6, device=s_prev.device)
    return replace(p, bias=bias, kind="input-bias")


def _synapse_batched(p: _Prepared, s_prev: torch.Tensor, b: int, T: int) -> torch.Tensor:
    """Synapse over all (batch, time) at once, chunked in time to bound memory: (b, T, *out) int64,
    or int32 where every chunk took the exact float32 path. s_prev: float64, or the previous layer's
    uint8 spikes (converted per chunk, straight to the dtype the synapse computes in)."""
    if p.kind == "input":
        return torch.round(s_prev).to(torch.int64).reshape((b, T) + p.out_shape)
    if p.kind == "input-bias":
        return torch.zeros((b, T) + p.out_shape, dtype=torch.int64, device=s_prev.device)
    per_step = b * max(int(np.prod(p.in_shape)), int(np.prod(p.out_shape))) * 8 * 2
    tc = max(1, min(T, _SYNAPSE_BYTES // max(per_step, 1)))
    outs = []
    for t0 in range(0, T, tc):
        chunk = s_prev[:, t0:t0 + tc]
        m = chunk.shape[0] * chunk.shape[1]
        a = _synapse(p, chunk.reshape((m,) + tuple(chunk.shape[2:])))
        outs.append(a.reshape((b, chunk.shape[1]) + p.out_shape))
    if len(outs) == 1:
        return outs[0]
    return torch.cat([o.to(torch.int64) for o in outs] if len({o.dtype for o in outs}) > 1 else outs, dim=1)


def synaptic_bound(p: _Prepared, x_max: int) -> int:
    """An upper bound of |a| (what the neuron receives) for inputs with |s| <= x_max."""
    acc = p.w_abs_sum * int(x_max)
    if p.kind in ("input", "input-bias"):
        return min(acc, _I32)
    if p.kind == "conv":
        return min(acc, _M24)                       # >= 2**23 wraps into [-2**23, 2**23)
    if p.graded_in and acc >= _I32:
        return _I32                                 # the int32 dot product may wrap anywhere
    acc = (acc << p.weight_exp) if p.weight_exp > 0 else (acc >> -p.weight_exp) + 1
    return min(acc, _I32)


def _fast_ok(p: _Prepared, a_bound: int) -> bool:
    """True when no int32 overflow can happen anywhere in the neuron: then |u|, |v| <= 2**23
    (with |a << 6| <= 2**24, Lava's conditional wrap keeps u within [-2**23, 2**23]) and
    the neuron can run in int32 without any of the overflow emulation."""
    return (a_bound <= 2 ** 18 and 0 <= p.du <= 4096 and 0 <= p.dv <= 4096
            and -2 ** 30 < p.vth < 2 ** 30)


def _decay32(x: torch.Tensor, d: int) -> torch.Tensor:
    """lava_decay for |x| <= 2**23 in int32: (|x| * m) >> 12 == (|x| >> 12) * m + ((|x| & 4095)
    * m >> 12) with m = 4096 - d, which never leaves int32."""
    m = 4096 - int(d)
    if m == 4096:
        return x
    if m == 0:
        return torch.zeros_like(x)
    ax = torch.abs(x)
    return torch.sign(x) * (torch.bitwise_right_shift(ax, 12) * m
                            + torch.bitwise_right_shift(torch.bitwise_and(ax, 4095) * m, 12))


def _neuron(p: _Prepared, a: torch.Tensor, record: bool, is_output: bool, a_bound: int):
    """CUBA LIF over T steps from zero state. a: (b, T, *out) int64 (or int32) synaptic input.
    Returns (spikes (b, T, *out) uint8, v history if record, u history if record, v history if
    is_output), the histories int64. On the CPU the compiled kernel runs it (snn_lava_cuba in
    toolchain/neurons/kernels/native: all T steps per block of neurons, one pass over memory),
    where it can be had; elsewhere (CUDA, no C compiler, SNNTC_NATIVE=0) the torch ops do, with
    the same results."""
    fast = _fast_ok(p, a_bound)
    if a.device.type == "cpu":
        out = _neuron_native(p, a, record, is_output, fast)
        if out is not None:
            return out
    return _neuron_torch(p, a, record, is_output, fast)


_NATIVE_CONSTANT = 2 ** 31     # |du|, |dv| the kernel takes (4096 - d stays far inside int64)


def _neuron_native(p: _Prepared, a: torch.Tensor, record: bool, is_output: bool, fast: bool):
    """_neuron by the compiled kernel; None where it cannot run (no library, an empty or odd input)."""
    from toolchain.neurons.kernels.native import calls, library
    if (library() is None or a.numel() == 0 or a.dtype not in (torch.int32, torch.int64)
            or max(abs(p.du), abs(p.dv)) > _NATIVE_CONSTANT or abs(p.vth) >= 2 ** 62):
        return None
    b, T = a.shape[0], a.shape[1]
    shape = (b, T) + p.out_shape
    act = a.contiguous().reshape(b, T, -1)
    spikes = torch.empty(shape, dtype=torch.uint8)
    v_hist = torch.empty(shape, dtype=torch.int64) if (record or is_output) else None
    u_hist = torch.empty(shape, dtype=torch.int64) if record else None
    bias, stride = _bias_rows(p.bias, b, p.out_shape)
    status = calls.LavaCuba(fast, act, spikes, p.vth, p.du, p.dv, bias=bias, bias_stride=stride,
                            v_hist=v_hist, u_hist=u_hist).run()
    if status != 0:
        return None
    return spikes, (v_hist if record else None), u_hist, (v_hist if is_output else None)


def _bias_rows(bias: Optional[torch.Tensor], b: int, out_shape: tuple):
    """(int64 contiguous bias, stride between samples): one row of the layer's neurons (scalar, (C, 1, 1)
    and (*out) biases, stride 0), or one per sample (a bias-fed input's (b, *out), stride n)."""
    if bias is None:
        return None, 0
    full = torch.broadcast_to(bias.to(torch.int64), (b,) + tuple(out_shape))
    if bias.dim() <= len(out_shape):
        return full[0].contiguous().reshape(-1), 0
    return full.contiguous().reshape(-1), int(np.prod(out_shape))


def _neuron_torch(p: _Prepared, a: torch.Tensor, record: bool, is_output: bool, fast: bool):
    """_neuron with torch ops, int32 when `fast` (see _fast_ok), else int64 emulating Lava's int32 wraps.
    Masks are computed with arithmetic shifts (x >> 31/63 is -1 where x < 0), which is much
    faster on CPU than comparisons producing bool tensors followed by where/masked_fill."""
    b, T = a.shape[0], a.shape[1]
    dt = torch.int32 if fast else torch.int64
    sh = 31 if fast else 63
    two24 = 2 * _M24
    u = torch.zeros((b,) + p.out_shape, dtype=dt, device=a.device)
    v = torch.zeros_like(u)
    s_all = torch.empty((b, T) + p.out_shape, dtype=torch.uint8, device=a.device)
    v_hist = torch.empty((b, T) + p.out_shape, dtype=torch.int64, device=a.device) \
        if (record or is_output) else None
    u_hist = torch.empty_like(v_hist) if record else None
    if fast:
        act_all = torch.bitwise_left_shift(a.to(torch.int32), 6)
        bias = p.bias.to(torch.int32) if p.bias is not None else None
    else:
        act_all = wrap_int32(torch.bitwise_left_shift(a.to(torch.int64), 6))   # np.left_shift on int32
        bias = p.bias
    for t in range(T):
        if fast:
            dc = _decay32(u, p.du) + act_all[:, t]
        else:
            dc = wrap_int32(lava_decay(u, p.du) + act_all[:, t])
        # u = dc - 2**24 where dc > 2**23; dc + 2**24 where dc <= -2**23 (Lava's "wrap")
        gt = torch.bitwise_right_shift(_M24 - dc, sh)               # -1 where dc > 2**23
        le = torch.bitwise_right_shift(dc + (_M24 - 1), sh)         # -1 where dc <= -2**23
        u = dc - torch.bitwise_and(gt, two24) + torch.bitwise_and(le, two24)
        if fast:
            vv = _decay32(v, p.dv) + u
            if bias is not None:
                vv = vv + bias
        else:
            vv = lava_decay(v, p.dv) + u
            if bias is not None:
                vv = vv + bias
            vv = wrap_int32(vv)
        vv = torch.clamp(vv, -_M24 + 1, _M24 - 1)
        spk = torch.bitwise_right_shift(p.vth - vv, sh)             # -1 where v > vth
        v = torch.bitwise_and(vv, torch.bitwise_not(spk))           # reset to 0 where spiked
        s_all[:, t] = torch.neg(spk)
        if v_hist is not None:
            v_hist[:, t] = v
        if u_hist is not None:
            u_hist[:, t] = u
    v_last = v_hist if is_output else None
    return s_all, (v_hist if record else None), u_hist, v_last


def readout_values(net: FxNetwork, spike_counts_out: np.ndarray, v_end: np.ndarray):
    """(values, predictions) for net.readout: 'voltage' -> v at the window's last step;
    'spikes' -> output spike counts, ties broken by that voltage."""
    counts = np.asarray(spike_counts_out).reshape(len(spike_counts_out), -1).astype(np.int64)
    v = np.asarray(v_end).reshape(len(v_end), -1)
    v = v.astype(np.float64) if np.issubdtype(v.dtype, np.floating) else v.astype(np.int64)
    if net.readout == "voltage":
        values = v
        pred = np.argmax(v, axis=1) if v.size else np.zeros(len(v), dtype=np.int64)
    else:
        values = counts
        if v.dtype == np.int64:
            key = counts * (2 ** 25) + (np.clip(v, -_M24, _M24) + _M24)
            pred = np.argmax(key, axis=1) if key.size else np.zeros(len(key), dtype=np.int64)
        else:   # floating-point voltages (Lava floating_pt): lexicographic (count, v)
            pred = np.array([max(range(counts.shape[1]), key=lambda j: (counts[i, j], v[i, j]))
                             for i in range(len(counts))], dtype=np.int64)
    return values, pred.astype(np.int64)


def run_emulator(net: FxNetwork, x_encoded, labels=None, device=None,
                 batch_size: int = 64) -> SimulationResult:
    """Emulate ``net`` on encoded inputs (N, T, *input_shape) and read out per ``net.readout``."""
    t0 = time.perf_counter()
    trace = emulate(net, x_encoded, device=device, batch_size=batch_size)
    v_end = trace.output_voltage[:, -1].numpy() if trace.timesteps else \
        np.zeros((trace.spike_counts[-1].shape[0],) + tuple(net.layers[-1].output_shape), np.int64)
    values, pred = readout_values(net, trace.spike_counts[-1].numpy(), v_end)
    n = int(trace.spike_counts[-1].shape[0])
    return SimulationResult(
        backend="emulator", samples=n, timesteps=trace.timesteps, predictions=pred,
        labels=None if labels is None else np.asarray(labels).reshape(-1),
        layer_names=list(trace.layer_names),
        spike_counts=[c.sum(dim=0).numpy() for c in trace.spike_counts],
        input_spike_counts=trace.input_event_counts.numpy(),
        wall_time_s=time.perf_counter() - t0, output_values=values)


def run_emulator_prefixes(net: FxNetwork, x_encoded, steps, labels=None, device=None,
                          batch_size: int = 64) -> dict:
    """{T: SimulationResult} for each T in ``steps``, from one run of max(steps) steps: every neuron is causal and
    every sample starts from zero state, so the first T steps of the long run are the run of T steps (given inputs
    whose first T steps are the T-step inputs, as every registered coding's are). Runs ``batch_size`` samples at
    a time, keeping their spikes, so memory is batch_size x max(steps) x neurons bytes."""
    steps = sorted(set(int(T) for T in steps))
    x_all = _as_tensor(x_encoded)
    if not steps or steps[0] < 1 or steps[-1] > int(x_all.shape[1]):
        raise SimulationError(f"time steps {steps} do not fit inputs of {int(x_all.shape[1])} steps")
    t0 = time.perf_counter()
    device = torch.device(device) if device is not None else _default_device()
    prepared = prepare(net, device)
    counts = {T: None for T in steps}
    inputs = {T: None for T in steps}
    values, preds = {T: [] for T in steps}, {T: [] for T in steps}
    for b0 in range(0, int(x_all.shape[0]), batch_size):
        xb = x_all[b0:b0 + batch_size, :steps[-1]]
        trace = emulate(net, xb, device=device, batch_size=batch_size, record_spikes=True, prepared=prepared)
        running = [torch.zeros(s.shape[2:], dtype=torch.int64) for s in trace.spikes]   # each step summed once
        events, out_counts, done = torch.zeros(xb.shape[2:], dtype=torch.int64), 0, 0
        for T in steps:
            for k, s in enumerate(trace.spikes):
                running[k] += s[:, done:T].sum(dim=(0, 1), dtype=torch.int64)
            events += (xb[:, done:T] != 0).sum(dim=(0, 1))
            out_counts = out_counts + trace.spikes[-1][:, done:T].sum(dim=1, dtype=torch.int64)
            done = T
            layer_counts = [r.numpy().copy() for r in running]
            counts[T] = layer_counts if counts[T] is None else [a + c for a, c in zip(counts[T], layer_counts)]
            inputs[T] = events.numpy().copy() if inputs[T] is None else inputs[T] + events.numpy()
            v, p = readout_values(net, out_counts.numpy(), trace.output_voltage[:, T - 1].numpy())
            values[T].append(v)
            preds[T].append(p)
    wall = time.perf_counter() - t0
    n = int(x_all.shape[0])
    return {T: SimulationResult(backend="emulator", samples=n, timesteps=T, predictions=np.concatenate(preds[T]),
                                labels=None if labels is None else np.asarray(labels).reshape(-1),
                                layer_names=[p.layer.name for p in prepared], spike_counts=counts[T],
                                input_spike_counts=inputs[T], wall_time_s=wall, output_values=np.concatenate(values[T]))
            for T in steps}

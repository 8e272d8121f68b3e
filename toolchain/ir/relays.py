"""Residual blocks lowered into a chain: the shortcut carried by relay neurons (stock netx runs it unchanged).

On Loihi (and in Lava) every synapse delays by one step, so a block's two branches, the body (two or more synaptic
layers) and the shortcut (none or one), would reach the block's neurons at different steps. The lowering keeps the
chain and aligns them: the body's first layer gets extra output channels, relays, that copy the block's input
spikes (a one-hot tap of weight above the layer's threshold: one spike in, the same spike out, in step with the
body's hidden neurons); each inner body layer copies the relays on (its centre tap); the body's last layer reads the
concatenation [hidden spikes, relay spikes] with weights [W_last | shortcut], so the block's sum is formed in that
layer's synaptic current, as the SNN forms spike(body(x) + shortcut(x)).

The shortcut is written as one convolution of the block's (unpooled) input: the identity, or its 1 x 1 projection,
with any average pool before the block folded in (kernel k x k, stride times k), so that a relay carries one input
position: one relay per (input channel, shortcut tap), k^2 per channel after a k x k pool. The stride is taken by
the body's first layer (the shortcut's stride must equal it); the relays' taps are in its kernel.

A relay fires exactly when its input does as long as its neuron forgets its current each step (current decay
4096, Loihi's `iDecay` 4096; a voltage leak is harmless: the voltage is 0 before every input) and its integer
weight exceeds the layer's threshold after quantization. The relay weight is set to
max(max |W_layer|, RELAY_MARGIN x threshold) in float units, so that it is the layer's largest weight: the layer's
scale (toolchain.quantization.quantize.layer_scale) makes it 254 and the threshold at most 252. That scale is
shared with the body's own weights, which are quantized more coarsely when the threshold exceeds them
(quantization-aware fine-tuning, `--neuron loihi-cuba`, trains on exactly this chain).

A block body of one synaptic layer needs no relays: the shortcut's taps are added into its kernel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Optional

import torch
import torch.nn.functional as F

from ..errors import LoweringError, QuantizationError
from .network import AvgPool2d, Conv2d, Linear, Residual
from .passes import fold_pool_into_conv

RELAY_MARGIN = 254.0 / 252.0      # relay weight / threshold: the threshold quantizes to <= 252 when the relay is 254
RELAY_I_DECAY = 4096               # the current decay a relay needs (no current memory)


@dataclass
class Shortcut:
    """A block's shortcut as one convolution of the block's unpooled input."""
    weight: torch.Tensor            # (C_out, C_in, K, K)
    bias: Optional[torch.Tensor]
    stride: int
    padding: int
    name: str                       # 'identity' or the shortcut conv's name

    @property
    def relays(self) -> int:
        return self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]


def shortcut_conv(block: Residual, params: Mapping[str, torch.Tensor], channels: int, pool: int,
                  like: torch.Tensor) -> Shortcut:
    """The shortcut of `block` (batch norms already folded) as one conv on its input of `channels` channels, with
    the pending `pool` (an average pool before the block) folded in."""
    if not block.shortcut:
        weight, bias, stride, padding, name = torch.eye(channels, dtype=like.dtype, device=like.device)[:, :, None, None], \
            None, 1, 0, "identity"
    elif len(block.shortcut) == 1 and isinstance(block.shortcut[0], Conv2d):
        conv = block.shortcut[0]
        weight, bias = params[f"{conv.name}.weight"], params.get(f"{conv.name}.bias")
        stride, padding, name = conv.stride, conv.padding, conv.name
    else:
        raise LoweringError(f"layer '{block.name}': only an identity or a single-conv shortcut can be deployed "
                            f"(its shortcut is {', '.join(l.name for l in block.shortcut)})")
    if pool > 1:
        weight = fold_pool_into_conv(weight, pool)
    return Shortcut(weight, bias, stride * pool, padding * pool, name)


def check_body(block: Residual) -> None:
    """The body shapes the relays support: synaptic layers are convs, no pooling or block inside."""
    for layer in block.body:
        if isinstance(layer, Residual):
            raise LoweringError(f"layer '{layer.name}': a residual block inside another cannot be deployed")
        if isinstance(layer, AvgPool2d):
            raise LoweringError(f"layer '{layer.name}': pooling inside a residual block cannot be deployed (relays "
                                f"carry the shortcut position by position); pool before or after the block")
        if isinstance(layer, Linear):
            raise LoweringError(f"layer '{layer.name}': residual blocks of dense layers cannot be deployed "
                                f"(conv blocks only)")


def relay_value(layer) -> torch.Tensor:
    """The relay weight in float units: the layer's largest weight, and above its threshold (module docstring)."""
    w_max = layer.weight.detach().abs().max() if layer.weight.numel() else layer.weight.new_tensor(0.0)
    return torch.clamp(w_max, min=RELAY_MARGIN * float(layer.threshold))


def _tap(channels: int, taps, kernel, value, like) -> torch.Tensor:
    """(R, channels, K, K): relay r = (c, ty, tx) has `value` at (c, taps[ty], taps[tx]) (taps: kernel rows)."""
    k = len(taps)
    out = like.new_zeros((channels * k * k, channels, kernel, kernel))
    r = torch.arange(channels * k * k, device=like.device)
    c, ty, tx = r // (k * k), (r // k) % k, r % k
    taps = torch.as_tensor(taps, device=like.device)
    out[r, c, taps[ty], taps[tx]] = 1.0
    return out * value


def _centre(relays: int, kernel: int, padding: int, like) -> torch.Tensor:
    """(R, R, K, K): relay r copies input channel r at the tap that reads the same position (stride 1)."""
    out = like.new_zeros((relays, relays, kernel, kernel))
    r = torch.arange(relays, device=like.device)
    out[r, r, padding, padding] = 1.0
    return out


def _cat_bias(bias: Optional[torch.Tensor], extra: int, like: torch.Tensor) -> Optional[torch.Tensor]:
    return None if bias is None else torch.cat([bias, like.new_zeros(extra)])


def _sum_bias(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if a is None or b is None:
        return b if a is None else a
    return a + b


def _first_taps(block: Residual, first, shortcut: Shortcut) -> List[int]:
    """Where the shortcut's kernel rows fall in the body's first kernel (their offsets differ by the paddings)."""
    if tuple(first.stride) != (shortcut.stride, shortcut.stride):
        raise LoweringError(f"layer '{block.name}': the body's first layer '{first.name}' has stride {first.stride[0]}, "
                            f"the shortcut ({shortcut.name}, pools folded) {shortcut.stride}: relays need them equal")
    shift = first.padding[0] - shortcut.padding
    taps = [t + shift for t in range(shortcut.weight.shape[2])]
    if taps[0] < 0 or taps[-1] >= first.weight.shape[2]:
        raise LoweringError(f"layer '{block.name}': the shortcut's taps fall outside the kernel of '{first.name}'")
    return taps


def _check_same_size(block: Residual, layer) -> None:
    if tuple(layer.stride) != (1, 1) or layer.input_shape[1:] != layer.output_shape[1:] or layer.pool != 1:
        raise LoweringError(f"layer '{layer.name}': inside residual block '{block.name}' only the first layer may "
                            f"stride or pool (relays are copied on through the centre tap)")


def merge_into_single(block: Residual, layer, shortcut: Shortcut) -> None:
    """A body of one synaptic layer: the shortcut's taps added into its kernel, its bias into the bias."""
    taps = _first_taps(block, layer, shortcut)
    k = layer.weight.shape[2]
    pad = (taps[0], k - 1 - taps[-1]) * 2
    layer.weight = layer.weight + F.pad(shortcut.weight, pad)
    layer.bias = _sum_bias(layer.bias, shortcut.bias)
    layer.block_weight = None
    layer.source.append(f"{shortcut.name} shortcut in the kernel")


def relay_block(block: Residual, body: list, last, shortcut: Shortcut) -> None:
    """Add the relays to the body's lowered layers in place: `body` the closed ones (first, inner), `last` the one
    the block's neurons will close."""
    if not body:
        merge_into_single(block, last, shortcut)
        return
    first, relays = body[0], shortcut.relays
    cin = first.input_shape[0]
    taps = _first_taps(block, first, shortcut)
    like = first.weight
    rows = _tap(cin, taps, first.weight.shape[2], relay_value(first), like)
    _add_relay_rows(first, rows, relays)
    for layer in body[1:] + [last]:
        _check_same_size(block, layer)
    for layer in body[1:]:
        k, p = layer.weight.shape[2], layer.padding[0]
        cout, cin_body = layer.weight.shape[:2]
        top = torch.cat([layer.weight, like.new_zeros((cout, relays, k, k))], 1)
        bottom = torch.cat([like.new_zeros((relays, cin_body, k, k)), _centre(relays, k, p, like) * relay_value(layer)], 1)
        layer.weight = torch.cat([top, bottom], 0)
        layer.relays_in = relays
        _grow_output(layer, relays)
        layer.input_shape = (layer.input_shape[0] + relays,) + tuple(layer.input_shape[1:])
    k, p = last.weight.shape[2], last.padding[0]
    columns = like.new_zeros((last.weight.shape[0], relays, k, k))
    columns[:, :, p, p] = shortcut.weight.reshape(shortcut.weight.shape[0], relays)
    last.weight = torch.cat([last.weight, columns], 1)
    last.bias = _sum_bias(last.bias, shortcut.bias)
    last.relays_in = relays
    last.input_shape = (last.input_shape[0] + relays,) + tuple(last.input_shape[1:])
    last.source.append(f"{shortcut.name} shortcut via {relays} relays")


def _add_relay_rows(layer, rows: torch.Tensor, relays: int) -> None:
    layer.weight = torch.cat([layer.weight, rows], 0)
    _grow_output(layer, relays)
    layer.source.append(f"{relays} relays")


def _grow_output(layer, relays: int) -> None:
    layer.bias = _cat_bias(layer.bias, relays, layer.weight)
    layer.relays_out = relays
    layer.block_weight = None                     # relays read single positions: no sum-pool form
    layer.output_shape = (layer.output_shape[0] + relays,) + tuple(layer.output_shape[1:])


def check_relays(layers, i_decay: int) -> None:
    """Relays are exact only in neurons without current memory, and with an integer weight above the threshold."""
    relayed = [l for l in layers if l.relays_out]
    if relayed and i_decay != RELAY_I_DECAY:
        raise LoweringError(f"layer '{relayed[0].name}': residual blocks are deployed through relay neurons, which "
                            f"need neurons without current memory (current decay {RELAY_I_DECAY}, not {i_decay})")


def check_relay_weights(fx) -> None:
    """After rounding: every relay's integer weight exceeds the layer's threshold (one spike in, one out)."""
    if not fx.relays_out:
        return
    rows = fx.weight[-fx.relays_out:]
    low = int(rows.max(axis=tuple(range(1, rows.ndim))).min())
    if low <= fx.vth:
        raise QuantizationError(f"layer '{fx.name}': a relay weight rounds to {low}, not above the threshold "
                                f"{fx.vth}; the shortcut would be lost (its bias limits the scale)")

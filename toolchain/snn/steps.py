"""All T time steps of a (T, B, ...) tensor as one batch: the layer-major order SnnModel and the deployed network
run in, and the spike counts per sample."""
from __future__ import annotations

import torch


def per_step(fn, h: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """Apply a per-sample function to all T steps of h (T, B, ...) as one batch. `channels_last`: a conv; on the
    CPU in float32 it runs on (and returns) channels-last tensors, 1.2-2x faster in oneDNN than NCHW (the spiking
    layers, pooling and dropout keep that layout; values are the same up to the convolution's summation order)."""
    T, B = h.shape[:2]
    z = h.reshape((T * B,) + h.shape[2:])
    y = fn(conv_layout(z) if channels_last else z)
    return y.reshape((T, B) + y.shape[1:])


def conv_layout(z: torch.Tensor) -> torch.Tensor:
    """A conv's input (N, C, H, W) channels-last on the CPU in float32 (see `per_step`), else as it is."""
    if z.dim() == 4 and z.device.type == "cpu" and z.dtype == torch.float32:
        return z.contiguous(memory_format=torch.channels_last)
    return z


def per_sample(count: torch.Tensor, dtype) -> torch.Tensor:
    """Spikes per sample (B,) from spikes per neuron (B, ...), summed exactly in integers."""
    return count.reshape(count.shape[0], -1).sum(1, dtype=torch.int64).to(dtype)

"""This process's rows of a batch that several processes share (data-parallel training, toolchain.training.distributed),
and random draws that do not depend on how the batch is shared.

A data-parallel step splits one global batch of `size` samples into contiguous row ranges, one per process. What is
random per sample (Poisson input spikes, dropout masks) is drawn for the whole global batch, from a generator that
every process holds in the same state, and each process keeps its own rows: so every sample sees the random numbers
it would see in one process running the whole batch, the generators stay in step across processes, and a run gives
the same result for any number of processes (up to float summation order). Outside `shard_of_batch` (one process)
nothing changes: draws are made for the batch as given.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class BatchShard:
    """Rows [start, stop) of a global batch of `size` samples. `real` False: this process has no sample of this
    batch (its last, short one) and runs a stand-in row whose loss and batch-norm statistics count for nothing."""
    size: int
    start: int
    stop: int
    real: bool = True

    @property
    def rows(self) -> int:
        return self.stop - self.start


_current: Optional[BatchShard] = None


def current() -> Optional[BatchShard]:
    """The shard of the batch this process is running now, or None (the whole batch is this process's)."""
    return _current


@contextlib.contextmanager
def shard_of_batch(shard: Optional[BatchShard]) -> Iterator[None]:
    """Run the block with `shard` as this process's part of the batch (None: the whole batch, as without it)."""
    global _current
    before, _current = _current, shard
    try:
        yield
    finally:
        _current = before


def _active(batch: int) -> Optional[BatchShard]:
    shard = _current
    return shard if shard is not None and shard.rows == batch else None


def rand(shape: Sequence[int], generator: Optional[torch.Generator] = None, device=None,
         dtype=None) -> torch.Tensor:
    """torch.rand(shape) for a batch whose first dimension may be this process's shard: drawn for the global batch,
    this process's rows returned."""
    shard = _active(shape[0])
    if shard is None:
        return torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)
    full = torch.rand((shard.size,) + tuple(shape[1:]), generator=generator, device=device, dtype=dtype)
    return full[shard.start:shard.stop]


def dropout_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """F.dropout(ones like `like`, p, training=True): the mask, scaled by 1 / (1 - p), drawn from torch's global
    generator for the global batch when `like` is this process's shard of it (in `like`'s memory layout)."""
    shard = _active(like.shape[0])
    if shard is None:
        return F.dropout(torch.ones_like(like), p, True)
    return F.dropout(_ones_in_layout(like, shard.size), p, True)[shard.start:shard.stop]


def _ones_in_layout(like: torch.Tensor, batch: int) -> torch.Tensor:
    """Ones of `like`'s shape with `batch` rows, its dimensions laid out in memory in `like`'s order."""
    order = sorted(range(like.dim()), key=lambda d: (-like.stride(d), d))        # outermost first
    shape = (batch,) + tuple(like.shape[1:])
    base = torch.ones([shape[d] for d in order], dtype=like.dtype, device=like.device)
    return base.permute([order.index(d) for d in range(like.dim())])

"""Data-parallel training on several processes (torch.distributed): one process per core group or GPU, on one
machine or several, each running every step on its shard of the same global batch.

A run is launched by torchrun (or `snntc ... --nproc N`, which calls it), which sets RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT; without them (or with WORLD_SIZE 1) everything here is the
single-process path, unchanged. `init` joins the process group (gloo for CPU tensors, NCCL for CUDA ones, with a
timeout, so that a lost process fails the run instead of hanging it) and gives each process cores / processes
threads.

What makes N processes compute what one process computes on the whole batch (up to float summation order):
- each global batch (the same seeded order as one process) is split into contiguous row ranges, one per process
  (`shard_rows`); random per-sample draws are made for the whole batch and sliced (toolchain.sharding);
- each process's loss is its mean times its share of the batch, so the sum of the processes' gradients is the
  gradient of the global mean; `GradientSync` all-reduces (sums) each parameter's gradient as soon as the backward
  pass has accumulated it, asynchronously, and hands it to the optimizer's update once reduced: the update still
  runs during the backward pass, after the reduction, and every process applies the same update;
- batch norm in training uses the statistics of the global batch (`synchronized_batch_norm`; for an SNN over batch
  and time, as the one-process model applies it to all T * B samples at once), with the exact backward;
- evaluation is sharded the same way and its counts summed; threshold calibration reduces its max or percentile
  over the global calibration batch (toolchain.training.convert).
Rank 0 alone reads a checkpoint to resume from (and hands it to the others) and writes checkpoints, JSON and
progress output.
"""
from __future__ import annotations

import collections
import contextlib
import datetime
import gc
import os
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .. import sharding
from ..errors import ToolchainError

DEFAULT_TIMEOUT_S = 600.0


class DistributedError(ToolchainError):
    """The processes of a data-parallel run cannot start together, or one of them was lost."""


# -- the process group -------------------------------------------------------------------------------------------
def launched() -> bool:
    """Whether this process is one of several of a run launched by torchrun (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def local_processes() -> int:
    """Processes of this run on this machine (torchrun's LOCAL_WORLD_SIZE; 1 without torchrun)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)) if launched() else 1


def threads_per_process() -> int:
    """This machine's cores shared among this run's processes on it."""
    return max(1, (os.cpu_count() or 1) // local_processes())


def init(timeout_s: Optional[float] = None) -> None:
    """Join the run's process group if torchrun launched this process and it has not joined yet (else nothing):
    gloo for CPU tensors and NCCL for CUDA ones, collectives failing after `timeout_s` (default
    SNNTC_DIST_TIMEOUT or 600 s) instead of waiting for a lost process forever; torch threads = cores / processes."""
    if not launched() or dist.is_initialized():
        return
    if timeout_s is None:
        timeout_s = float(os.environ.get("SNNTC_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise DistributedError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: launch "
                               f"with torchrun (or snntc ... --nproc N), which sets them")
    cuda = torch.cuda.is_available() and dist.is_nccl_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")     # a lost peer fails NCCL collectives too
    try:
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(f"cannot join the other processes at {os.environ['MASTER_ADDR']}:"
                               f"{os.environ['MASTER_PORT']}: {first_line(exc)}") from None
    torch.set_num_threads(threads_per_process())


def shutdown() -> None:
    """Leave the process group. torch 2.3's ProcessGroupGloo destructor joins its worker threads while holding the
    GIL; a worker still dropping the last reference to a tensor of a just-finished collective needs the GIL to free
    it, and the process hangs at exit (seen once in CI: rank 1 stuck in ~ProcessGroupGloo after writing its results).
    So this process's collectives' Python references are collected and the workers get a pause without the GIL to
    drop theirs before the destructor runs (no barrier: after an error the peers may be gone)."""
    if not dist.is_initialized():
        return
    gc.collect()
    time.sleep(0.2)                 # releases the GIL
    dist.destroy_process_group()


def world() -> Tuple[int, int]:
    """(rank, number of processes) of this run; (0, 1) in one process. Joins the group first if launched."""
    init()
    if not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    """Rank 0, the process that writes (the only one, without torchrun)."""
    return world()[0] == 0


def local_device(device: torch.device) -> torch.device:
    """A CUDA device without an index, under torchrun: this process's GPU (LOCAL_RANK)."""
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def lost_peer(exc: BaseException) -> bool:
    """Whether `exc` is a collective that failed because another process of the run stopped or timed out."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and dist.is_available() and any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Timed out",
                            "timed out", "NCCL", "gloo", "Gloo"))


# -- collectives ----------------------------------------------------------------------------------------------------
def on_main(fn: Callable):
    """fn() on rank 0 only, its result handed to every process (pickled); a ToolchainError it raises is raised on
    every process. In one process: fn()."""
    rank, size = world()
    if size == 1:
        return fn()
    message = [None]
    if rank == 0:
        try:
            message = [("ok", fn())]
        except ToolchainError as exc:
            message = [("error", type(exc), str(exc))]
    dist.broadcast_object_list(message, src=0)
    if message[0][0] == "error":
        raise message[0][1](message[0][2])
    return message[0][1]


def all_sum(values: Sequence[float]) -> List[float]:
    """Each value summed over the processes (float64)."""
    if world()[1] == 1:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def all_max(value: float) -> float:
    if world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def all_gather_objects(obj) -> list:
    """Every process's `obj`, in rank order."""
    size = world()[1]
    if size == 1:
        return [obj]
    out = [None] * size
    dist.all_gather_object(out, obj)
    return out


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """The 1-d tensors of every process, of any lengths, concatenated in rank order (on every process)."""
    size = world()[1]
    if size == 1:
        return t
    n = torch.tensor([t.numel()], dtype=torch.int64, device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(sizes, n)
    longest = int(max(int(s) for s in sizes))
    padded = torch.zeros(longest, dtype=t.dtype, device=t.device)
    padded[:t.numel()] = t
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:int(s)] for p, s in zip(parts, sizes)])


def broadcast_module(model: nn.Module) -> None:
    """Rank 0's parameters and buffers on every process."""
    if world()[1] == 1:
        return
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            buf = t.data if t.is_contiguous() else t.data.contiguous()
            dist.broadcast(buf, src=0)
            if buf is not t.data:
                t.data.copy_(buf)


# -- shards of a batch ---------------------------------------------------------------------------------------------
def shard_rows(n: int, rank: int, size: int) -> Tuple[int, int]:
    """Rows [start, stop) of a batch of n that process `rank` of `size` runs: contiguous, the first n % size
    processes one more (torch.tensor_split's split)."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def batch_shard(n: int) -> Optional[sharding.BatchShard]:
    """This process's BatchShard of a batch of n (None in one process). A process with no row of a short last
    batch gets row 0 as a stand-in (`real` False: its loss and batch-norm statistics count for nothing), so that
    every process runs every step's collectives."""
    rank, size = world()
    if size == 1:
        return None
    start, stop = shard_rows(n, rank, size)
    if start == stop:
        return sharding.BatchShard(n, 0, 1, real=False)
    return sharding.BatchShard(n, start, stop)


def loss_share(shard: Optional[sharding.BatchShard]) -> Optional[float]:
    """What this process's mean loss is multiplied by so that the processes' gradients sum to the gradient of the
    global batch's mean (None in one process: nothing to multiply)."""
    if shard is None:
        return None
    return shard.rows / shard.size if shard.real else 0.0


# -- gradients ---------------------------------------------------------------------------------------------------------
_observers: Dict[int, List[Callable[[torch.Tensor], None]]] = collections.defaultdict(list)


class _Handle:
    def __init__(self, remove):
        self.remove = remove


def observe_gradient(param: torch.Tensor, fn: Callable[[torch.Tensor], None]):
    """Call fn(gradient) at each backward pass with `param`'s gradient of the global batch: in one process a tensor
    hook (before accumulation), in several the reduced gradient, before the update (`GradientSync`). Returns a
    handle with remove()."""
    if world()[1] == 1:
        return param.register_hook(fn)
    _observers[id(param)].append(fn)
    return _Handle(lambda: _observers[id(param)].remove(fn) if fn in _observers[id(param)] else None)


class GradientSync:
    """Sums each parameter's gradient over the processes as soon as the backward pass has accumulated it.

    The all-reduce is started in the parameter's post-accumulate-grad hook, asynchronously (communication overlaps
    the rest of the backward pass); reductions that have finished are collected at each later hook, and the rest
    by `wait()` after the backward pass. Each reduced gradient goes to the `observe_gradient` observers and then to
    `update(param)` (the optimizer's in-backward update, which frees the gradient), so the update runs during the
    backward pass, after its gradient's reduction. Every process starts its all-reduces in the same order: the
    autograd engine runs the same graph in the same order on each."""

    def __init__(self, params: Sequence[torch.Tensor], update: Optional[Callable[[torch.Tensor], None]] = None):
        self.update = update
        self.pending: collections.deque = collections.deque()
        self._hooks = [p.register_post_accumulate_grad_hook(self._reduce) for p in params]

    def _reduce(self, p: torch.Tensor) -> None:
        if not p.grad.is_contiguous():
            p.grad = p.grad.contiguous()
        self.pending.append((p, dist.all_reduce(p.grad, async_op=True)))
        if self.update is not None:
            self._collect(block=False)

    def _collect(self, block: bool) -> None:
        while self.pending and (block or self.pending[0][1].is_completed()):
            p, work = self.pending.popleft()
            work.wait()
            for fn in _observers.get(id(p), ()):
                fn(p.grad)
            if self.update is not None:
                self.update(p)

    def wait(self) -> None:
        """Finish every reduction (and update) of this backward pass."""
        self._collect(block=True)

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []


# -- batch norm over the global batch -----------------------------------------------------------------------------------
class _GlobalBatchNorm(torch.autograd.Function):
    """y = (x - mean) * invstd * weight + bias with the global batch's mean and invstd; the backward's sums over the
    batch are all-reduced (the weight's and bias's gradients are left local: GradientSync sums them). `real` False:
    x is a stand-in row (no sample of this batch is this process's): it gets no gradient, though the global sums
    that every real sample's gradient depends on are not zero."""

    @staticmethod
    def forward(ctx, x, weight, bias, mean, var, eps, count, real=True):
        ctx.save_for_backward(x, weight, mean, var)
        ctx.eps, ctx.count, ctx.real = eps, count, real
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, var = ctx.saved_tensors
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        invstd = torch.rsqrt(var + ctx.eps)
        xmu = x - mean.view(shape)
        sum_dy, sum_dy_xmu = dy.sum(dims), (dy * xmu).sum(dims)
        total = torch.cat([sum_dy, sum_dy_xmu])
        dist.all_reduce(total)
        g_dy, g_dy_xmu = total.chunk(2)
        scale = invstd * weight
        dx = (dy - (g_dy / ctx.count).view(shape) - xmu * (invstd * invstd * g_dy_xmu / ctx.count).view(shape)) \
            * scale.view(shape)
        if not ctx.real:
            dx = torch.zeros_like(dx)
        return dx, sum_dy_xmu * invstd, sum_dy, None, None, None, None, None


def global_batch_stats(x: torch.Tensor, real: bool = True) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Mean and (biased) variance per channel (dim 1) over every process's x, and the global count: each process's
    count, mean and sum of squared deviations gathered and combined exactly (Chan et al.), in float64."""
    C = x.shape[1]
    dims = [d for d in range(x.dim()) if d != 1]
    n = x.numel() // C if real else 0
    var, mean = torch.var_mean(x.detach(), dims, unbiased=False)
    local = torch.cat([torch.tensor([float(n)], dtype=torch.float64, device=x.device),
                       mean.double() * (n > 0), var.double() * n])
    parts = [torch.empty_like(local) for _ in range(world()[1])]
    dist.all_gather(parts, local)
    g = torch.stack(parts)
    counts, means, m2 = g[:, :1], g[:, 1:C + 1], g[:, C + 1:]
    total = counts.sum()
    mean_g = (counts * means).sum(0) / total
    var_g = (m2 + counts * (means - mean_g) ** 2).sum(0) / total
    return mean_g.to(x.dtype), var_g.to(x.dtype), int(total)


class _SyncBatchNorm:
    """forward of a BatchNorm1d/2d in training with the global batch's statistics (and running statistics updated
    from them, as one process updates its own); otherwise the module's own forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        shard = sharding.current()
        real = shard is None or shard.real
        mean, var, count = global_batch_stats(x, real=real)
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            f = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            with torch.no_grad():
                self.running_mean.mul_(1 - f).add_(mean, alpha=f)
                self.running_var.mul_(1 - f).add_(var * (count / max(count - 1, 1)), alpha=f)
        return _GlobalBatchNorm.apply(x, self.weight, self.bias, mean, var, self.eps, count, real)


class SyncBatchNorm1d(_SyncBatchNorm, nn.BatchNorm1d):
    pass


class SyncBatchNorm2d(_SyncBatchNorm, nn.BatchNorm2d):
    pass


@contextlib.contextmanager
def synchronized_batch_norm(model: nn.Module) -> Iterator[None]:
    """Within the block, `model`'s BatchNorm1d/2d layers normalize over the global batch in training (in several
    processes; nothing changes in one). Their parameters, buffers and state-dict names stay the same."""
    swapped = []
    if world()[1] > 1:
        for m in model.modules():
            for plain, synced in ((nn.BatchNorm1d, SyncBatchNorm1d), (nn.BatchNorm2d, SyncBatchNorm2d)):
                if type(m) is plain:
                    if not m.affine:
                        raise ToolchainError(f"batch norm without affine parameters is not supported in data-parallel "
                                             f"training")
                    m.__class__ = synced
                    swapped.append((m, plain))
    try:
        yield
    finally:
        for m, plain in swapped:
            m.__class__ = plain


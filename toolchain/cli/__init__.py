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

import importlib

from ..errors import ToolchainError
from .catalog import COMMANDS, modules
from .common import CliError


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line on stderr (exit 2), pointing at --help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(commands: Optional[List[str]] = None) -> argparse.ArgumentParser:
    """The parser of every command (default), or of `commands` only, the others listed by name and one-line help
    (`toolchain.cli.catalog`) without importing their modules: `snntc --help` and an unknown command load no torch
    and no Lava."""
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
    wanted = modules() if commands is None else {COMMANDS[c].module for c in commands if c in COMMANDS}
    for name in modules():
        if name in wanted:
            importlib.import_module(f"{__name__}.{name}").register(sub)
    for name, command in COMMANDS.items():           # the rest by name only, in the catalog's order
        if name not in sub.choices:
            sub.add_parser(name, help=command.help, add_help=False)
    sub._choices_actions.sort(key=lambda a: list(COMMANDS).index(a.dest) if a.dest in COMMANDS else len(COMMANDS))
    return parser


def named_command(argv: List[str]) -> Optional[str]:
    """The command a command line names: its first word that is not an option (the top level has no option that
    takes a value)."""
    return next((a for a in argv if not a.startswith("-")), None)


@contextlib.contextmanager
def one_line_warnings(command: str):
    """The toolchain's warnings (a Python user gets them from `warnings`) as one line each on stderr."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"snntc {command}: warning: {message}", file=sys.stderr, flush=True)
    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser([named_command(argv)] if named_command(argv) else [])
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

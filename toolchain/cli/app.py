"""The commands of `snntc` (toolchain.cli.main runs them): the parser, and how errors, interrupts and outputs are
handled for every command. User errors (ToolchainError) print one line on stderr and exit with status 2; every
output is checked before any work (toolchain.io.outputs), so nothing is written."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import traceback
import warnings
from typing import List, Optional

from ..errors import ToolchainError
from . import commands_deploy, commands_formats, commands_snn, commands_train
from .common import CliError, guarded_outputs, interrupted_note

COMMAND_MODULES = (commands_train, commands_snn, commands_deploy, commands_formats)


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
        epilog="Typical flow: snntc train-ann -o ann.pt; snntc convert ann.pt -o snn.pt; snntc finetune snn.pt -o hybrid.pt; "
               "snntc evaluate hybrid.pt --timesteps 5,10; snntc export hybrid.pt -o model.net; snntc simulate model.net. "
               "Or all of it on the bundled digits: snntc demo.")
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"snntc {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (anywhere on the line; or SNNTC_DEBUG=1)")
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


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so that temporary files are removed and locks released."""


@contextlib.contextmanager
def signal_handlers():
    """SIGTERM raises Terminated; a file-size limit (SIGXFSZ) makes the write fail (EFBIG, reported in one line)
    instead of killing the process. The previous handlers are restored afterwards (main may run in-process)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()
    before = {sig: signal.signal(sig, handler) for sig, handler in ((signal.SIGTERM, terminate),
                                                                   (signal.SIGXFSZ, signal.SIG_IGN))}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."


def _unexpected(exc: Exception) -> str:
    if isinstance(exc, MemoryError):
        return "out of memory: the work asked for does not fit this machine's memory (fewer samples, time steps or " \
               "a smaller batch)"
    return (f"internal error: {type(exc).__name__}: {_one_line(exc)} (a case snntc does not check; SNNTC_DEBUG=1 "
            f"shows the traceback)")


def run(argv: List[str], debug: bool = False) -> int:
    """Parse `argv` and run the command (toolchain.cli.main is the entry point)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:              # --help (0) or an argument error (2, one line already printed)
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    command = f"snntc {args.command}"
    try:
        with signal_handlers(), one_line_warnings(args.command), guarded_outputs(args):
            args.func(args)
        return 0
    except (ToolchainError, CliError) as exc:
        if debug:
            traceback.print_exc()
        print(f"{command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{command}: interrupted ({interrupted_note(args)})", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{command}: terminated ({interrupted_note(args)})", file=sys.stderr)
        return 143
    except BrokenPipeError:
        os._exit(0)
    except Exception as exc:
        if debug:
            raise
        print(f"{command}: error: {_unexpected(exc)}", file=sys.stderr)
        return 2

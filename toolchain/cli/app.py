"""The commands of `snntc` (toolchain.cli.main runs them): the parser, and how errors, interrupts, outputs and
data-parallel runs are handled for every command. User errors (ToolchainError) print one line on stderr and exit
with status 2; every output is checked before any work (toolchain.io.outputs), so nothing is written.

Only the module of the command named on the line is imported (toolchain.cli.catalog lists the others by name and
one-line help), so `snntc --help` and an argument error load no torch and no Lava."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
import traceback
import warnings
from typing import List, Optional

from ..errors import ToolchainError
from . import launch
from .catalog import COMMANDS, modules
from .common import CliError, guarded_outputs, interrupted_note


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
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (anywhere on the line; or SNNTC_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = modules() if commands is None else {COMMANDS[c].module for c in commands if c in COMMANDS}
    for name in modules():
        if name in wanted:
            load_command_module(name).register(sub)
    for name, command in COMMANDS.items():           # the rest by name only, in the catalog's order
        if name not in sub.choices:
            sub.add_parser(name, help=command.help, add_help=False)
    sub._choices_actions.sort(key=lambda a: list(COMMANDS).index(a.dest) if a.dest in COMMANDS else len(COMMANDS))
    return parser


class StartupError(Exception):
    """A command's module (and what it imports: torch, numpy, Lava) failed to import: a broken installation."""


def load_command_module(name: str):
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except Exception as exc:
        raise StartupError(str(exc)) from exc


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
    parser = build_parser([named_command(argv)] if named_command(argv) else [])
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:              # --help (0) or an argument error (2, one line already printed)
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "nproc", 1) > 1 and not launch.launched():
        return launch.launch(args.command, list(argv), args.nproc)
    command = f"snntc {args.command}"
    try:
        with signal_handlers(), one_line_warnings(args.command), _one_process_speaks(args), _outputs(args):
            args.func(args)
        return 0
    except (ToolchainError, CliError) as exc:
        if debug:
            traceback.print_exc()
        return _error(command, _one_line(exc))
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
        lost = _lost_peer(exc)
        return _error(command, lost or _unexpected(exc), lost=bool(lost))
    finally:
        if launch.launched():                  # torch is imported only where a run is data-parallel
            from ..training import distributed
            distributed.shutdown()


def _lost_peer(exc: Exception) -> Optional[str]:
    """Under torchrun, the line saying that this process lost the others (None otherwise)."""
    if not launch.launched():
        return None
    from ..training import distributed
    if not distributed.lost_peer(exc):
        return None
    rank, size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return (f"process {rank} of {size} lost the others of the run ({distributed.first_line(exc)}); the run stopped "
            f"(the checkpoint written after the last finished epoch is kept: --resume continues)")


def _error(command: str, message: str, lost: bool = False) -> int:
    """One line on stderr (exit 2); under --nproc handed to the launcher, which prints the one that matters; under
    torchrun rank 0 prints a user error (every process meets the same one) and each process says it lost the others."""
    line = f"{command}: error: {message}"
    if not launch.report(line, lost) and (lost or int(os.environ.get("RANK", 0) or 0) == 0):
        print(line, file=sys.stderr)
    return 2


def _outputs(args):
    """The command's outputs checked (and its training output locked) before any work; under torchrun by rank 0,
    which alone writes."""
    if launch.launched() and int(os.environ.get("RANK", 0) or 0) != 0:
        return contextlib.nullcontext()
    return guarded_outputs(args)


@contextlib.contextmanager
def _one_process_speaks(args):
    """Under torchrun: join the run's processes (a command that does not run data-parallel refuses); the processes
    other than rank 0 print nothing (rank 0 prints the summaries, progress and warnings)."""
    if not launch.launched():
        yield
        return
    from ..training import distributed
    if not hasattr(args, "nproc"):
        raise CliError(f"'{args.command}' runs in one process; start it without torchrun (data-parallel: train-ann, "
                       f"convert, finetune, train-snn)")
    launch.die_with_parent()
    distributed.init(args.dist_timeout)
    if distributed.is_main():
        yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield

"""`--nproc N`: run a training command data-parallel on N processes of this machine, through torchrun's launcher
(torch.distributed.launcher: a standalone rendezvous on localhost), and report a failure in one line.

Each process runs the same command line (it ignores --nproc: torchrun's WORLD_SIZE says it is one of several).
When one fails, the launcher stops the others and says which one and why: the one line a process wrote (a
ToolchainError, or that it lost the others) or how it died (a signal, an exit status), rather than torchrun's
report.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import uuid
from typing import List

ERROR_DIR = "SNNTC_ERROR_DIR"         # where each process writes its one-line error for the launcher
LOST = "lost: "                       # prefix of a process's line that only says it lost the others


def launched() -> bool:
    """Whether this process is one of several of a run launched by torchrun (WORLD_SIZE > 1); without importing
    torch (toolchain.training.distributed.launched says the same)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def report(line: str, lost: bool = False) -> bool:
    """A launched process hands its one error line to the launcher (True), or there is none to hand it to (False:
    print it yourself)."""
    directory = os.environ.get(ERROR_DIR)
    if not directory or not os.path.isdir(directory):
        return False
    with open(os.path.join(directory, f"rank{os.environ.get('RANK', '0')}.txt"), "w") as f:
        f.write((LOST if lost else "") + line)
    return True


def launch(command: str, argv: List[str], nproc: int) -> int:
    """Run `python -m toolchain <argv>` on `nproc` processes; the exit status of the run (0, or 2 with one line)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    errors = tempfile.mkdtemp(prefix="snntc-launch-")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"snntc-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2)
    try:
        with _environment({ERROR_DIR: errors}), _quiet_torchelastic():
            elastic_launch(config, sys.executable)("-m", "toolchain", *argv)
        return 0
    except ChildFailedError as exc:
        print(f"snntc {command}: error: {_cause(exc, errors, nproc)}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SignalException):       # torchelastic stops the processes on SIGINT / SIGTERM
        print(f"snntc {command}: interrupted (checkpoints written so far are kept; --resume continues)",
              file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(errors, ignore_errors=True)


def die_with_parent() -> None:
    """A process of a run dies with the launcher that started it (torchrun starts each in its own session, so a
    killed launcher would leave them training on): Linux's parent-death signal, SIGKILL."""
    import ctypes
    import signal
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)          # PR_SET_PDEATHSIG
    except (OSError, AttributeError):          # not Linux: the launcher's own shutdown is all there is
        return
    if os.getppid() == 1:                      # the launcher is already gone
        os._exit(1)


def _cause(exc, errors: str, nproc: int) -> str:
    """The one line that says why the run failed: a process that died without a word (a signal, a crash) first,
    then the first error a process reported, then what the others say (they lost contact)."""
    lines = {}
    for name in os.listdir(errors):
        if name.startswith("rank") and name.endswith(".txt"):
            with open(os.path.join(errors, name)) as f:
                lines[int(name[4:-4])] = f.read().strip()
    silent = sorted(r for r in exc.failures if r not in lines)
    if silent:
        failure = exc.failures[silent[0]]
        how = (f"was killed ({failure.signal_name()})" if failure.exitcode < 0 else
               f"exited with status {failure.exitcode}")
        return (f"process {silent[0]} of {nproc} {how}; the run stopped (the checkpoint written after the last "
                f"finished epoch is kept: --resume continues)")
    said = sorted(r for r in lines if not lines[r].startswith(LOST))
    if said:
        return _message(lines[said[0]])
    rank = min(lines)
    return _message(lines[rank][len(LOST):])


def _message(line: str) -> str:
    """A process's line without its 'snntc CMD: error: ' prefix (the launcher adds its own)."""
    head, sep, rest = line.partition(": error: ")
    return rest if sep and head.startswith("snntc ") else line


@contextlib.contextmanager
def _environment(values: dict):
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet_torchelastic():
    """torchelastic logs its own account of a failure (several lines per process; its loggers set their own
    levels); the launcher says it in one: their records stop at a handler that drops them."""
    logger = logging.getLogger("torch.distributed.elastic")
    handler, propagate = logging.NullHandler(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate

"""`snntc`: the command line. Each command parses its arguments, calls one pipeline stage, prints
a readable summary and, with --json FILE, writes the summary as JSON.

Errors are one line on stderr with exit status 2 and nothing written (SNNTC_DEBUG=1 or --debug shows the
traceback); Ctrl-C exits 130 with one line. This module imports nothing heavy, so that an interrupt or an error
while torch and Lava load is reported like any other (toolchain.cli.app holds the commands).
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

DEBUG_FLAG = "--debug"


def debug_requested(argv: List[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get("SNNTC_DEBUG", "") not in ("", "0")


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; returns its exit status (0, 2 for an error, 130 for an interrupt)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        from .app import StartupError, run
    except Exception as exc:            # a broken install: one line, the traceback on request
        return _cannot_start(exc, debug)
    except KeyboardInterrupt:
        return _interrupted_starting(debug)
    try:
        return run(argv, debug)
    except StartupError as exc:         # the command's module (torch, numpy, Lava) failed to import
        return _cannot_start(exc.__cause__ or exc, debug)
    except KeyboardInterrupt:           # before run's own handler is in place (parsing, plugin loading)
        return _interrupted_starting(debug)


def _cannot_start(exc: BaseException, debug: bool) -> int:
    if debug:
        raise exc
    text = " ".join(str(exc).split())[:300]
    print(f"snntc: error: cannot start: {type(exc).__name__}: {text} (the installation is incomplete or "
          f"broken: make setup; SNNTC_DEBUG=1 shows the traceback)", file=sys.stderr)
    return 2


def _interrupted_starting(debug: bool) -> int:
    if debug:
        raise KeyboardInterrupt
    print("snntc: interrupted while starting", file=sys.stderr)
    return 130


def build_parser(commands: Optional[List[str]] = None):
    """The parser of every command, or of `commands` only (toolchain.cli.app.build_parser)."""
    from .app import build_parser as build
    return build(commands)


def one_line_warnings(command: str):
    from .app import one_line_warnings as warnings_as_lines
    return warnings_as_lines(command)

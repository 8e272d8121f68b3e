"""Progress bars and per-epoch log lines.

tqdm's default lock is a multiprocessing lock, and creating it fixes the process's multiprocessing start method,
after which importing Lava (which sets 'fork') fails. A threading lock avoids that; every progress bar of the
toolchain comes from here. Bars are drawn only on a terminal: in a log file each refresh would be another line
(of carriage returns), so there the long stages say one line per epoch or stage instead (`log`)."""
import sys
import threading

from tqdm.auto import tqdm

tqdm.set_lock(threading.RLock())


def bars_enabled(progress: bool = True) -> bool:
    """Whether to draw progress bars: asked for, and stderr is a terminal."""
    stream = sys.stderr
    return bool(progress) and hasattr(stream, "isatty") and stream.isatty()


def progress_bar(iterable=None, progress: bool = True, **kwargs):
    """A tqdm bar that is drawn only where `bars_enabled(progress)`."""
    return tqdm(iterable, disable=not bars_enabled(progress), **kwargs)


def log_line(message: str) -> None:
    """One progress line on stdout, flushed at once (long runs are often piped to a file)."""
    print(message, flush=True)


__all__ = ["tqdm", "bars_enabled", "progress_bar", "log_line"]

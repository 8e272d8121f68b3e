"""Progress bars. tqdm's default lock is a multiprocessing lock, and creating it fixes the process's
multiprocessing start method, after which importing Lava (which sets 'fork') fails. A threading lock
avoids that; every progress bar of the toolchain comes from here."""
import threading

from tqdm.auto import tqdm

tqdm.set_lock(threading.RLock())

__all__ = ["tqdm"]

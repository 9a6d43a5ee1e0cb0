"""Saying so when kernels are being compiled: the first run on a CPU takes seconds, later runs none.

Numba compiles each kernel the first time it is called and keeps the machine code in the family's
cache folder, so only the first run of a model on a machine compiles, and only what that model
uses. Without a word that first run looks hung. :func:`enable` listens to Numba's compile events and,
at the first one, writes a line to standard error naming what is happening; on a terminal the next
line counts the kernels and seconds as they go, until the program calls :func:`finish` to write
output of its own (kernels compiled after that are counted quietly), and at exit one line says how
many were compiled and how long it took. A run that finds everything cached prints nothing.
"""

from __future__ import annotations

import atexit
import sys
import time

_listener = None


def enable(stream=None) -> None:
    """Announce compilation on ``stream`` (standard error) from now on in this process; idempotent."""
    global _listener
    if _listener is not None:
        return
    from numba.core import event

    from . import family

    class _Notice(event.Listener):
        def __init__(self, out):
            self.out = out
            self.live = out.isatty() if hasattr(out, "isatty") else False
            self.count = 0
            self.depth = 0
            self.started = None
            self.open_line = False

        def on_start(self, ev):
            self.depth += 1
            if self.depth > 1:
                return  # a kernel compiling the kernels it calls: one kernel to the user
            if self.started is None:
                self.started = time.monotonic()
                self.out.write(f"lamina: compiling kernels for this CPU ({family.NAME}), once: later runs load "
                               f"them from {_cache_folder()}\n")
                self.out.flush()

        def on_end(self, ev):
            self.depth -= 1
            if self.depth:
                return
            self.count += 1
            if self.live:
                self.out.write(f"\r  {self.count} kernels compiled, {time.monotonic() - self.started:.1f} s")
                self.out.flush()
                self.open_line = True

        def finish(self):
            self.live = False
            if self.open_line:
                self.out.write("\n")
                self.out.flush()
                self.open_line = False

        def summary(self):
            self.finish()
            if self.count:
                self.out.write(f"lamina: compiled {self.count} kernels in {time.monotonic() - self.started:.1f} s "
                               "(cached: the next run starts at once)\n")
                self.out.flush()

    _listener = _Notice(stream or sys.stderr)
    event.register("numba:compile", _listener)
    atexit.register(_listener.summary)


def finish() -> None:
    """End the progress line (before a program writes its own output to the terminal)."""
    if _listener is not None:
        _listener.finish()


def _cache_folder() -> str:
    from numba import config

    return str(config.CACHE_DIR)

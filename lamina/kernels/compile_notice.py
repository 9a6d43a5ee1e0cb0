"""Saying so when kernels are being compiled: the first run on a CPU takes seconds, later runs none.

Numba compiles each kernel the first time it is called and keeps the machine code in the family's
cache folder, so only the first run of a model on a machine compiles, and only what that model
uses. Without a word that first run looks hung. :func:`enable` listens to Numba's compile events and,
at the first one, writes a line to standard error naming what is happening; on a terminal the next
line counts the kernels and seconds as they go, until the program calls :func:`finish` to write
output of its own (kernels compiled after that are counted quietly), and at exit one line says how
many were compiled and how long it took. A run that finds everything cached prints nothing.

The notice is a courtesy: it looks standard error up at each write (a program, or a test, may have
replaced or closed the one that was current when it started) and a write that fails is dropped,
never raised into the computation that happened to compile a kernel.
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
            self.fixed_out = out
            self.live = _isatty(self.out)
            self.count = 0
            self.depth = 0
            self.announced = False
            self.kernel_started = 0.0
            self.seconds = 0.0        # spent compiling (a long-lived process compiles now and then)
            self.open_line = False

        @property
        def out(self):
            return self.fixed_out or sys.stderr

        def write(self, text):
            try:
                self.out.write(text)
                self.out.flush()
            except (ValueError, OSError, AttributeError):
                pass  # standard error closed or gone: the notice is dropped, the work goes on

        def on_start(self, ev):
            self.depth += 1
            if self.depth > 1:
                return  # a kernel compiling the kernels it calls: one kernel to the user
            self.kernel_started = time.monotonic()
            if not self.announced:
                self.announced = True
                self.write(f"lamina: compiling kernels for this CPU ({family.NAME}), once: later runs load "
                           f"them from {_cache_folder()}\n")

        def on_end(self, ev):
            self.depth -= 1
            if self.depth:
                return
            self.count += 1
            self.seconds += time.monotonic() - self.kernel_started
            if self.live:
                self.write(f"\r  {_kernels(self.count)} compiled, {self.seconds:.1f} s")
                self.open_line = True

        def finish(self):
            self.live = False
            if self.open_line:
                self.write("\n")
                self.open_line = False

        def summary(self):
            self.finish()
            if self.count:
                self.write(f"lamina: compiled {_kernels(self.count)} in {self.seconds:.1f} s "
                           "(cached: the next run starts at once)\n")

    _listener = _Notice(stream)
    event.register("numba:compile", _listener)
    atexit.register(_listener.summary)


def finish() -> None:
    """End the progress line (before a program writes its own output to the terminal)."""
    if _listener is not None:
        _listener.finish()


def _kernels(count: int) -> str:
    return f"{count} kernel" + ("" if count == 1 else "s")


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (ValueError, OSError, AttributeError):
        return False


def _cache_folder() -> str:
    from numba import config

    return str(config.CACHE_DIR)

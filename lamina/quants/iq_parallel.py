"""Running a row kernel over slices of rows on several threads.

The i-quant kernels are compiled with ``nogil=True`` and split across a thread pool
here rather than with Numba's ``parallel=True``: the work per row is large, so plain
threads use the cores as well, and compiling without the parallel backend takes a
fraction of the time on first use. The thread count follows Numba's
(``NUMBA_NUM_THREADS`` / ``numba.set_num_threads``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from threading import Lock

import numba

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_lock = Lock()


def _executor(threads: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < threads:
            # a replaced pool's idle threads exit once its last user drops it (no shutdown here:
            # another thread may still be submitting to it)
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lamina-iq")
            _pool_size = threads
        return _pool


def for_row_slices(rows: int, work, min_rows: int = 1) -> list:
    """Call ``work(start, stop)`` over contiguous slices covering ``range(rows)``; returns the results in order.

    Slices have at least ``min_rows`` rows; with one slice (or one thread) the call runs here.
    """
    threads = max(1, min(numba.get_num_threads(), rows // max(1, min_rows)))
    if threads == 1:
        return [work(0, rows)]
    # a few slices per thread so uneven rows (all-zero ones are quick) still balance
    pieces = min(rows, threads * 4)
    bounds = [rows * i // pieces for i in range(pieces + 1)]
    pool = _executor(threads)
    futures = [pool.submit(work, a, b) for a, b in zip(bounds, bounds[1:]) if b > a]
    return [f.result() for f in futures]

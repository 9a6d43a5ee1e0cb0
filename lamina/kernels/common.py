"""Pieces every kernel uses: float16 decoding, compile flags, row chunking."""

from __future__ import annotations

import numpy as np
from numba import njit

F32 = np.float32

# float16 bit pattern -> float32, looked up once per scale (ggml keeps the same table).
F16_TO_F32 = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)

# Reassociation lets LLVM vectorize the long dot-product reductions; no assumptions about
# NaN or infinity are made, so bad values still propagate.
FAST = {"reassoc", "contract", "arcp", "nsz"}

# Rows handed to one parallel task: large enough to amortize scheduling, small enough to balance.
ROW_CHUNK = 16


@njit(cache=True, inline="always")
def n_chunks(rows: int) -> int:
    return (rows + ROW_CHUNK - 1) // ROW_CHUNK

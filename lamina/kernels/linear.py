"""Linear layers over quantized weights, and embedding lookups.

This is the reference path: the weight stays in the file's blocks and is
dequantized when it is used. Fast per-type kernels plug in behind the same
``Linear.__call__``.
"""

from __future__ import annotations

import numpy as np

from lamina.gguf import TensorInfo
from lamina.quants import dequantize


def set_num_threads(n: int | None) -> None:
    """Limit every parallel region (Numba's and the BLAS library's) to ``n`` threads."""
    if not n or n < 1:
        return
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(min(int(n), numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(limits=int(n))


class Linear:
    """``y = x @ W.T + b`` for a weight of ``out_features`` rows of ``in_features`` values in any ggml type."""

    def __init__(self, weight: TensorInfo, bias: np.ndarray | None = None):
        if len(weight.shape) != 2:
            raise ValueError(f"{weight.name}: a linear weight must be 2-D, got shape {list(weight.shape)}")
        self.name = weight.name
        self.type = weight.type
        self.in_features, self.out_features = int(weight.shape[0]), int(weight.shape[1])
        self.raw = weight.data
        self.bias = None if bias is None else np.asarray(bias, dtype=np.float32).reshape(-1)
        if self.bias is not None and self.bias.shape[0] != self.out_features:
            raise ValueError(f"{self.name}: bias has {self.bias.shape[0]} values for {self.out_features} outputs")

    def dequantized(self) -> np.ndarray:
        return dequantize(self.raw, self.type, (self.out_features, self.in_features))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = np.asarray(x, dtype=np.float32) @ self.dequantized().T
        if self.bias is not None:
            y += self.bias
        return y


def embedding_rows(weight: TensorInfo, ids: np.ndarray) -> np.ndarray:
    """Rows ``ids`` of an embedding table (ggml shape (n_embd, n_vocab)), as float32 (len(ids), n_embd)."""
    n_embd = int(weight.shape[0])
    rows = weight.data.reshape(int(weight.shape[1]), -1)[np.asarray(ids, dtype=np.int64)]
    return dequantize(rows, weight.type, (len(ids), n_embd))

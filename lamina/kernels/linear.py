"""Linear layers over quantized weights, and embedding lookups.

A :class:`Linear` repacks its weight once, at load time, into the layout its type's
kernel wants (same size as the file's blocks). Then:

* the common types — Q8_0, Q5_0, Q5_1, Q4_0, Q4_1 (:mod:`.legacy`), Q3_K, Q4_K, Q5_K and
  Q6_K (:mod:`.kquants`), F16 (:mod:`.floats`) — go through kernels that compute exactly what
  llama.cpp's CPU backend computes, bit for bit, for any number of input rows: the activation
  quantized to 8 bits (or rounded to float16) as ggml does it, integer dot products, and ggml's
  float steps in ggml's order
  (which depends on the batch size where ggml's kernel does; see :mod:`.ggml_reference`).
  A few input rows (generation) read the packed weight once, widening it in registers;
  many rows (prompt processing) widen each group of rows once and stream the tokens past it;
* other types: a few input rows through a matrix-vector kernel, many rows by dequantizing
  the weight into float32 tiles for the BLAS matrix product, with the activation rounded as
  ggml's dot product rounds it (:mod:`.activations`) — close to llama.cpp, not identical.

Several weights of the same input can be fused into one layer (q/k/v, gate/up) so they
share one pass; those that cannot share a kernel are stacked, sharing the quantized activation.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from lamina.gguf import TensorInfo
from lamina.quants import dequantize

from .activations import round_activations
from .floats import PackedFloatExact
from .generic import PackedBlocks, PackedFloat
from .kquants import PACKERS as KQUANT_PACKERS
from .legacy import PACKERS as LEGACY_PACKERS
from .legacy import Activations, PackedLegacy

PACKERS = {**LEGACY_PACKERS, **KQUANT_PACKERS,
           "F16": lambda raws, n: PackedFloatExact(raws, n, "F16"),
           "F32": lambda raws, n: PackedFloatExact(raws, n, "F32")}
FLOAT_TYPES = ("F32", "F16", "BF16")

# At or below this many input rows the (inexact types') matrix-vector kernels beat dequantize + BLAS.
SMALL_BATCH = 4
# Largest float32 tile dequantized for one BLAS product in prompt processing.
TILE_BYTES = 32 << 20


_mode = threading.local()


@contextlib.contextmanager
def rows_computed_alone():
    """Within this block every input row of a :class:`Linear` gets the arithmetic it would get as a
    batch of one token, however many rows are multiplied together.

    llama.cpp's kernels sum in an order that depends on the batch size (see :mod:`.ggml_reference`),
    so a token decoded beside other sequences' tokens would otherwise get other bits than decoded
    alone. A server decoding one token of each of several requests in one pass uses this mode, and
    each request's text is then the one it gets alone; the weights are still read once for all rows.
    """
    previous = getattr(_mode, "alone", False)
    _mode.alone = True
    try:
        yield
    finally:
        _mode.alone = previous


def rows_alone() -> bool:
    """Whether :func:`rows_computed_alone` is in effect on this thread."""
    return getattr(_mode, "alone", False)


def set_num_threads(n: int | None) -> None:
    """Limit every parallel region (Numba's and the BLAS library's) to ``n`` threads.

    Parallel loops are handed out one chunk at a time (Numba's TBB layer steals work), so a
    thread the OS pauses delays only its current chunk, not the whole step: on a busy machine
    that is the difference between ~40 ms and ~300 ms per generated token.
    """
    import numba

    numba.set_parallel_chunksize(1)
    if not n or n < 1:
        return
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(min(int(n), numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(limits=int(n))


class _Scratch:
    """One reusable float32 buffer for dequantized tiles (page faults on a fresh 32 MiB cost milliseconds)."""

    buf = np.empty(0, np.float32)

    @classmethod
    def get(cls, rows: int, cols: int) -> np.ndarray:
        if cls.buf.size < rows * cols:
            cls.buf = np.empty(rows * cols, np.float32)
        return cls.buf[: rows * cols].reshape(rows, cols)


def pack_weights(tensors: list[TensorInfo]):
    """Repack one weight, or several of the same type and row length stacked (fused)."""
    type_name = tensors[0].type
    n = int(tensors[0].shape[0])
    raws = [t.data.reshape(int(np.prod(t.shape[1:])), -1) for t in tensors]
    if type_name in PACKERS:
        return PACKERS[type_name](raws, n)
    if type_name in FLOAT_TYPES:
        return PackedFloat(raws, n, type_name)
    return PackedBlocks(raws, n, type_name)


class Linear:
    """``y = x @ W.T + b`` for weights of ``out_features`` rows of ``in_features`` values in any ggml type.

    Given several weights (same type and input size), their outputs are concatenated;
    :meth:`split` cuts a result back into the parts.
    """

    def __init__(self, weight: TensorInfo | list[TensorInfo], bias: np.ndarray | list | None = None):
        weights = list(weight) if isinstance(weight, (list, tuple)) else [weight]
        biases = list(bias) if isinstance(bias, (list, tuple)) else [bias]
        first = weights[0]
        for w in weights:
            if len(w.shape) != 2:
                raise ValueError(f"{w.name}: a linear weight must be 2-D, got shape {list(w.shape)}")
            if w.type != first.type or w.shape[0] != first.shape[0]:
                raise ValueError(f"cannot fuse {w.name} ({w.type}, {w.shape[0]} inputs) with {first.name} "
                                 f"({first.type}, {first.shape[0]} inputs)")
        self.name = "+".join(w.name for w in weights)
        self.type = first.type
        self.in_features = int(first.shape[0])
        self.out_sizes = [int(w.shape[1]) for w in weights]
        self.out_features = sum(self.out_sizes)
        self.packed = pack_weights(weights)
        self.owns_copy = not isinstance(self.packed, PackedBlocks)  # the file's pages are no longer needed
        if any(b is not None for b in biases):
            parts = [np.zeros(n, np.float32) if b is None else np.asarray(b, np.float32).reshape(-1)
                     for b, n in zip(biases, self.out_sizes)]
            for p, n, w in zip(parts, self.out_sizes, weights):
                if p.shape[0] != n:
                    raise ValueError(f"{w.name}: bias has {p.shape[0]} values for {n} outputs")
            self.bias = np.concatenate(parts)
        else:
            self.bias = None

    @property
    def activation(self) -> str | None:
        return self.packed.activation

    def dequantized(self) -> np.ndarray:
        out = np.empty((self.out_features, self.in_features), np.float32)
        self.packed.dequantize(0, out)
        return out

    def __call__(self, x: np.ndarray, prepared=None) -> np.ndarray:
        """``x @ W.T + b``; ``prepared``: the activation already quantized for this weight's kernel."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape[0] == 0:
            return np.zeros((0, self.out_features), np.float32)
        alone = rows_alone()
        if prepared is not None:
            y = self.packed.matmul(x, prepared)  # Q8_0/Q8_1 kernels: the same bits for any batch size
        elif hasattr(self.packed, "matmul"):
            y = self.packed.matmul(x, alone=alone)  # llama.cpp's exact arithmetic, any number of rows
        elif x.shape[0] <= SMALL_BATCH or alone:
            y = self.packed.matvec(x, alone=alone)  # rounds the activation itself
        else:
            x = round_activations(x, self.activation)
            y = np.empty((x.shape[0], self.out_features), np.float32)
            tile = max(1, min(self.out_features, TILE_BYTES // (4 * self.in_features)))
            for r0 in range(0, self.out_features, tile):
                rows = min(tile, self.out_features - r0)
                w = _Scratch.get(rows, self.in_features)
                self.packed.dequantize(r0, w)
                np.matmul(x, w.T, out=y[:, r0:r0 + rows])
        if self.bias is not None:
            y += self.bias
        return y

    def split(self, y: np.ndarray) -> list[np.ndarray]:
        """The outputs of each fused weight, as views of ``y``."""
        return split_columns(y, self.out_sizes)

    def as_expert(self) -> None:
        """Compute as ggml's mul_mat_id does for mixture-of-experts weights: a kernel whose order
        differs there (the float types', which never take tinyBLAS) switches to that order."""
        if hasattr(self.packed, "as_expert"):
            self.packed.as_expert()


def split_columns(y: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    out, start = [], 0
    for n in sizes:
        out.append(y[:, start:start + n])
        start += n
    return out


class LinearStack:
    """Weights that cannot share one kernel (different types) behind :class:`Linear`'s interface.
    Parts that read the activation quantized the same way (the Q8_0/Q8_1 formats) share one
    quantization of it."""

    def __init__(self, parts: list[Linear]):
        self.parts = parts
        self.out_sizes = [n for p in parts for n in p.out_sizes]  # one per weight, fused parts included
        self.out_features = sum(self.out_sizes)
        self.owns_copy = all(p.owns_copy for p in parts)
        legacy = [p for p in parts if isinstance(p.packed, PackedLegacy)]
        self._shared = len(legacy) > 1
        self._with_sum = any(p.packed.activation == "q8_1" for p in legacy)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        prepared = None
        if self._shared and x.shape[0]:
            prepared = Activations(x, 0, self._with_sum)
        return np.concatenate([p(x, prepared if isinstance(p.packed, PackedLegacy) else None) for p in self.parts],
                              axis=1)

    def split(self, y: np.ndarray) -> list[np.ndarray]:
        return split_columns(y, self.out_sizes)

    def as_expert(self) -> None:
        for part in self.parts:
            part.as_expert()


def _same_kernel(a: TensorInfo, b: TensorInfo) -> bool:
    """Whether two weights can share one kernel call and still get llama.cpp's arithmetic each:
    same type and input size, and for the types ggml repacks when their row count is a multiple
    of 8 (Q4_0, Q4_K), the same answer to that."""
    if a.type != b.type or a.shape[0] != b.shape[0]:
        return False
    return a.type not in REPACKED_BY_ROWS or (int(a.shape[1]) % 8 == 0) == (int(b.shape[1]) % 8 == 0)


REPACKED_BY_ROWS = ("Q4_0", "Q4_K")


def fused_linear(weights: list[TensorInfo], biases: list[np.ndarray | None]) -> Linear | LinearStack:
    """One layer computing several projections of the same input (q/k/v, or gate/up): consecutive
    weights that can share a kernel are fused, the runs stacked."""
    runs: list[list[int]] = []
    for i, w in enumerate(weights):
        if runs and _same_kernel(weights[runs[-1][0]], w):
            runs[-1].append(i)
        else:
            runs.append([i])
    if len(runs) == 1:
        return Linear(weights, biases)
    return LinearStack([Linear([weights[i] for i in run], [biases[i] for i in run]) for run in runs])


def embedding_rows(weight: TensorInfo, ids: np.ndarray) -> np.ndarray:
    """Rows ``ids`` of an embedding table (ggml shape (n_embd, n_vocab)), as float32 (len(ids), n_embd)."""
    n_embd = int(weight.shape[0])
    rows = weight.data.reshape(int(weight.shape[1]), -1)[np.asarray(ids, dtype=np.int64)]
    return dequantize(rows, weight.type, (len(ids), n_embd))

"""Kernels for the 32-element block formats Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.

At load time each weight is repacked into a kernel-friendly layout of the same size
as the file's blocks: the quants of a row contiguous (``qs``), the float16 scales,
minimums and fifth bits in arrays of their own. A matrix-vector product then walks
each row's quants in one vectorizable loop against an activation pre-split into the
halves that the low and high nibbles multiply, with the block scale gathered per
element; minimums and offsets are folded in per block through the activation's block
sums. The kernels take the raw activation and round it as ggml's Q8_0 dot product does
(:mod:`.activations`). Prompt batches dequantize rows into float32 tiles for a BLAS product.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .activations import round_rows_q8_0, split_halves
from .common import F16_TO_F32, F32, FAST, ROW_CHUNK, and32, n_chunks, or32, shl32, shr32


def _fields(raws: list[np.ndarray], n: int, block_bytes: int, spans: dict[str, tuple[int, int]]):
    """Cut each block into named byte ranges and stack the rows of all ``raws`` (a fused weight)."""
    nb = n // 32
    blocks = [r.reshape(-1, nb, block_bytes) for r in raws]
    return {name: np.ascontiguousarray(np.concatenate([b[:, :, lo:hi] for b in blocks]) if len(blocks) > 1
                                       else blocks[0][:, :, lo:hi]).reshape(sum(b.shape[0] for b in blocks), -1)
            for name, (lo, hi) in spans.items()}


# -- matrix-vector kernels ------------------------------------------------------------------


@njit(cache=True, parallel=True, fastmath=FAST, error_model="numpy")
def _mv_q4(qs, d, m, has_min, x, out):
    xr = np.empty_like(x)
    round_rows_q8_0(x, xr)
    xlo, xhi, xsum = split_halves(xr, 32, 32)
    rows, half = qs.shape
    nb = d.shape[1]
    for c in prange(n_chunks(rows)):
        dv = np.empty(nb, F32)
        mv = np.empty(nb, F32)
        for r in range(c * ROW_CHUNK, min(rows, (c + 1) * ROW_CHUNK)):
            for b in range(nb):
                dv[b] = F16_TO_F32[d[r, b]]
                mv[b] = F16_TO_F32[m[r, b]] if has_min else F32(-8.0) * dv[b]
            for i in range(xlo.shape[0]):
                macc = F32(0.0)
                for b in range(nb):
                    macc += mv[b] * xsum[i, b]
                acc = F32(0.0)
                for j in range(half):
                    q = qs[r, j]
                    acc += dv[j >> 4] * (F32(and32(q, 15)) * xlo[i, j] + F32(shr32(q, 4)) * xhi[i, j])
                out[i, r] = acc + macc


@njit(cache=True, parallel=True, fastmath=FAST, error_model="numpy")
def _mv_q5(qs, qh, d, m, has_min, x, out):
    xr = np.empty_like(x)
    round_rows_q8_0(x, xr)
    xlo, xhi, xsum = split_halves(xr, 32, 32)
    rows, half = qs.shape
    nb = d.shape[1]
    for c in prange(n_chunks(rows)):
        dv = np.empty(nb, F32)
        mv = np.empty(nb, F32)
        for r in range(c * ROW_CHUNK, min(rows, (c + 1) * ROW_CHUNK)):
            for b in range(nb):
                dv[b] = F16_TO_F32[d[r, b]]
                mv[b] = F16_TO_F32[m[r, b]] if has_min else F32(-16.0) * dv[b]
            for i in range(xlo.shape[0]):
                macc = F32(0.0)
                for b in range(nb):
                    macc += mv[b] * xsum[i, b]
                acc = F32(0.0)
                for j in range(half):
                    q = qs[r, j]
                    h = qh[r, j >> 4]
                    s = and32(j, 15)
                    lo = or32(and32(q, 15), shl32(and32(shr32(h, s), 1), 4))
                    hi = or32(shr32(q, 4), shl32(and32(shr32(h, s + 16), 1), 4))
                    acc += dv[j >> 4] * (F32(lo) * xlo[i, j] + F32(hi) * xhi[i, j])
                out[i, r] = acc + macc


@njit(cache=True, parallel=True, fastmath=FAST, error_model="numpy")
def _mv_q8_0(qs, d, x_in, out):
    x = np.empty_like(x_in)
    round_rows_q8_0(x_in, x)
    rows, n = qs.shape
    nb = d.shape[1]
    for c in prange(n_chunks(rows)):
        dv = np.empty(nb, F32)
        for r in range(c * ROW_CHUNK, min(rows, (c + 1) * ROW_CHUNK)):
            for b in range(nb):
                dv[b] = F16_TO_F32[d[r, b]]
            for i in range(x.shape[0]):
                acc = F32(0.0)
                for j in range(n):
                    acc += dv[j >> 5] * F32(qs[r, j]) * x[i, j]
                out[i, r] = acc


# -- dequantize rows into float32 tiles (same values as lamina.quants.dequantize) -------------------


@njit(cache=True, parallel=True, error_model="numpy")
def _deq_q4(qs, d, m, has_min, r0, out):
    n_rows = out.shape[0]
    nb = d.shape[1]
    for t in prange(n_rows * nb):
        i = t // nb
        b = t % nb
        r = r0 + i
        dd = F16_TO_F32[d[r, b]]
        for j in range(16):
            q = qs[r, b * 16 + j]
            if has_min:
                mm = F16_TO_F32[m[r, b]]
                out[i, b * 32 + j] = F32(q & 15) * dd + mm
                out[i, b * 32 + 16 + j] = F32(q >> 4) * dd + mm
            else:
                out[i, b * 32 + j] = F32(np.int32(q & 15) - 8) * dd
                out[i, b * 32 + 16 + j] = F32(np.int32(q >> 4) - 8) * dd


@njit(cache=True, parallel=True, error_model="numpy")
def _deq_q5(qs, qh, d, m, has_min, r0, out):
    n_rows = out.shape[0]
    nb = d.shape[1]
    for t in prange(n_rows * nb):
        i = t // nb
        b = t % nb
        r = r0 + i
        dd = F16_TO_F32[d[r, b]]
        h = qh[r, b]
        for j in range(16):
            q = np.uint32(qs[r, b * 16 + j])
            lo = (q & 15) | (((h >> np.uint32(j)) & 1) << 4)
            hi = (q >> 4) | (((h >> np.uint32(j + 16)) & 1) << 4)
            if has_min:
                mm = F16_TO_F32[m[r, b]]
                out[i, b * 32 + j] = F32(lo) * dd + mm
                out[i, b * 32 + 16 + j] = F32(hi) * dd + mm
            else:
                out[i, b * 32 + j] = F32(np.int32(lo) - 16) * dd
                out[i, b * 32 + 16 + j] = F32(np.int32(hi) - 16) * dd


@njit(cache=True, parallel=True, error_model="numpy")
def _deq_q8_0(qs, d, r0, out):
    n_rows, n = out.shape
    for i in prange(n_rows):
        r = r0 + i
        for j in range(n):
            out[i, j] = F32(qs[r, j]) * F16_TO_F32[d[r, j >> 5]]


# -- the packed weights ------------------------------------------------------------------------------


class PackedQ4:
    """Q4_0 (``q - 8``) and Q4_1 (``q·d + m``) weights."""

    activation = "q8_0"

    def __init__(self, raws: list[np.ndarray], n: int, has_min: bool):
        self.n = n
        self.has_min = has_min
        size = 20 if has_min else 18
        spans = {"d": (0, 2), "m": (2, 4), "qs": (4, 20)} if has_min else {"d": (0, 2), "qs": (2, 18)}
        f = _fields(raws, n, size, spans)
        self.qs = f["qs"]
        self.d = f["d"].view(np.uint16)
        self.m = f["m"].view(np.uint16) if has_min else self.d
        self.rows = self.qs.shape[0]

    def matvec(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], self.rows), np.float32)
        _mv_q4(self.qs, self.d, self.m, self.has_min, x, out)
        return out

    def dequantize(self, r0: int, out: np.ndarray) -> None:
        _deq_q4(self.qs, self.d, self.m, self.has_min, r0, out)


class PackedQ5:
    """Q5_0 (``q - 16``) and Q5_1 (``q·d + m``): a fifth bit per value from a 32-bit word per block."""

    activation = "q8_0"

    def __init__(self, raws: list[np.ndarray], n: int, has_min: bool):
        self.n = n
        self.has_min = has_min
        size = 24 if has_min else 22
        spans = ({"d": (0, 2), "m": (2, 4), "qh": (4, 8), "qs": (8, 24)} if has_min
                 else {"d": (0, 2), "qh": (2, 6), "qs": (6, 22)})
        f = _fields(raws, n, size, spans)
        self.qs = f["qs"]
        self.qh = f["qh"].view(np.uint32)
        self.d = f["d"].view(np.uint16)
        self.m = f["m"].view(np.uint16) if has_min else self.d
        self.rows = self.qs.shape[0]

    def matvec(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], self.rows), np.float32)
        _mv_q5(self.qs, self.qh, self.d, self.m, self.has_min, x, out)
        return out

    def dequantize(self, r0: int, out: np.ndarray) -> None:
        _deq_q5(self.qs, self.qh, self.d, self.m, self.has_min, r0, out)


class PackedQ8_0:
    activation = "q8_0"

    def __init__(self, raws: list[np.ndarray], n: int):
        self.n = n
        f = _fields(raws, n, 34, {"d": (0, 2), "qs": (2, 34)})
        self.qs = f["qs"].view(np.int8)
        self.d = f["d"].view(np.uint16)
        self.rows = self.qs.shape[0]

    def matvec(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], self.rows), np.float32)
        _mv_q8_0(self.qs, self.d, x, out)
        return out

    def dequantize(self, r0: int, out: np.ndarray) -> None:
        _deq_q8_0(self.qs, self.d, r0, out)


PACKERS = {
    "Q4_0": lambda raws, n: PackedQ4(raws, n, has_min=False),
    "Q4_1": lambda raws, n: PackedQ4(raws, n, has_min=True),
    "Q5_0": lambda raws, n: PackedQ5(raws, n, has_min=False),
    "Q5_1": lambda raws, n: PackedQ5(raws, n, has_min=True),
    "Q8_0": PackedQ8_0,
}

"""Kernels for the k-quant super-block formats Q4_K, Q5_K and Q6_K.

Repacked like the legacy formats: each row's quants contiguous, the super-block
headers (float16 ``d``/``dmin``, packed 6-bit sub-block scales, fifth or high bits) in
arrays of their own, the same bytes as the file. A row's sub-block scales and minimums
are decoded into small float buffers first, then one vectorizable loop walks the row.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .activations import round_rows_q8_K, split_halves
from .common import F16_TO_F32, F32, FAST, ROW_CHUNK, and32, n_chunks, or32, shl32, shr32

QK_K = 256


def _fields(raws, n, block_bytes, spans):
    nb = n // QK_K
    blocks = [r.reshape(-1, nb, block_bytes) for r in raws]
    out = {}
    for name, (lo, hi) in spans.items():
        parts = [b[:, :, lo:hi] for b in blocks]
        joined = np.concatenate(parts) if len(parts) > 1 else parts[0]
        out[name] = np.ascontiguousarray(joined).reshape(joined.shape[0], -1)
    return out


@njit(cache=True, error_model="numpy", inline="always")
def _scale_min_k4(sc, r, base, j):
    if j < 4:
        return np.int32(sc[r, base + j] & 63), np.int32(sc[r, base + j + 4] & 63)
    s = np.int32(sc[r, base + j + 4] & 0xF) | (np.int32(sc[r, base + j - 4] >> 6) << 4)
    m = np.int32(sc[r, base + j + 4] >> 4) | (np.int32(sc[r, base + j] >> 6) << 4)
    return s, m


@njit(cache=True, error_model="numpy", inline="always")
def _row_scales_k4(d, dmin, sc, r, slo, shi, mins):
    """Sub-block scales for the low/high nibbles of each 32-byte group, and minimums per 32 values."""
    for sb in range(d.shape[1]):
        dd = F16_TO_F32[d[r, sb]]
        dm = F16_TO_F32[dmin[r, sb]]
        for c in range(4):
            s0, m0 = _scale_min_k4(sc, r, sb * 12, 2 * c)
            s1, m1 = _scale_min_k4(sc, r, sb * 12, 2 * c + 1)
            slo[sb * 4 + c] = dd * F32(s0)
            shi[sb * 4 + c] = dd * F32(s1)
            mins[sb * 8 + 2 * c] = dm * F32(m0)
            mins[sb * 8 + 2 * c + 1] = dm * F32(m1)


@njit(cache=True, parallel=True, fastmath=FAST, error_model="numpy")
def _mv_q4_K(qs, d, dmin, sc, x, out):
    xr = np.empty_like(x)
    round_rows_q8_K(x, xr)
    xlo, xhi, xsum = split_halves(xr, 64, 32)
    rows, half = qs.shape
    nsb = d.shape[1]
    for c in prange(n_chunks(rows)):
        slo = np.empty(nsb * 4, F32)
        shi = np.empty(nsb * 4, F32)
        mins = np.empty(nsb * 8, F32)
        for r in range(c * ROW_CHUNK, min(rows, (c + 1) * ROW_CHUNK)):
            _row_scales_k4(d, dmin, sc, r, slo, shi, mins)
            for i in range(xlo.shape[0]):
                macc = F32(0.0)
                for g in range(nsb * 8):
                    macc += mins[g] * xsum[i, g]
                acc = F32(0.0)
                for j in range(half):
                    q = qs[r, j]
                    acc += slo[j >> 5] * F32(and32(q, 15)) * xlo[i, j] + shi[j >> 5] * F32(shr32(q, 4)) * xhi[i, j]
                out[i, r] = acc - macc


@njit(cache=True, parallel=True, fastmath=FAST, error_model="numpy")
def _mv_q5_K(qs, qh, d, dmin, sc, x, out):
    xr = np.empty_like(x)
    round_rows_q8_K(x, xr)
    xlo, xhi, xsum = split_halves(xr, 64, 32)
    rows, half = qs.shape
    nsb = d.shape[1]
    for c in prange(n_chunks(rows)):
        slo = np.empty(nsb * 4, F32)
        shi = np.empty(nsb * 4, F32)
        mins = np.empty(nsb * 8, F32)
        for r in range(c * ROW_CHUNK, min(rows, (c + 1) * ROW_CHUNK)):
            _row_scales_k4(d, dmin, sc, r, slo, shi, mins)
            for i in range(xlo.shape[0]):
                macc = F32(0.0)
                for g in range(nsb * 8):
                    macc += mins[g] * xsum[i, g]
                acc = F32(0.0)
                for j in range(half):
                    q = qs[r, j]
                    h = qh[r, (j >> 7) * 32 + (j & 31)]
                    s = shl32(and32(shr32(j, 5), 3), 1)
                    lo = or32(and32(q, 15), shl32(and32(shr32(h, s), 1), 4))
                    hi = or32(shr32(q, 4), shl32(and32(shr32(h, s + 1), 1), 4))
                    acc += slo[j >> 5] * F32(lo) * xlo[i, j] + shi[j >> 5] * F32(hi) * xhi[i, j]
                out[i, r] = acc - macc


@njit(cache=True, parallel=True, fastmath=FAST, error_model="numpy")
def _mv_q6_K(ql, qh, d, sc, x, out):
    xr = np.empty_like(x)
    round_rows_q8_K(x, xr)
    xlo, xhi, xsum = split_halves(xr, 128, 16)
    rows, half = ql.shape
    nsb = d.shape[1]
    for c in prange(n_chunks(rows)):
        s16 = np.empty(nsb * 16, F32)
        for r in range(c * ROW_CHUNK, min(rows, (c + 1) * ROW_CHUNK)):
            for sb in range(nsb):
                dd = F16_TO_F32[d[r, sb]]
                for k in range(16):
                    s16[sb * 16 + k] = dd * F32(sc[r, sb * 16 + k])
            for i in range(xlo.shape[0]):
                off = F32(0.0)
                for g in range(nsb * 16):
                    off += s16[g] * xsum[i, g]
                acc = F32(0.0)
                for j in range(half):
                    # byte j of ql: 128-value half hh, position p in it; low nibble -> value p, high -> p + 64
                    hh = j >> 6
                    p = j & 63
                    q = ql[r, j]
                    h = qh[r, hh * 32 + (p & 31)]
                    s = shl32(shr32(p, 5), 1)
                    lo = or32(and32(q, 15), shl32(and32(shr32(h, s), 3), 4))
                    hi = or32(shr32(q, 4), shl32(and32(shr32(h, s + 4), 3), 4))
                    acc += s16[hh * 8 + (p >> 4)] * F32(lo) * xlo[i, j] + s16[hh * 8 + 4 + (p >> 4)] * F32(hi) * xhi[i, j]
                out[i, r] = acc - F32(32.0) * off


@njit(cache=True, parallel=True, error_model="numpy")
def _deq_k4(qs, qh, has_qh, d, dmin, sc, r0, out):
    n_rows = out.shape[0]
    nsb = d.shape[1]
    for t in prange(n_rows * nsb):
        i = t // nsb
        sb = t % nsb
        r = r0 + i
        dd = F16_TO_F32[d[r, sb]]
        dm = F16_TO_F32[dmin[r, sb]]
        for c in range(4):
            s0, m0 = _scale_min_k4(sc, r, sb * 12, 2 * c)
            s1, m1 = _scale_min_k4(sc, r, sb * 12, 2 * c + 1)
            d0 = dd * F32(s0)
            d1 = dd * F32(s1)
            n0 = dm * F32(m0)
            n1 = dm * F32(m1)
            for l in range(32):
                q = np.uint32(qs[r, sb * 128 + c * 32 + l])
                lo = q & 15
                hi = q >> 4
                if has_qh:
                    h = np.uint32(qh[r, sb * 32 + l])
                    lo |= ((h >> np.uint32(2 * c)) & 1) << 4
                    hi |= ((h >> np.uint32(2 * c + 1)) & 1) << 4
                out[i, sb * 256 + c * 64 + l] = d0 * F32(lo) - n0
                out[i, sb * 256 + c * 64 + 32 + l] = d1 * F32(hi) - n1


@njit(cache=True, parallel=True, error_model="numpy")
def _deq_q6_K(ql, qh, d, sc, r0, out):
    n_rows = out.shape[0]
    nsb = d.shape[1]
    for t in prange(n_rows * nsb):
        i = t // nsb
        sb = t % nsb
        r = r0 + i
        dd = F16_TO_F32[d[r, sb]]
        for hh in range(2):
            for l in range(32):
                a = np.int32(ql[r, sb * 128 + hh * 64 + l])
                b = np.int32(ql[r, sb * 128 + hh * 64 + l + 32])
                h = np.int32(qh[r, sb * 64 + hh * 32 + l])
                isc = sb * 16 + hh * 8 + l // 16
                y = sb * 256 + hh * 128
                out[i, y + l] = dd * F32(sc[r, isc]) * F32(((a & 0xF) | (((h >> 0) & 3) << 4)) - 32)
                out[i, y + l + 32] = dd * F32(sc[r, isc + 2]) * F32(((b & 0xF) | (((h >> 2) & 3) << 4)) - 32)
                out[i, y + l + 64] = dd * F32(sc[r, isc + 4]) * F32(((a >> 4) | (((h >> 4) & 3) << 4)) - 32)
                out[i, y + l + 96] = dd * F32(sc[r, isc + 6]) * F32(((b >> 4) | (((h >> 6) & 3) << 4)) - 32)


class PackedK4:
    """Q4_K, and Q5_K with its fifth bits (``qh``)."""

    activation = "q8_K"

    def __init__(self, raws, n, with_qh: bool):
        self.n = n
        self.with_qh = with_qh
        spans = {"d": (0, 2), "dmin": (2, 4), "sc": (4, 16)}
        spans.update({"qh": (16, 48), "qs": (48, 176)} if with_qh else {"qs": (16, 144)})
        f = _fields(raws, n, 176 if with_qh else 144, spans)
        self.qs = f["qs"]
        self.qh = f["qh"] if with_qh else np.zeros((1, 1), np.uint8)
        self.d = f["d"].view(np.uint16)
        self.dmin = f["dmin"].view(np.uint16)
        self.sc = f["sc"]
        self.rows = self.qs.shape[0]

    def matvec(self, x):
        out = np.empty((x.shape[0], self.rows), np.float32)
        if self.with_qh:
            _mv_q5_K(self.qs, self.qh, self.d, self.dmin, self.sc, x, out)
        else:
            _mv_q4_K(self.qs, self.d, self.dmin, self.sc, x, out)
        return out

    def dequantize(self, r0, out):
        _deq_k4(self.qs, self.qh, self.with_qh, self.d, self.dmin, self.sc, r0, out)


class PackedQ6_K:
    activation = "q8_K"

    def __init__(self, raws, n):
        self.n = n
        f = _fields(raws, n, 210, {"ql": (0, 128), "qh": (128, 192), "sc": (192, 208), "d": (208, 210)})
        self.ql = f["ql"]
        self.qh = f["qh"]
        self.sc = f["sc"].view(np.int8)
        self.d = f["d"].view(np.uint16)
        self.rows = self.ql.shape[0]

    def matvec(self, x):
        out = np.empty((x.shape[0], self.rows), np.float32)
        _mv_q6_K(self.ql, self.qh, self.d, self.sc, x, out)
        return out

    def dequantize(self, r0, out):
        _deq_q6_K(self.ql, self.qh, self.d, self.sc, r0, out)


PACKERS = {
    "Q4_K": lambda raws, n: PackedK4(raws, n, with_qh=False),
    "Q5_K": lambda raws, n: PackedK4(raws, n, with_qh=True),
    "Q6_K": PackedQ6_K,
}

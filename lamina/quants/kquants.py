"""The k-quants: 256-element super-blocks of 16 or 32-element sub-blocks (Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K).

Each super-block holds an fp16 scale (and for Q2_K/Q4_K/Q5_K an fp16 scale of the
minimums) plus 4-, 6- or 8-bit sub-block scales. Without importance weights ggml
uses ``quantize_row_*_ref`` (make_qkx2_quants, make_q3_quants, make_qx_quants);
with them, the ``*_impl`` searches (make_qkx3_quants, make_qx_quants with weights,
then make_qp_quants for the sub-block scales). Both paths are reproduced here,
each rows-parallel, with float32 arithmetic in ggml's order.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from lamina.gguf.types import QK_K

from .common import (
    F32,
    GROUP_MAX_EPS,
    bits_f32,
    check_block_dtype,
    f32_bits,
    field_offset,
    fp32_to_fp16,
    load_f16,
    make_q3_quants,
    make_qkx_quants_batch,
    make_qp_quants,
    make_qx_quants,
    make_qx_quants_batch,
    nearest_int,
    new_output,
    store_f16,
    weights_or_empty,
)
from .registry import register

RELEASES_GIL = True  # every kernel here is compiled nogil: lamina quantize may run them in several threads

BLOCK_Q2_K = check_block_dtype(
    [("scales", "u1", (16,)), ("qs", "u1", (64,)), ("d", "<f2"), ("dmin", "<f2")], 84)
BLOCK_Q3_K = check_block_dtype(
    [("hmask", "u1", (32,)), ("qs", "u1", (64,)), ("scales", "u1", (12,)), ("d", "<f2")], 110)
BLOCK_Q4_K = check_block_dtype(
    [("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", (12,)), ("qs", "u1", (128,))], 144)
BLOCK_Q5_K = check_block_dtype(
    [("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", (12,)), ("qh", "u1", (32,)), ("qs", "u1", (128,))], 176)
BLOCK_Q6_K = check_block_dtype(
    [("ql", "u1", (128,)), ("qh", "u1", (64,)), ("scales", "i1", (16,)), ("d", "<f2")], 210)
BLOCK_Q8_K = check_block_dtype([("d", "<f4"), ("qs", "i1", (256,)), ("bsums", "<i2", (16,))], 292)

Q2_QS, Q2_D, Q2_DMIN = (field_offset(BLOCK_Q2_K, f) for f in ("qs", "d", "dmin"))
Q3_QS, Q3_SC, Q3_D = (field_offset(BLOCK_Q3_K, f) for f in ("qs", "scales", "d"))
Q4_SC, Q4_QS = field_offset(BLOCK_Q4_K, "scales"), field_offset(BLOCK_Q4_K, "qs")
Q5_SC, Q5_QH, Q5_QS = (field_offset(BLOCK_Q5_K, f) for f in ("scales", "qh", "qs"))
Q6_QH, Q6_SC, Q6_D = (field_offset(BLOCK_Q6_K, f) for f in ("qh", "scales", "d"))
Q8K_QS, Q8K_BSUMS = field_offset(BLOCK_Q8_K, "qs"), field_offset(BLOCK_Q8_K, "bsums")


# -- shared pieces -------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def scale_min_k4(j, q, b):
    """get_scale_min_k4: the 6-bit scale and min of sub-block j from the 12 packed bytes at q[b:]."""
    if j < 4:
        return np.int64(q[b + j]) & 63, np.int64(q[b + j + 4]) & 63
    d = (np.int64(q[b + j + 4]) & 0xF) | ((np.int64(q[b + j - 4]) >> 6) << 4)
    m = (np.int64(q[b + j + 4]) >> 4) | ((np.int64(q[b + j]) >> 6) << 4)
    return d, m


@njit(cache=True, error_model="numpy")
def _pack_scale_min_k4(y, b, j, ls, lm):
    if j < 4:
        y[b + j] = np.uint8(ls)
        y[b + j + 4] = np.uint8(lm)
    else:
        y[b + j + 4] = np.uint8((ls & 0xF) | ((lm & 0xF) << 4))
        y[b + j - 4] = np.uint8(np.int64(y[b + j - 4]) | ((ls >> 4) << 6))
        y[b + j] = np.uint8(np.int64(y[b + j]) | ((lm >> 4) << 6))


@njit(cache=True, error_model="numpy")
def _q3_scale(y, b, j):
    """The signed 6-bit scale of Q3_K sub-block j (packed at y[b:b+12])."""
    if j < 8:
        sc = np.int64(y[b + j]) & 0xF
    else:
        sc = np.int64(y[b + j - 8]) >> 4
    return (sc | (((np.int64(y[b + 8 + j % 4]) >> (2 * (j // 4))) & 3) << 4)) - 32


@njit(cache=True, error_model="numpy")
def _pack_q3_scale(y, b, j, l):
    if j < 8:
        y[b + j] = np.uint8(l & 0xF)
    else:
        y[b + j - 8] = np.uint8(np.int64(y[b + j - 8]) | ((l & 0xF) << 4))
    l >>= 4
    y[b + j % 4 + 8] = np.uint8(np.int64(y[b + j % 4 + 8]) | (l << (2 * (j // 4))))


@njit(cache=True, error_model="numpy")
def _pack_2bit(L, y, b):
    """Four 2-bit levels per byte, the layout shared by Q2_K and Q3_K."""
    for j in range(0, QK_K, 128):
        for l in range(32):
            y[b + j // 4 + l] = np.uint8(np.int64(L[j + l]) | (np.int64(L[j + l + 32]) << 2)
                                         | (np.int64(L[j + l + 64]) << 4) | (np.int64(L[j + l + 96]) << 6))


@njit(cache=True, error_model="numpy")
def _columns(xb, size, out):
    """Sub-blocks of ``size`` values as the columns of ``out`` (size, n_sub): the batched searches' layout."""
    for j in range(out.shape[1]):
        for i in range(size):
            out[i, j] = xb[size * j + i]


@njit(cache=True, error_model="numpy")
def _uncolumns(cols, size, L):
    for j in range(cols.shape[1]):
        for i in range(size):
            L[size * j + i] = cols[i, j]


# -- dequantize -----------------------------------------------------------------------------------


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _dequant_q2_K(raw, out):
    for ib in prange(raw.size // 84):
        b = ib * 84
        d = load_f16(raw, b + Q2_D)
        dmin = load_f16(raw, b + Q2_DMIN)
        o = ib * QK_K
        for n in range(0, QK_K, 128):
            q = b + Q2_QS + n // 4
            for j in range(4):
                shift = 2 * j
                for half in range(2):
                    sc = np.int64(raw[b + n // 16 + 2 * j + half])
                    dl = d * F32(sc & 0xF)
                    ml = dmin * F32(sc >> 4)
                    base = o + n + 32 * j + 16 * half
                    for l in range(16):
                        v = (np.int64(raw[q + 16 * half + l]) >> shift) & 3
                        out[base + l] = dl * F32(v) - ml


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _dequant_q3_K(raw, out):
    for ib in prange(raw.size // 110):
        b = ib * 110
        d_all = load_f16(raw, b + Q3_D)
        o = ib * QK_K
        for n in range(0, QK_K, 128):
            q = b + Q3_QS + n // 4
            for j in range(4):
                shift = 2 * j
                m = 1 << (4 * (n // 128) + j)
                for half in range(2):
                    dl = d_all * F32(_q3_scale(raw, b + Q3_SC, n // 16 + 2 * j + half))
                    base = o + n + 32 * j + 16 * half
                    for l in range(16):
                        v = (np.int64(raw[q + 16 * half + l]) >> shift) & 3
                        if not (np.int64(raw[b + 16 * half + l]) & m):
                            v -= 4
                        out[base + l] = dl * F32(v)


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _dequant_q4_K(raw, out):
    for ib in prange(raw.size // 144):
        b = ib * 144
        d = load_f16(raw, b)
        dmin = load_f16(raw, b + 2)
        o = ib * QK_K
        for j in range(4):
            sc1, m1i = scale_min_k4(2 * j, raw, b + Q4_SC)
            sc2, m2i = scale_min_k4(2 * j + 1, raw, b + Q4_SC)
            d1 = d * F32(sc1)
            m1 = dmin * F32(m1i)
            d2 = d * F32(sc2)
            m2 = dmin * F32(m2i)
            q = b + Q4_QS + 32 * j
            for l in range(32):
                v = np.int64(raw[q + l])
                out[o + 64 * j + l] = d1 * F32(v & 0xF) - m1
                out[o + 64 * j + 32 + l] = d2 * F32(v >> 4) - m2


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _dequant_q5_K(raw, out):
    for ib in prange(raw.size // 176):
        b = ib * 176
        d = load_f16(raw, b)
        dmin = load_f16(raw, b + 2)
        o = ib * QK_K
        for j in range(4):
            sc1, m1i = scale_min_k4(2 * j, raw, b + Q5_SC)
            sc2, m2i = scale_min_k4(2 * j + 1, raw, b + Q5_SC)
            d1 = d * F32(sc1)
            m1 = dmin * F32(m1i)
            d2 = d * F32(sc2)
            m2 = dmin * F32(m2i)
            u1 = 1 << (2 * j)
            u2 = 2 << (2 * j)
            q = b + Q5_QS + 32 * j
            for l in range(32):
                v = np.int64(raw[q + l])
                h = np.int64(raw[b + Q5_QH + l])
                lo = (v & 0xF) + (16 if h & u1 else 0)
                hi = (v >> 4) + (16 if h & u2 else 0)
                out[o + 64 * j + l] = d1 * F32(lo) - m1
                out[o + 64 * j + 32 + l] = d2 * F32(hi) - m2


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _dequant_q6_K(raw, out):
    for ib in prange(raw.size // 210):
        b = ib * 210
        d = load_f16(raw, b + Q6_D)
        o = ib * QK_K
        for h in range(2):
            ql = b + 64 * h
            qh = b + Q6_QH + 32 * h
            sc = b + Q6_SC + 8 * h
            y = o + 128 * h
            # d * sc[is] * q, as ggml: the product d * sc is formed first
            s0 = d * F32(np.int8(raw[sc]))
            s1 = d * F32(np.int8(raw[sc + 1]))
            s2 = d * F32(np.int8(raw[sc + 2]))
            s3 = d * F32(np.int8(raw[sc + 3]))
            s4 = d * F32(np.int8(raw[sc + 4]))
            s5 = d * F32(np.int8(raw[sc + 5]))
            s6 = d * F32(np.int8(raw[sc + 6]))
            s7 = d * F32(np.int8(raw[sc + 7]))
            for l in range(32):
                a = np.int32(raw[ql + l])
                c = np.int32(raw[ql + l + 32])
                hh = np.int32(raw[qh + l])
                q1 = ((a & 15) | ((hh & 3) << 4)) - 32
                q2 = ((c & 15) | (((hh >> 2) & 3) << 4)) - 32
                q3 = ((a >> 4) | (((hh >> 4) & 3) << 4)) - 32
                q4 = ((c >> 4) | (((hh >> 6) & 3) << 4)) - 32
                first = l < 16
                out[y + l] = (s0 if first else s1) * F32(q1)
                out[y + l + 32] = (s2 if first else s3) * F32(q2)
                out[y + l + 64] = (s4 if first else s5) * F32(q3)
                out[y + l + 96] = (s6 if first else s7) * F32(q4)


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _dequant_q8_K(raw, out):
    for ib in prange(raw.size // 292):
        b = ib * 292
        d = bits_f32(np.int64(raw[b]) | (np.int64(raw[b + 1]) << 8) | (np.int64(raw[b + 2]) << 16)
                     | (np.int64(raw[b + 3]) << 24))
        o = ib * QK_K
        for j in range(QK_K):
            out[o + j] = d * F32(np.int8(raw[b + Q8K_QS + j]))


def _dequantizer(kernel):
    def dequantize_rows(raw: np.ndarray, n: int) -> np.ndarray:
        out = np.empty((raw.shape[0], n), dtype=np.float32)
        kernel(np.ascontiguousarray(raw).reshape(-1), out.reshape(-1))
        return out

    return dequantize_rows


# -- Q2_K -----------------------------------------------------------------------------------------
#
# Every quantizer below runs its sub-block search over a whole row at once (the row's
# sub-blocks are the columns of the batched search), then finishes super-block by super-block.


@njit(cache=True, error_model="numpy")
def _q2_K_finish(xb, L, y, b, scales, mins, from_imatrix, Ls, Lm, sw):
    """Pack the sub-block scales and mins of one super-block, then requantize with the stored values."""
    q4scale = F32(15.0)
    if from_imatrix:
        dm = make_qp_quants(16, 15, scales, Ls, sw)
        mm = make_qp_quants(16, 15, mins, Lm, sw)
        store_f16(y, b + Q2_D, fp32_to_fp16(dm))
        store_f16(y, b + Q2_DMIN, fp32_to_fp16(mm))
        for j in range(16):
            y[b + j] = np.uint8((np.int64(Ls[j]) | (np.int64(Lm[j]) << 4)) & 0xFF)
    else:
        max_scale = F32(0.0)
        max_min = F32(0.0)
        for j in range(16):
            if scales[j] > max_scale:
                max_scale = scales[j]
            if mins[j] > max_min:
                max_min = mins[j]
        if max_scale > 0:
            iscale = q4scale / max_scale
            for j in range(16):
                y[b + j] = np.uint8(nearest_int(iscale * scales[j]) & 0xFF)
            store_f16(y, b + Q2_D, fp32_to_fp16(max_scale / q4scale))
        else:
            for j in range(16):
                y[b + j] = 0
            store_f16(y, b + Q2_D, fp32_to_fp16(F32(0.0)))
        if max_min > 0:
            iscale = q4scale / max_min
            for j in range(16):
                l = nearest_int(iscale * mins[j])
                y[b + j] = np.uint8((np.int64(y[b + j]) | (l << 4)) & 0xFF)
            store_f16(y, b + Q2_DMIN, fp32_to_fp16(max_min / q4scale))
        else:
            store_f16(y, b + Q2_DMIN, fp32_to_fp16(F32(0.0)))
    dd = load_f16(y, b + Q2_D)
    dmin = load_f16(y, b + Q2_DMIN)
    for j in range(16):
        sc = np.int64(y[b + j])
        d = dd * F32(sc & 0xF)
        if not d:
            continue
        dm = dmin * F32(sc >> 4)
        for ii in range(16):
            l = nearest_int((xb[16 * j + ii] + dm) / d)
            L[16 * j + ii] = max(0, min(3, l))
    _pack_2bit(L, y, b + Q2_QS)


@njit(cache=True, error_model="numpy")
def _q2_K_row(x, qw, has_qw, y):
    """quantize_row_q2_K_ref (weights |x|, make_qkx2_quants) or, with importance, quantize_row_q2_K_impl."""
    n = x.size
    ncol = n // 16
    X = np.empty((16, ncol), dtype=np.float32)
    W = np.empty((16, ncol), dtype=np.float32)
    LB = np.empty((16, ncol), dtype=np.uint8)
    scales = np.empty(ncol, dtype=np.float32)
    mins = np.empty(ncol, dtype=np.float32)
    sw = np.empty(ncol, dtype=np.float32)
    L = np.empty(n, dtype=np.uint8)
    Ls = np.empty(16, dtype=np.uint8)
    Lm = np.empty(16, dtype=np.uint8)
    _columns(x, 16, X)
    if has_qw:
        for i in range(n // QK_K):
            sumx2 = F32(0.0)
            for j in range(QK_K):
                sumx2 += x[QK_K * i + j] * x[QK_K * i + j]
            sigma2 = sumx2 / F32(QK_K)
            for j in range(16 * i, 16 * i + 16):
                for l in range(16):
                    W[l, j] = qw[16 * j + l] * np.sqrt(sigma2 + X[l, j] * X[l, j])
                sw[j] = F32(0.0)
                for l in range(16):
                    sw[j] += W[l, j]
        make_qkx_quants_batch(3, X, W, LB, F32(-0.9), F32(0.05), 36, False, scales, mins)
    else:
        for j in range(ncol):
            for l in range(16):
                W[l, j] = abs(X[l, j])
        make_qkx_quants_batch(3, X, W, LB, F32(-0.5), F32(0.1), 15, True, scales, mins)
    _uncolumns(LB, 16, L)
    for i in range(n // QK_K):
        _q2_K_finish(x[QK_K * i:QK_K * (i + 1)], L[QK_K * i:QK_K * (i + 1)], y, i * 84,
                     scales[16 * i:16 * i + 16], mins[16 * i:16 * i + 16], has_qw, Ls, Lm, sw[16 * i:16 * i + 16])


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _quantize_q2_K(x, qw, has_qw, out):
    for r in prange(x.shape[0]):
        _q2_K_row(x[r], qw, has_qw, out[r])


# -- Q3_K -----------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _q3_K_finish(xb, L, y, b):
    """Requantize with the stored fp16 scales, then write hmask and the 2-bit quants (shared by both paths)."""
    dd = load_f16(y, b + Q3_D)
    for j in range(16):
        sc = _q3_scale(y, b + Q3_SC, j)
        d = dd * F32(sc)
        if not d:
            continue
        for ii in range(16):
            l = nearest_int(xb[16 * j + ii] / d)
            L[16 * j + ii] = max(-4, min(3, l)) + 4
    for m in range(32):
        y[b + m] = 0
    m = 0
    hm = 1
    for j in range(QK_K):
        if L[j] > 3:
            y[b + m] = np.uint8(np.int64(y[b + m]) | hm)
            L[j] -= 4
        m += 1
        if m == QK_K // 8:
            m = 0
            hm <<= 1
    _pack_2bit(L, y, b + Q3_QS)


@njit(cache=True, error_model="numpy")
def _q3_K_ref(x, y):
    L = np.empty(QK_K, dtype=np.int8)
    scales = np.empty(16, dtype=np.float32)
    for i in range(x.size // QK_K):
        xb = x[i * QK_K:(i + 1) * QK_K]
        b = i * 110
        max_scale = F32(0.0)
        amax = F32(0.0)
        for j in range(16):
            scales[j] = make_q3_quants(16, 4, xb[16 * j:16 * j + 16], L[16 * j:16 * j + 16], True)
            scale = abs(scales[j])
            if scale > amax:
                amax = scale
                max_scale = scales[j]
        for j in range(12):
            y[b + Q3_SC + j] = 0
        if max_scale:
            iscale = F32(-32.0) / max_scale
            for j in range(16):
                l = np.int64(np.int8(nearest_int(iscale * scales[j])))
                l = max(-32, min(31, l)) + 32
                _pack_q3_scale(y, b + Q3_SC, j, l)
            store_f16(y, b + Q3_D, fp32_to_fp16(F32(1.0) / iscale))
        else:
            store_f16(y, b + Q3_D, fp32_to_fp16(F32(0.0)))
        _q3_K_finish(xb, L, y, b)


@njit(cache=True, error_model="numpy")
def _q3_K_impl(x, qw, y):
    n = x.size
    ncol = n // 16
    X = np.empty((16, ncol), dtype=np.float32)
    W = np.empty((16, ncol), dtype=np.float32)
    LB = np.empty((16, ncol), dtype=np.int8)
    scales = np.empty(ncol, dtype=np.float32)
    sw = np.empty(ncol, dtype=np.float32)
    L = np.empty(n, dtype=np.int8)
    Ls = np.empty(16, dtype=np.int8)
    _columns(x, 16, X)
    for i in range(n // QK_K):
        sumx2 = F32(0.0)
        for j in range(QK_K):
            sumx2 += x[QK_K * i + j] * x[QK_K * i + j]
        sigma2 = F32(2.0) * sumx2 / F32(QK_K)
        for j in range(16 * i, 16 * i + 16):
            for l in range(16):
                W[l, j] = qw[16 * j + l] * np.sqrt(sigma2 + X[l, j] * X[l, j])
            sumw = F32(0.0)
            for l in range(16):
                sumw += W[l, j]
            sw[j] = sumw
    make_qx_quants_batch(4, X, W, LB, scales)
    _uncolumns(LB, 16, L)
    for i in range(n // QK_K):
        b = i * 110
        for j in range(12):
            y[b + Q3_SC + j] = 0
        d_block = make_qx_quants(16, 32, scales[16 * i:16 * i + 16], Ls, 1, sw[16 * i:16 * i + 16], True)
        for j in range(16):
            _pack_q3_scale(y, b + Q3_SC, j, np.int64(Ls[j]))
        store_f16(y, b + Q3_D, fp32_to_fp16(d_block))
        _q3_K_finish(x[QK_K * i:QK_K * (i + 1)], L[QK_K * i:QK_K * (i + 1)], y, b)


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _quantize_q3_K(x, qw, has_qw, out):
    for r in prange(x.shape[0]):
        if has_qw:
            _q3_K_impl(x[r], qw, out[r])
        else:
            _q3_K_ref(x[r], out[r])


# -- Q4_K and Q5_K ------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _q45_K_requantize(xb, L, y, b, sc_off, nmax):
    dd = load_f16(y, b)
    dmin = load_f16(y, b + 2)
    for j in range(8):
        sc, m = scale_min_k4(j, y, b + sc_off)
        d = dd * F32(sc)
        if not d:
            continue
        dm = dmin * F32(m)
        for ii in range(32):
            l = nearest_int((xb[32 * j + ii] + dm) / d)
            L[32 * j + ii] = max(0, min(nmax, l))


@njit(cache=True, error_model="numpy")
def _q45_K_store(L, y, b, five_bit):
    if not five_bit:
        for j in range(4):
            for l in range(32):
                y[b + Q4_QS + 32 * j + l] = np.uint8(np.int64(L[64 * j + l]) | (np.int64(L[64 * j + l + 32]) << 4))
        return
    for j in range(32):
        y[b + Q5_QH + j] = 0
    m1 = 1
    m2 = 2
    for n in range(0, QK_K, 64):
        ql = b + Q5_QS + n // 2
        for j in range(32):
            l1 = np.int64(L[n + j])
            if l1 > 15:
                l1 -= 16
                y[b + Q5_QH + j] = np.uint8(np.int64(y[b + Q5_QH + j]) | m1)
            l2 = np.int64(L[n + j + 32])
            if l2 > 15:
                l2 -= 16
                y[b + Q5_QH + j] = np.uint8(np.int64(y[b + Q5_QH + j]) | m2)
            y[ql + j] = np.uint8((l1 | (l2 << 4)) & 0xFF)
        m1 <<= 2
        m2 <<= 2


@njit(cache=True, error_model="numpy")
def _q45_K_row(x, qw, has_qw, y, five_bit):
    """quantize_row_q4_K_ref / q5_K_ref (make_qkx2_quants) or, with importance, the _impl forms (qkx3, qp)."""
    type_size = 176 if five_bit else 144
    nmax = 31 if five_bit else 15
    n = x.size
    ncol = n // 32
    X = np.empty((32, ncol), dtype=np.float32)
    W = np.empty((32, ncol), dtype=np.float32)
    LB = np.empty((32, ncol), dtype=np.uint8)
    scales = np.empty(ncol, dtype=np.float32)
    mins = np.empty(ncol, dtype=np.float32)
    sw = np.empty(ncol, dtype=np.float32)
    L = np.empty(n, dtype=np.uint8)
    Ls = np.empty(8, dtype=np.uint8)
    Lm = np.empty(8, dtype=np.uint8)
    _columns(x, 32, X)
    if has_qw:
        for i in range(n // QK_K):
            sum_x2 = F32(0.0)
            for l in range(QK_K):
                sum_x2 += x[QK_K * i + l] * x[QK_K * i + l]
            sigma2 = F32(2.0) * sum_x2 / F32(QK_K)
            for j in range(8 * i, 8 * i + 8):
                for l in range(32):
                    W[l, j] = qw[32 * j + l] * np.sqrt(sigma2 + X[l, j] * X[l, j])
                sumw = F32(0.0)
                for l in range(32):
                    sumw += W[l, j]
                sw[j] = sumw
        make_qkx_quants_batch(nmax, X, W, LB, F32(-0.9), F32(0.05), 36, False, scales, mins)
    else:
        for j in range(ncol):
            sum_x2 = F32(0.0)
            for l in range(32):
                sum_x2 += X[l, j] * X[l, j]
            av_x = np.sqrt(sum_x2 / F32(32.0))
            for l in range(32):
                W[l, j] = av_x + abs(X[l, j])
        rmin = F32(-0.5) if five_bit else F32(-1.0)
        nstep = 15 if five_bit else 20
        make_qkx_quants_batch(nmax, X, W, LB, rmin, F32(0.1), nstep, False, scales, mins)
    _uncolumns(LB, 32, L)
    for i in range(n // QK_K):
        b = i * type_size
        sc = scales[8 * i:8 * i + 8]
        mn = mins[8 * i:8 * i + 8]
        if has_qw:
            d_block = make_qp_quants(8, 63, sc, Ls, sw[8 * i:8 * i + 8])
            m_block = make_qp_quants(8, 63, mn, Lm, sw[8 * i:8 * i + 8])
            for j in range(8):
                _pack_scale_min_k4(y, b + Q4_SC, j, min(63, np.int64(Ls[j])), min(63, np.int64(Lm[j])))
            store_f16(y, b, fp32_to_fp16(d_block))
            store_f16(y, b + 2, fp32_to_fp16(m_block))
        else:
            max_scale = F32(0.0)
            max_min = F32(0.0)
            for j in range(8):
                if sc[j] > max_scale:
                    max_scale = sc[j]
                if mn[j] > max_min:
                    max_min = mn[j]
            inv_scale = F32(63.0) / max_scale if max_scale > 0 else F32(0.0)
            inv_min = F32(63.0) / max_min if max_min > 0 else F32(0.0)
            for j in range(8):
                ls = min(63, nearest_int(inv_scale * sc[j]) & 0xFF)
                lm = min(63, nearest_int(inv_min * mn[j]) & 0xFF)
                _pack_scale_min_k4(y, b + Q4_SC, j, ls, lm)
            store_f16(y, b, fp32_to_fp16(max_scale / F32(63.0)))
            store_f16(y, b + 2, fp32_to_fp16(max_min / F32(63.0)))
        xb = x[QK_K * i:QK_K * (i + 1)]
        Lb = L[QK_K * i:QK_K * (i + 1)]
        _q45_K_requantize(xb, Lb, y, b, Q4_SC, nmax)
        _q45_K_store(Lb, y, b, five_bit)


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _quantize_q45_K(x, qw, has_qw, out, five_bit):
    for r in prange(x.shape[0]):
        _q45_K_row(x[r], qw, has_qw, out[r], five_bit)


# -- Q6_K -----------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _q6_K_row(x, qw, has_qw, y):
    """quantize_row_q6_K_ref (weights x²) or _impl (the importance weights as they are)."""
    n = x.size
    ncol = n // 16
    X = np.empty((16, ncol), dtype=np.float32)
    W = np.empty((16, ncol), dtype=np.float32)
    LB = np.empty((16, ncol), dtype=np.int8)
    scales = np.empty(ncol, dtype=np.float32)
    L = np.empty(n, dtype=np.int8)
    _columns(x, 16, X)
    for j in range(ncol):
        for l in range(16):
            W[l, j] = qw[16 * j + l] if has_qw else X[l, j] * X[l, j]
    make_qx_quants_batch(32, X, W, LB, scales)
    _uncolumns(LB, 16, L)
    for i in range(n // QK_K):
        xb = x[i * QK_K:(i + 1) * QK_K]
        Lb = L[i * QK_K:(i + 1) * QK_K]
        b = i * 210
        max_scale = F32(0.0)
        max_abs_scale = F32(0.0)
        for ib in range(16):
            scale = scales[16 * i + ib]
            abs_scale = abs(scale)
            if abs_scale > max_abs_scale:
                max_abs_scale = abs_scale
                max_scale = scale
        if max_abs_scale < GROUP_MAX_EPS:
            for k in range(210):
                y[b + k] = 0
            store_f16(y, b + Q6_D, fp32_to_fp16(F32(0.0)))
            continue
        iscale = F32(-128.0) / max_scale
        store_f16(y, b + Q6_D, fp32_to_fp16(F32(1.0) / iscale))
        for ib in range(16):
            y[b + Q6_SC + ib] = np.uint8(min(127, nearest_int(iscale * scales[16 * i + ib])) & 0xFF)
        dd = load_f16(y, b + Q6_D)
        for j in range(16):
            d = dd * F32(np.int8(y[b + Q6_SC + j]))
            if not d:
                continue
            for ii in range(16):
                l = nearest_int(xb[16 * j + ii] / d)
                Lb[16 * j + ii] = max(-32, min(31, l)) + 32
        for h in range(2):
            j = 128 * h
            ql = b + 64 * h
            qh = b + Q6_QH + 32 * h
            for l in range(32):
                a1 = np.int64(Lb[j + l])
                a2 = np.int64(Lb[j + l + 32])
                a3 = np.int64(Lb[j + l + 64])
                a4 = np.int64(Lb[j + l + 96])
                y[ql + l] = np.uint8((a1 & 0xF) | ((a3 & 0xF) << 4))
                y[ql + l + 32] = np.uint8((a2 & 0xF) | ((a4 & 0xF) << 4))
                y[qh + l] = np.uint8((a1 >> 4) | ((a2 >> 4) << 2) | ((a3 >> 4) << 4) | ((a4 >> 4) << 6))


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _quantize_q6_K(x, qw, has_qw, out):
    for r in prange(x.shape[0]):
        _q6_K_row(x[r], qw, has_qw, out[r])


# -- Q8_K -----------------------------------------------------------------------------------------


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _quantize_q8_K(x, qw, has_qw, out):
    for r in prange(x.shape[0]):
        xr = x[r]
        y = out[r]
        for i in range(xr.size // QK_K):
            b = i * 292
            vmax = F32(0.0)
            amax = F32(0.0)
            for j in range(QK_K):
                ax = abs(xr[i * QK_K + j])
                if ax > amax:
                    amax = ax
                    vmax = xr[i * QK_K + j]
            if not amax:
                for k in range(292):
                    y[b + k] = 0
                continue
            iscale = F32(-127.0) / vmax
            for j in range(QK_K):
                v = nearest_int(iscale * xr[i * QK_K + j])
                y[b + Q8K_QS + j] = np.uint8(min(127, v) & 0xFF)
            for j in range(16):
                total = 0
                for ii in range(16):
                    total += np.int64(np.int8(y[b + Q8K_QS + 16 * j + ii]))
                y[b + Q8K_BSUMS + 2 * j] = np.uint8(total & 0xFF)
                y[b + Q8K_BSUMS + 2 * j + 1] = np.uint8((total >> 8) & 0xFF)
            bits = f32_bits(F32(1.0) / iscale)
            for k in range(4):
                y[b + k] = np.uint8((bits >> (8 * k)) & 0xFF)


# -- registration ---------------------------------------------------------------------------------


def _quantizer(kernel, type_size, *extra):
    def quantize_rows(x: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
        rows, n = x.shape
        out = new_output(rows, n, QK_K, type_size)
        qw, has_qw = weights_or_empty(importance)
        kernel(x, qw, has_qw, out, *extra)
        return out

    return quantize_rows


register("Q2_K", _quantizer(_quantize_q2_K, 84), _dequantizer(_dequant_q2_K), BLOCK_Q2_K)
register("Q3_K", _quantizer(_quantize_q3_K, 110), _dequantizer(_dequant_q3_K), BLOCK_Q3_K)
register("Q4_K", _quantizer(_quantize_q45_K, 144, False), _dequantizer(_dequant_q4_K), BLOCK_Q4_K)
register("Q5_K", _quantizer(_quantize_q45_K, 176, True), _dequantizer(_dequant_q5_K), BLOCK_Q5_K)
register("Q6_K", _quantizer(_quantize_q6_K, 210), _dequantizer(_dequant_q6_K), BLOCK_Q6_K)
register("Q8_K", _quantizer(_quantize_q8_K, 292), _dequantizer(_dequant_q8_K), BLOCK_Q8_K)

"""The legacy 32-element block formats: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1.

Each block is one fp16 scale (and for the ``_1`` kinds an fp16 minimum) followed by
packed integers. Without importance weights ggml uses the simple
``quantize_row_*_ref`` rounding; with them, the ``*_impl`` weighted searches
(``make_qx_quants`` for the symmetric kinds, ``make_qkx3_quants`` for the kinds
with a minimum). Q8_0 and Q8_1 ignore importance weights, as ggml does.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .common import (
    F32,
    c_max,
    check_block_dtype,
    field_offset,
    fp32_to_fp16,
    load_f16,
    load_u32,
    make_qkx_quants_batch,
    make_qx_quants_batch,
    new_output,
    round_away,
    store_f16,
    store_u32,
    weights_or_empty,
)
from .registry import register

RELEASES_GIL = True  # every kernel here is compiled nogil: lamina quantize may run them in several threads

QK = 32

BLOCK_Q4_0 = check_block_dtype([("d", "<f2"), ("qs", "u1", (16,))], 18)
BLOCK_Q4_1 = check_block_dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", (16,))], 20)
BLOCK_Q5_0 = check_block_dtype([("d", "<f2"), ("qh", "u1", (4,)), ("qs", "u1", (16,))], 22)
BLOCK_Q5_1 = check_block_dtype([("d", "<f2"), ("m", "<f2"), ("qh", "u1", (4,)), ("qs", "u1", (16,))], 24)
BLOCK_Q8_0 = check_block_dtype([("d", "<f2"), ("qs", "i1", (32,))], 34)
BLOCK_Q8_1 = check_block_dtype([("d", "<f2"), ("s", "<f2"), ("qs", "i1", (32,))], 36)

Q4_0_QS = field_offset(BLOCK_Q4_0, "qs")
Q4_1_M, Q4_1_QS = field_offset(BLOCK_Q4_1, "m"), field_offset(BLOCK_Q4_1, "qs")
Q5_0_QH, Q5_0_QS = field_offset(BLOCK_Q5_0, "qh"), field_offset(BLOCK_Q5_0, "qs")
Q5_1_M, Q5_1_QH, Q5_1_QS = (field_offset(BLOCK_Q5_1, f) for f in ("m", "qh", "qs"))
Q8_0_QS = field_offset(BLOCK_Q8_0, "qs")
Q8_1_S, Q8_1_QS = field_offset(BLOCK_Q8_1, "s"), field_offset(BLOCK_Q8_1, "qs")


# -- dequantize ---------------------------------------------------------------------------


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _dequant_q4_0(raw, out):
    for ib in prange(raw.size // 18):
        b = ib * 18
        d = load_f16(raw, b)
        o = ib * QK
        for j in range(16):
            q = raw[b + Q4_0_QS + j]
            out[o + j] = F32(np.int32(q & 0xF) - 8) * d
            out[o + j + 16] = F32(np.int32(q >> 4) - 8) * d


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _dequant_q4_1(raw, out):
    for ib in prange(raw.size // 20):
        b = ib * 20
        d = load_f16(raw, b)
        m = load_f16(raw, b + Q4_1_M)
        o = ib * QK
        for j in range(16):
            q = raw[b + Q4_1_QS + j]
            out[o + j] = F32(q & 0xF) * d + m
            out[o + j + 16] = F32(q >> 4) * d + m


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _dequant_q5_0(raw, out):
    for ib in prange(raw.size // 22):
        b = ib * 22
        d = load_f16(raw, b)
        qh = load_u32(raw, b + Q5_0_QH)
        o = ib * QK
        for j in range(16):
            q = np.int64(raw[b + Q5_0_QS + j])
            xh0 = ((qh >> j) << 4) & 0x10
            xh1 = (qh >> (j + 12)) & 0x10
            out[o + j] = F32(((q & 0xF) | xh0) - 16) * d
            out[o + j + 16] = F32(((q >> 4) | xh1) - 16) * d


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _dequant_q5_1(raw, out):
    for ib in prange(raw.size // 24):
        b = ib * 24
        d = load_f16(raw, b)
        m = load_f16(raw, b + Q5_1_M)
        qh = load_u32(raw, b + Q5_1_QH)
        o = ib * QK
        for j in range(16):
            q = np.int64(raw[b + Q5_1_QS + j])
            xh0 = ((qh >> j) << 4) & 0x10
            xh1 = (qh >> (j + 12)) & 0x10
            out[o + j] = F32((q & 0xF) | xh0) * d + m
            out[o + j + 16] = F32((q >> 4) | xh1) * d + m


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _dequant_q8(raw, out, type_size, qs_offset):
    for ib in prange(raw.size // type_size):
        b = ib * type_size
        d = load_f16(raw, b)
        o = ib * QK
        for j in range(QK):
            out[o + j] = F32(np.int8(raw[b + qs_offset + j])) * d


def _dequantizer(kernel, type_size):
    def dequantize_rows(raw: np.ndarray, n: int) -> np.ndarray:
        out = np.empty((raw.shape[0], n), dtype=np.float32)
        kernel(np.ascontiguousarray(raw).reshape(-1), out.reshape(-1))
        return out

    return dequantize_rows


def _dequantize_q8_0(raw, n):
    out = np.empty((raw.shape[0], n), dtype=np.float32)
    _dequant_q8(np.ascontiguousarray(raw).reshape(-1), out.reshape(-1), 34, Q8_0_QS)
    return out


def _dequantize_q8_1(raw, n):
    out = np.empty((raw.shape[0], n), dtype=np.float32)
    _dequant_q8(np.ascontiguousarray(raw).reshape(-1), out.reshape(-1), 36, Q8_1_QS)
    return out


# -- quantize: the reference (no importance) paths ----------------------------------------------


@njit(cache=True, error_model="numpy")
def _absmax_signed(x, o, n):
    """(amax, the value with that magnitude): the first one found, as ggml's strict ``<`` keeps."""
    amax = F32(0.0)
    vmax = F32(0.0)
    for j in range(n):
        v = x[o + j]
        if amax < abs(v):
            amax = abs(v)
            vmax = v
    return amax, vmax


@njit(cache=True, error_model="numpy")
def _min_max(x, o, n):
    vmin = F32(np.finfo(np.float32).max)
    vmax = F32(-np.finfo(np.float32).max)
    for j in range(n):
        v = x[o + j]
        if v < vmin:
            vmin = v
        if v > vmax:
            vmax = v
    return vmin, vmax


@njit(cache=True, error_model="numpy")
def _trunc_int8(v):
    """C's (int8_t) of a float in range: truncation toward zero."""
    return np.int64(np.int32(v))


@njit(cache=True, error_model="numpy")
def _q4_0_ref_block(x, o, out, b):
    amax, vmax = _absmax_signed(x, o, QK)
    d = vmax / F32(-8.0)
    idd = F32(1.0) / d if d else F32(0.0)
    store_f16(out, b, fp32_to_fp16(d))
    for j in range(16):
        x0 = x[o + j] * idd
        x1 = x[o + 16 + j] * idd
        xi0 = min(15, _trunc_int8(x0 + F32(8.5)))
        xi1 = min(15, _trunc_int8(x1 + F32(8.5)))
        out[b + Q4_0_QS + j] = np.uint8((xi0 | (xi1 << 4)) & 0xFF)


@njit(cache=True, error_model="numpy")
def _q4_1_ref_block(x, o, out, b):
    vmin, vmax = _min_max(x, o, QK)
    d = (vmax - vmin) / F32(15.0)
    idd = F32(1.0) / d if d else F32(0.0)
    store_f16(out, b, fp32_to_fp16(d))
    store_f16(out, b + Q4_1_M, fp32_to_fp16(vmin))
    for j in range(16):
        x0 = (x[o + j] - vmin) * idd
        x1 = (x[o + 16 + j] - vmin) * idd
        xi0 = min(15, _trunc_int8(x0 + F32(0.5)))
        xi1 = min(15, _trunc_int8(x1 + F32(0.5)))
        out[b + Q4_1_QS + j] = np.uint8((xi0 | (xi1 << 4)) & 0xFF)


@njit(cache=True, error_model="numpy")
def _q5_0_ref_block(x, o, out, b):
    amax, vmax = _absmax_signed(x, o, QK)
    d = vmax / F32(-16.0)
    idd = F32(1.0) / d if d else F32(0.0)
    store_f16(out, b, fp32_to_fp16(d))
    qh = 0
    for j in range(16):
        x0 = x[o + j] * idd
        x1 = x[o + 16 + j] * idd
        xi0 = min(31, _trunc_int8(x0 + F32(16.5))) & 0xFF
        xi1 = min(31, _trunc_int8(x1 + F32(16.5))) & 0xFF
        out[b + Q5_0_QS + j] = np.uint8((xi0 & 0xF) | ((xi1 & 0xF) << 4))
        qh |= ((xi0 & 0x10) >> 4) << j
        qh |= ((xi1 & 0x10) >> 4) << (j + 16)
    store_u32(out, b + Q5_0_QH, qh)


@njit(cache=True, error_model="numpy")
def _q5_1_ref_block(x, o, out, b):
    vmin, vmax = _min_max(x, o, QK)
    d = (vmax - vmin) / F32(31.0)
    idd = F32(1.0) / d if d else F32(0.0)
    store_f16(out, b, fp32_to_fp16(d))
    store_f16(out, b + Q5_1_M, fp32_to_fp16(vmin))
    qh = 0
    for j in range(16):
        x0 = (x[o + j] - vmin) * idd
        x1 = (x[o + 16 + j] - vmin) * idd
        xi0 = _trunc_int8(x0 + F32(0.5)) & 0xFF  # (uint8_t) cast
        xi1 = _trunc_int8(x1 + F32(0.5)) & 0xFF
        out[b + Q5_1_QS + j] = np.uint8((xi0 & 0xF) | ((xi1 & 0xF) << 4))
        qh |= ((xi0 & 0x10) >> 4) << j
        qh |= ((xi1 & 0x10) >> 4) << (j + 16)
    store_u32(out, b + Q5_1_QH, qh)


@njit(cache=True, error_model="numpy")
def _q8_0_block(x, o, out, b):
    amax = F32(0.0)
    for j in range(QK):
        amax = c_max(amax, abs(x[o + j]))
    d = amax / F32(127.0)
    idd = F32(1.0) / d if d else F32(0.0)
    store_f16(out, b, fp32_to_fp16(d))
    for j in range(QK):
        out[b + Q8_0_QS + j] = np.uint8(np.int64(round_away(x[o + j] * idd)) & 0xFF)


@njit(cache=True, error_model="numpy")
def _q8_1_block(x, o, out, b):
    amax = F32(0.0)
    for j in range(QK):
        amax = c_max(amax, abs(x[o + j]))
    d = amax / F32(127.0)
    idd = F32(1.0) / d if d else F32(0.0)
    store_f16(out, b, fp32_to_fp16(d))
    total = 0
    for j in range(QK):
        q = np.int64(round_away(x[o + j] * idd))
        out[b + Q8_1_QS + j] = np.uint8(q & 0xFF)
        total += q
    store_f16(out, b + Q8_1_S, fp32_to_fp16(F32(total) * d))


# -- quantize: the importance-weighted paths ------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _row_sigma2(x, n):
    sum_x2 = F32(0.0)
    for j in range(n):
        sum_x2 += x[j] * x[j]
    return sum_x2 / F32(n)


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _quantize_rows(x, qw, has_qw, out, kind):
    """kind: 0 Q4_0, 1 Q4_1, 2 Q5_0, 3 Q5_1, 4 Q8_0, 5 Q8_1."""
    rows, n = x.shape
    nb = n // QK
    type_size = out.shape[1] // nb
    for r in prange(rows):
        xr = x[r]
        yr = out[r]
        if not has_qw or kind >= 4:
            for ib in range(nb):
                if kind == 0:
                    _q4_0_ref_block(xr, ib * QK, yr, ib * type_size)
                elif kind == 1:
                    _q4_1_ref_block(xr, ib * QK, yr, ib * type_size)
                elif kind == 2:
                    _q5_0_ref_block(xr, ib * QK, yr, ib * type_size)
                elif kind == 3:
                    _q5_1_ref_block(xr, ib * QK, yr, ib * type_size)
                elif kind == 4:
                    _q8_0_block(xr, ib * QK, yr, ib * type_size)
                else:
                    _q8_1_block(xr, ib * QK, yr, ib * type_size)
            continue
        _weighted_row(xr, qw, yr, kind, nb, type_size)


@njit(cache=True, error_model="numpy")
def _weighted_row(xr, qw, yr, kind, nb, type_size):
    """quantize_row_q4_0_impl and friends for one row: every block's search run in lock step (same bytes)."""
    n = xr.size
    sigma2 = _row_sigma2(xr, n)
    X = np.empty((QK, nb), dtype=np.float32)
    W = np.empty((QK, nb), dtype=np.float32)
    for ib in range(nb):
        for j in range(QK):
            v = xr[QK * ib + j]
            X[j, ib] = v
            W[j, ib] = qw[QK * ib + j] * np.sqrt(sigma2 + v * v)
    scales = np.empty(nb, dtype=np.float32)
    if kind == 0 or kind == 2:
        L = np.empty((QK, nb), dtype=np.int8)
        make_qx_quants_batch(8 if kind == 0 else 16, X, W, L, scales)
    else:
        L8 = np.empty((QK, nb), dtype=np.uint8)
        mins = np.empty(nb, dtype=np.float32)
        make_qkx_quants_batch(15 if kind == 1 else 31, X, W, L8, F32(-0.9), F32(0.05), 36, False, scales, mins)
    for ib in range(nb):
        b = ib * type_size
        store_f16(yr, b, fp32_to_fp16(scales[ib]))
        if kind == 1 or kind == 3:
            store_f16(yr, b + 2, fp32_to_fp16(-mins[ib]))
        qs = b + (Q4_0_QS if kind == 0 else Q4_1_QS if kind == 1 else Q5_0_QS if kind == 2 else Q5_1_QS)
        qh = 0
        for j in range(16):
            if kind == 0 or kind == 2:
                xi0 = np.int64(L[j, ib]) & 0xFF
                xi1 = np.int64(L[j + 16, ib]) & 0xFF
            else:
                xi0 = np.int64(L8[j, ib])
                xi1 = np.int64(L8[j + 16, ib])
            if kind < 2:
                yr[qs + j] = np.uint8((xi0 | (xi1 << 4)) & 0xFF)
            else:
                yr[qs + j] = np.uint8((xi0 & 0xF) | ((xi1 & 0xF) << 4))
                qh |= ((xi0 & 0x10) >> 4) << j
                qh |= ((xi1 & 0x10) >> 4) << (j + 16)
        if kind == 2:
            store_u32(yr, b + Q5_0_QH, qh)
        elif kind == 3:
            store_u32(yr, b + Q5_1_QH, qh)


def _quantizer(kind: int, type_size: int):
    def quantize_rows(x: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
        rows, n = x.shape
        out = new_output(rows, n, QK, type_size)
        qw, has_qw = weights_or_empty(importance)
        _quantize_rows(x, qw, has_qw, out, kind)
        return out

    return quantize_rows


register("Q4_0", _quantizer(0, 18), _dequantizer(_dequant_q4_0, 18), BLOCK_Q4_0)
register("Q4_1", _quantizer(1, 20), _dequantizer(_dequant_q4_1, 20), BLOCK_Q4_1)
register("Q5_0", _quantizer(2, 22), _dequantizer(_dequant_q5_0, 22), BLOCK_Q5_0)
register("Q5_1", _quantizer(3, 24), _dequantizer(_dequant_q5_1, 24), BLOCK_Q5_1)
register("Q8_0", _quantizer(4, 34), _dequantize_q8_0, BLOCK_Q8_0)
register("Q8_1", _quantizer(5, 36), _dequantize_q8_1, BLOCK_Q8_1)

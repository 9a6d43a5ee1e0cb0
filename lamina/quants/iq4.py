"""The non-linear 4-bit formats IQ4_NL (32-element blocks) and IQ4_XS (256-element super-blocks).

Each 4-bit code indexes the fixed table ``KVALUES_IQ4NL`` rather than a uniform
grid. The per-block scale comes from ggml's ``quantize_row_iq4_nl_impl`` search
(15 trial scales around ``-max/values[0]``, weighted by x² or by the importance
weights); IQ4_XS then stores those block scales as 6-bit multiples of an fp16
super-block scale and requantizes with them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from lamina.gguf.types import QK_K

from .common import (
    F32,
    GROUP_MAX_EPS,
    check_block_dtype,
    field_offset,
    fp32_to_fp16,
    load_f16,
    load_u16,
    nearest_int,
    new_output,
    store_f16,
    weights_or_empty,
)
from .registry import register

RELEASES_GIL = True  # every kernel here is compiled nogil: lamina quantize may run them in several threads

KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)

BLOCK_IQ4_NL = check_block_dtype([("d", "<f2"), ("qs", "u1", (16,))], 18)
BLOCK_IQ4_XS = check_block_dtype(
    [("d", "<f2"), ("scales_h", "<u2"), ("scales_l", "u1", (4,)), ("qs", "u1", (128,))], 136)

NL_QS = field_offset(BLOCK_IQ4_NL, "qs")
XS_SH, XS_SL, XS_QS = (field_offset(BLOCK_IQ4_XS, f) for f in ("scales_h", "scales_l", "qs"))
NTRY = 7  # quantize_iq4_nl and quantize_iq4_xs search ±7 trial scales, with or without importance


# -- dequantize -----------------------------------------------------------------------------------


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _dequant_iq4_nl(raw, out):
    for ib in prange(raw.size // 18):
        b = ib * 18
        d = load_f16(raw, b)
        o = ib * 32
        for j in range(16):
            q = np.int64(raw[b + NL_QS + j])
            out[o + j] = d * F32(KVALUES_IQ4NL[q & 0xF])
            out[o + j + 16] = d * F32(KVALUES_IQ4NL[q >> 4])


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _dequant_iq4_xs(raw, out):
    for ibl in prange(raw.size // 136):
        b = ibl * 136
        d = load_f16(raw, b)
        sh = load_u16(raw, b + XS_SH)
        o = ibl * QK_K
        for ib in range(8):
            ls = ((np.int64(raw[b + XS_SL + ib // 2]) >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4)
            dl = d * F32(ls - 32)
            q0 = b + XS_QS + 16 * ib
            for j in range(16):
                q = np.int64(raw[q0 + j])
                out[o + 32 * ib + j] = dl * F32(KVALUES_IQ4NL[q & 0xF])
                out[o + 32 * ib + j + 16] = dl * F32(KVALUES_IQ4NL[q >> 4])


def _dequantizer(kernel):
    def dequantize_rows(raw: np.ndarray, n: int) -> np.ndarray:
        out = np.empty((raw.shape[0], n), dtype=np.float32)
        kernel(np.ascontiguousarray(raw).reshape(-1), out.reshape(-1))
        return out

    return dequantize_rows


# -- quantize -------------------------------------------------------------------------------------
#
# ggml's quantize_row_iq4_nl_impl, reorganised so that the scale search (16 passes over
# each 32-value block) runs for all of a row's blocks in lock step, blocks as columns:
# each block's sums still accumulate in ggml's order, so the bytes are the same.

KVALUES_F32 = KVALUES_IQ4NL.astype(np.float32)


@njit(cache=True, error_model="numpy", inline="always")
def _nearest_value_index(x):
    """best_index_int8 over KVALUES_IQ4NL without branches: the count of table values <= x, then the nearer
    neighbour (ties to the upper one, NaN to 15, as the binary search gives)."""
    v = KVALUES_F32
    mu = np.int32(1)
    for k in range(1, 15):
        mu += np.int32(x >= v[k])
    lower = x - v[mu - 1] < v[mu] - x
    idx = mu - np.int32(lower)
    idx = np.int32(0) if x <= v[0] else idx
    idx = np.int32(15) if (x >= v[15] or x != x) else idx
    return idx


@njit(cache=True, error_model="numpy")
def _search_scales(X, W, scales):
    """The per-block scale search of quantize_row_iq4_nl_impl (ntry = 7) for the columns of X (32, nb)."""
    n, nb = X.shape
    v = KVALUES_F32
    v0 = v[0]
    vmax = np.zeros(nb, np.float32)
    amax = np.zeros(nb, np.float32)
    for i in range(n):
        for b in range(nb):
            ax = abs(X[i, b])
            if ax > amax[b]:
                amax[b] = ax
                vmax[b] = X[i, b]
    idd = np.empty(nb, np.float32)
    sumqx = np.zeros(nb, np.float32)
    sumq2 = np.zeros(nb, np.float32)
    best = np.empty(nb, np.float32)
    d = np.empty(nb, np.float32)
    for b in range(nb):
        idd[b] = F32(1.0) / (-vmax[b] / v0)
    for i in range(n):
        for b in range(nb):
            q = v[_nearest_value_index(idd[b] * X[i, b])]
            w = W[i, b]
            sumqx[b] += w * q * X[i, b]
            sumq2[b] += w * q * q
    for b in range(nb):
        d[b] = sumqx[b] / sumq2[b] if sumq2[b] > 0 else F32(0.0)
        best[b] = d[b] * sumqx[b]
    for itry in range(-NTRY, NTRY + 1):
        step = F32(itry + np.int64(KVALUES_IQ4NL[0]))
        for b in range(nb):
            idd[b] = step / vmax[b]
            sumqx[b] = F32(0.0)
            sumq2[b] = F32(0.0)
        for i in range(n):
            for b in range(nb):
                q = v[_nearest_value_index(idd[b] * X[i, b])]
                w = W[i, b]
                sumqx[b] += w * q * X[i, b]
                sumq2[b] += w * q * q
        for b in range(nb):
            if sumq2[b] > 0 and sumqx[b] * sumqx[b] > best[b] * sumq2[b]:
                d[b] = sumqx[b] / sumq2[b]
                best[b] = d[b] * sumqx[b]
    for b in range(nb):
        scales[b] = F32(0.0) if amax[b] < GROUP_MAX_EPS else d[b]


@njit(cache=True, error_model="numpy")
def _pack_nibbles(L, y, off, count):
    for i in range(count // 32):
        for j in range(16):
            y[off + 16 * i + j] = np.uint8(np.int64(L[32 * i + j]) | (np.int64(L[32 * i + 16 + j]) << 4))


@njit(cache=True, error_model="numpy")
def _iq4_row(x, qw, has_qw, y, sbs):
    """One row of IQ4_NL (sbs 32) or IQ4_XS (sbs 256), as quantize_iq4_nl / quantize_iq4_xs."""
    n = x.size
    nb = n // 32
    X = np.empty((32, nb), dtype=np.float32)
    W = np.empty((32, nb), dtype=np.float32)
    scales = np.empty(nb, dtype=np.float32)
    L = np.empty(sbs, dtype=np.uint8)
    for b in range(nb):
        for i in range(32):
            X[i, b] = x[32 * b + i]
    for s in range(n // sbs):
        sigma2 = F32(0.0)
        for j in range(sbs):
            sigma2 += x[sbs * s + j] * x[sbs * s + j]
        sigma2 *= F32(2.0) / F32(sbs)
        for b in range(s * (sbs // 32), (s + 1) * (sbs // 32)):
            for i in range(32):
                if has_qw:
                    W[i, b] = qw[32 * b + i] * np.sqrt(sigma2 + X[i, b] * X[i, b])
                else:
                    W[i, b] = X[i, b] * X[i, b]
    _search_scales(X, W, scales)
    if sbs == 32:
        for b in range(nb):
            o = 18 * b
            store_f16(y, o, fp32_to_fp16(scales[b]))
            idd = F32(1.0) / scales[b] if scales[b] else F32(0.0)
            for j in range(32):
                L[j] = _nearest_value_index(idd * X[j, b])
            _pack_nibbles(L, y, o + NL_QS, 32)
        return
    for s in range(n // QK_K):
        o = 136 * s
        max_scale = F32(0.0)
        amax_scale = F32(0.0)
        for ib in range(8):
            dd = scales[8 * s + ib]
            if abs(dd) > amax_scale:
                amax_scale = abs(dd)
                max_scale = dd
        d = -max_scale / F32(32.0)
        store_f16(y, o, fp32_to_fp16(d))
        idd = F32(1.0) / d if d else F32(0.0)
        scales_h = 0
        for ib in range(8):
            l = nearest_int(idd * scales[8 * s + ib])
            l = max(-32, min(31, l))
            dl = d * F32(l)
            idl = F32(1.0) / dl if dl else F32(0.0)
            for j in range(32):
                L[32 * ib + j] = _nearest_value_index(idl * X[j, 8 * s + ib])
            l += 32
            if ib % 2 == 0:
                y[o + XS_SL + ib // 2] = np.uint8(l & 0xF)
            else:
                y[o + XS_SL + ib // 2] = np.uint8(np.int64(y[o + XS_SL + ib // 2]) | ((l & 0xF) << 4))
            scales_h |= (l >> 4) << (2 * ib)
        y[o + XS_SH] = np.uint8(scales_h & 0xFF)
        y[o + XS_SH + 1] = np.uint8((scales_h >> 8) & 0xFF)
        _pack_nibbles(L, y, o + XS_QS, QK_K)


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _quantize_iq4(x, qw, has_qw, out, sbs):
    for r in prange(x.shape[0]):
        _iq4_row(x[r], qw, has_qw, out[r], sbs)


def _quantizer(sbs: int, type_size: int, q4_off: int):
    def quantize_rows(x: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
        rows, n = x.shape
        out = new_output(rows, n, sbs, type_size)
        qw, has_qw = weights_or_empty(importance)
        _quantize_iq4(x, qw, has_qw, out, sbs)
        return out

    return quantize_rows


register("IQ4_NL", _quantizer(32, 18, NL_QS), _dequantizer(_dequant_iq4_nl), BLOCK_IQ4_NL)
register("IQ4_XS", _quantizer(QK_K, 136, XS_QS), _dequantizer(_dequant_iq4_xs), BLOCK_IQ4_XS)

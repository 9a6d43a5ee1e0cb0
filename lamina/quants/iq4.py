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
    best_index_int8,
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


@njit(cache=True, error_model="numpy")
def _iq4_superblock(x, xo, sbs, qw, qwo, has_qw, y, b, q4_off, scales, weight, L):
    """ggml's quantize_row_iq4_nl_impl for one super-block of ``sbs`` values (32: IQ4_NL, 256: IQ4_XS).

    x[xo:xo+sbs] are the values, qw[qwo:] their importance weights; the block is written at y[b:].
    """
    values = KVALUES_IQ4NL
    v0 = F32(values[0])
    sigma2 = F32(0.0)
    for j in range(sbs):
        sigma2 += x[xo + j] * x[xo + j]
    sigma2 *= F32(2.0) / F32(sbs)
    for j in range(sbs // 2):
        y[b + q4_off + j] = 0
    store_f16(y, b, fp32_to_fp16(F32(0.0)))
    nblocks = sbs // 32
    max_scale = F32(0.0)
    amax_scale = F32(0.0)
    for ib in range(nblocks):
        xb = xo + 32 * ib
        for j in range(32):
            if has_qw:
                weight[j] = qw[qwo + 32 * ib + j] * np.sqrt(sigma2 + x[xb + j] * x[xb + j])
            else:
                weight[j] = x[xb + j] * x[xb + j]
        amax = F32(0.0)
        vmax = F32(0.0)
        for j in range(32):
            ax = abs(x[xb + j])
            if ax > amax:
                amax = ax
                vmax = x[xb + j]
        if amax < GROUP_MAX_EPS:
            scales[ib] = F32(0.0)
            continue
        d = -vmax / v0
        idd = F32(1.0) / d
        sumqx = F32(0.0)
        sumq2 = F32(0.0)
        for j in range(32):
            al = idd * x[xb + j]
            l = best_index_int8(values, al)
            L[32 * ib + j] = l
            q = F32(values[l])
            w = weight[j]
            sumqx += w * q * x[xb + j]
            sumq2 += w * q * q
        d = sumqx / sumq2 if sumq2 > 0 else F32(0.0)
        best = d * sumqx
        for itry in range(-NTRY, NTRY + 1):
            idd = F32(itry + np.int64(values[0])) / vmax
            sumqx = F32(0.0)
            sumq2 = F32(0.0)
            for j in range(32):
                al = idd * x[xb + j]
                l = best_index_int8(values, al)
                q = F32(values[l])
                w = weight[j]
                sumqx += w * q * x[xb + j]
                sumq2 += w * q * q
            if sumq2 > 0 and sumqx * sumqx > best * sumq2:
                d = sumqx / sumq2
                best = d * sumqx
        scales[ib] = d
        abs_d = abs(d)
        if abs_d > amax_scale:
            amax_scale = abs_d
            max_scale = d
    if nblocks > 1:
        y[b + XS_SH] = 0
        y[b + XS_SH + 1] = 0
        scales_h = 0
        d = -max_scale / F32(32.0)
        store_f16(y, b, fp32_to_fp16(d))
        idd = F32(1.0) / d if d else F32(0.0)
        for ib in range(nblocks):
            l = nearest_int(idd * scales[ib])
            l = max(-32, min(31, l))
            dl = d * F32(l)
            idl = F32(1.0) / dl if dl else F32(0.0)
            xb = xo + 32 * ib
            for j in range(32):
                L[32 * ib + j] = best_index_int8(values, idl * x[xb + j])
            l += 32
            l_l = l & 0xF
            l_h = l >> 4
            if ib % 2 == 0:
                y[b + XS_SL + ib // 2] = np.uint8(l_l)
            else:
                y[b + XS_SL + ib // 2] = np.uint8(np.int64(y[b + XS_SL + ib // 2]) | (l_l << 4))
            scales_h |= l_h << (2 * (ib % 8))
        y[b + XS_SH] = np.uint8(scales_h & 0xFF)
        y[b + XS_SH + 1] = np.uint8((scales_h >> 8) & 0xFF)
    else:
        store_f16(y, b, fp32_to_fp16(scales[0]))
        idd = F32(1.0) / scales[0] if scales[0] else F32(0.0)
        for j in range(sbs):
            L[j] = best_index_int8(values, idd * x[xo + j])
    for i in range(sbs // 32):
        for j in range(16):
            y[b + q4_off + 16 * i + j] = np.uint8(np.int64(L[32 * i + j]) | (np.int64(L[32 * i + 16 + j]) << 4))


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _quantize_iq4(x, qw, has_qw, out, sbs, type_size, q4_off):
    rows, n = x.shape
    for r in prange(rows):
        scales = np.empty(sbs // 32, dtype=np.float32)
        weight = np.empty(32, dtype=np.float32)
        L = np.empty(sbs, dtype=np.uint8)
        for i in range(n // sbs):
            _iq4_superblock(x[r], i * sbs, sbs, qw, i * sbs, has_qw, out[r], i * type_size, q4_off,
                            scales, weight, L)


def _quantizer(sbs: int, type_size: int, q4_off: int):
    def quantize_rows(x: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
        rows, n = x.shape
        out = new_output(rows, n, sbs, type_size)
        qw, has_qw = weights_or_empty(importance)
        _quantize_iq4(x, qw, has_qw, out, sbs, type_size, q4_off)
        return out

    return quantize_rows


register("IQ4_NL", _quantizer(32, 18, NL_QS), _dequantizer(_dequant_iq4_nl), BLOCK_IQ4_NL)
register("IQ4_XS", _quantizer(QK_K, 136, XS_QS), _dequantizer(_dequant_iq4_xs), BLOCK_IQ4_XS)

"""Quantization to the 3-bit grid formats IQ3_XXS and IQ3_S, byte-exact with ggml.

Both code 4 values at a time as a point of a D4-like grid (256 or 512 points) plus
signs, one 4-bit scale per 32 values and an fp16 super-block scale. Kernels follow
ggml-quants.c's quantize_row_iq3_xxs_impl and quantize_row_iq3_s_impl, including
their quirks (IQ3_S packs the grid bytes and signs of a block that is all zero out
of the stream, so the following blocks shift down). Status per row: 0, or 1 where
ggml would abort.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .common import c_max, fp32_to_fp16, nearest_int
from .iq_numeric import F0, F1, F_HALF, flip_to_even_signs, super_block_sigma2
from .iq_search import block_weights, grid_indices, put_u16, put_u32, search_scale, zero

_F31 = np.float32(31.0)
_F_STEP = np.float32(0.2)
_EPS_IQ3_XXS = np.float32(1e-8)  # GROUP_MAX_EPS_IQ3_XXS


@njit(cache=True, error_model="numpy")
def _row_iq3_xxs(x, qw, has_qw, y, positions, kmap, neighbours):
    scales = np.zeros(8, dtype=np.float32)
    weight = np.empty(32, dtype=np.float32)
    waux = np.empty(32, dtype=np.float32)
    xval = np.empty(32, dtype=np.float32)
    L = np.zeros(32, dtype=np.int64)
    Laux = np.zeros(32, dtype=np.int64)
    idx = np.zeros(8, dtype=np.int64)
    scales_and_signs = np.zeros(8, dtype=np.int64)
    signs = np.zeros(4, dtype=np.int64)
    for ibl in range(x.shape[0] // 256):
        xbl = x[256 * ibl : 256 * ibl + 256]
        o = 98 * ibl
        zero(y, o, o + 98)
        zero(scales_and_signs, 0, scales_and_signs.shape[0])
        max_scale = F0
        sigma2 = super_block_sigma2(xbl, 2.0)
        for ib in range(8):
            xb = xbl[32 * ib : 32 * ib + 32]
            block_weights(xb, qw, 256 * ibl + 32 * ib, has_qw, sigma2, F0, weight, 32)
            for i in range(32):
                waux[i] = np.sqrt(weight[i])
            flip_to_even_signs(xb, weight, xval, 4, signs)
            fmax = xval[0]
            for i in range(1, 32):
                fmax = c_max(fmax, xval[i])
            if fmax < _EPS_IQ3_XXS:
                scales[ib] = F0
                continue
            zero(L, 0, L.shape[0])
            scale, ok = search_scale(
                xval, weight, waux, 32, 4, 8, _F_STEP, 15, True, False, positions, kmap, neighbours, L, Laux
            )
            if not ok:
                return 1
            if scale < F0:
                scale = -scale
                for k in range(4):
                    signs[k] = (~signs[k]) & 127
            if not grid_indices(L, 32, 4, kmap, idx):
                return 1
            for k in range(8):
                y[o + 2 + 8 * ib + k] = idx[k]
            scales_and_signs[ib] = signs[0] | (signs[1] << 7) | (signs[2] << 14) | (signs[3] << 21)
            scales[ib] = scale
            max_scale = c_max(max_scale, scale)
        if max_scale == F0:
            zero(y, o, o + 98)
            continue
        d = max_scale / _F31
        put_u16(y, o, fp32_to_fp16(d * np.float32(1.0125)))
        inv_d = F1 / d
        for ib in range(8):
            l = max(0, min(15, nearest_int(F_HALF * (inv_d * scales[ib] - F1))))
            put_u32(y, o + 66 + 4 * ib, scales_and_signs[ib] | (l << 28))
    return 0


@njit(cache=True, error_model="numpy")
def _row_iq3_s(x, qw, has_qw, y, positions, kmap, neighbours):
    scales = np.zeros(8, dtype=np.float32)
    weight = np.empty(32, dtype=np.float32)
    waux = np.empty(32, dtype=np.float32)
    xval = np.empty(32, dtype=np.float32)
    L = np.zeros(32, dtype=np.int64)
    Laux = np.zeros(32, dtype=np.int64)
    idx = np.zeros(8, dtype=np.int64)
    signs = np.zeros(4, dtype=np.int64)
    for ibl in range(x.shape[0] // 256):
        xbl = x[256 * ibl : 256 * ibl + 256]
        o = 110 * ibl
        zero(y, o, o + 110)
        qs = o + 2  # advances only past blocks that were coded (as ggml's pointer does)
        qh = o + 66
        sg = o + 74
        max_scale = F0
        sigma2 = super_block_sigma2(xbl, 2.0)
        for ib in range(8):
            xb = xbl[32 * ib : 32 * ib + 32]
            block_weights(xb, qw, 256 * ibl + 32 * ib, has_qw, sigma2, F0, weight, 32)
            for i in range(32):
                waux[i] = np.sqrt(weight[i])
            for k in range(4):
                s = 0
                for i in range(8):
                    v = xb[8 * k + i]
                    if v >= F0:
                        xval[8 * k + i] = v
                    else:
                        xval[8 * k + i] = -v
                        s |= 1 << i
                signs[k] = s
            fmax = xval[0]
            for i in range(1, 32):
                fmax = c_max(fmax, xval[i])
            if fmax == F0:
                scales[ib] = F0
                continue
            zero(L, 0, L.shape[0])
            scale, ok = search_scale(
                xval, weight, waux, 32, 4, 8, _F_STEP, 9, False, True, positions, kmap, neighbours, L, Laux
            )
            if not ok:
                return 1
            if scale < F0:
                scale = -scale
                for k in range(4):
                    signs[k] = (~signs[k]) & 255
            if not grid_indices(L, 32, 4, kmap, idx):
                return 1
            for k in range(8):
                y[qs + k] = idx[k] & 255
                y[qh + (8 * ib + k) // 8] |= (idx[k] >> 8) << ((8 * ib + k) % 8)
            qs += 8
            for k in range(4):
                y[sg + k] = signs[k]
            sg += 4
            scales[ib] = scale
            max_scale = c_max(max_scale, scale)
        if max_scale == F0:
            continue
        d = max_scale / _F31
        put_u16(y, o, fp32_to_fp16(d * np.float32(1.033)))
        inv_d = F1 / d
        for ib in range(0, 8, 2):
            l1 = max(0, min(15, nearest_int(F_HALF * (inv_d * scales[ib] - F1))))
            l2 = max(0, min(15, nearest_int(F_HALF * (inv_d * scales[ib + 1] - F1))))
            y[o + 106 + ib // 2] = l1 | (l2 << 4)
    return 0


@njit(cache=True, nogil=True, error_model="numpy")
def quantize_iq3_xxs(x, qw, has_qw, out, positions, kmap, neighbours):
    status = np.zeros(x.shape[0], dtype=np.int32)
    for r in range(x.shape[0]):
        status[r] = _row_iq3_xxs(x[r], qw, has_qw, out[r], positions, kmap, neighbours)
    return status


@njit(cache=True, nogil=True, error_model="numpy")
def quantize_iq3_s(x, qw, has_qw, out, positions, kmap, neighbours):
    status = np.zeros(x.shape[0], dtype=np.int32)
    for r in range(x.shape[0]):
        status[r] = _row_iq3_s(x[r], qw, has_qw, out[r], positions, kmap, neighbours)
    return status

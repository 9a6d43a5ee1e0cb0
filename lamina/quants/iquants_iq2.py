"""Quantization to the 2-bit grid formats IQ2_XXS, IQ2_XS and IQ2_S, byte-exact with ggml.

All three code 8 values at a time as a point of an E8-like lattice grid (256, 512 or
1024 points) plus signs, and one 4-bit scale per 32 (IQ2_XXS) or 16 values under a
fp16 super-block scale. Kernels follow ggml-quants.c's quantize_row_iq2_{xxs,xs,s}_impl.
Each returns a status per row: 0, or 1 where ggml would abort (no grid point found,
which only non-finite arithmetic produces).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .common import c_max, fp32_to_fp16, make_qp_quants, nearest_int
from .iq_numeric import F0, F1, F_HALF, flip_to_even_signs, super_block_sigma2
from .iq_search import block_weights, fit_scale, grid_indices, put_u16, put_u32, search_scale, snap_to_grid, zero

_F31 = np.float32(31.0)
_F_STEP = np.float32(0.1)
_EPS = np.float32(1e-15)  # GROUP_MAX_EPS
_EPS_IQ2_S = np.float32(1e-8)  # GROUP_MAX_EPS_IQ2_S


@njit(cache=True, error_model="numpy")
def _row_iq2_xxs(x, qw, y, positions, kmap, neighbours):
    scales = np.zeros(8, dtype=np.float32)
    weight = np.empty(32, dtype=np.float32)
    waux = np.empty(32, dtype=np.float32)
    xval = np.empty(32, dtype=np.float32)
    L = np.zeros(32, dtype=np.int64)
    Laux = np.zeros(32, dtype=np.int64)
    Lqp = np.zeros(32, dtype=np.uint8)
    idx = np.zeros(4, dtype=np.int64)
    q2 = np.zeros(16, dtype=np.int64)
    signs = np.zeros(4, dtype=np.int64)
    for ibl in range(x.shape[0] // 256):
        xbl = x[256 * ibl : 256 * ibl + 256]
        o = 66 * ibl
        zero(q2, 0, q2.shape[0])
        max_scale = F0
        sigma2 = super_block_sigma2(xbl, 1.0)
        for ib in range(8):
            xb = xbl[32 * ib : 32 * ib + 32]
            block_weights(xb, qw, 256 * ibl + 32 * ib, True, sigma2, F0, weight, 32)
            for i in range(32):
                waux[i] = np.sqrt(weight[i])
            flip_to_even_signs(xb, weight, xval, 4, signs)
            fmax = xval[0]
            for i in range(1, 32):
                fmax = c_max(fmax, xval[i])
            if fmax < _EPS:
                scales[ib] = F0
                continue
            # only the scale is kept: ggml's later passes always replace these levels
            scale = make_qp_quants(32, 4, xval, Lqp, weight)
            eff_max = scale * np.float32(3.0)
            if eff_max <= F0:
                scales[ib] = F0
                continue
            best = F0
            for is_ in range(-6, 7):
                inv = (np.float32(5.0) + np.float32(is_) * _F_STEP) / eff_max
                this_scale = F1 / inv
                for k in range(4):
                    on, gi = snap_to_grid(
                        xval, waux, 8 * k, 8, 2, 3, inv, this_scale, kmap, neighbours, positions, Laux
                    )
                    if gi < 0:
                        return 1
                sumqx, sumq2 = fit_scale(xval, weight, Laux, 32)
                if sumq2 > F0 and sumqx * sumqx > best * sumq2:
                    scale = sumqx / sumq2
                    best = scale * sumqx
                    for i in range(32):
                        L[i] = Laux[i]
            if scale > F0:
                inv = F1 / scale
                for k in range(4):
                    on, gi = snap_to_grid(xval, waux, 8 * k, 8, 2, 3, inv, scale, kmap, neighbours, positions, L)
                    if gi < 0:
                        return 1
                sumqx, sumq2 = fit_scale(xval, weight, L, 32)
                if sumq2 > F0:
                    scale = sumqx / sumq2
            if scale < F0:
                scale = -scale
                for k in range(4):
                    signs[k] = (~signs[k]) & 127
            if not grid_indices(L, 32, 8, kmap, idx):
                return 1
            for k in range(4):
                q2[2 * ib] |= idx[k] << (8 * k)
                q2[2 * ib + 1] |= signs[k] << (7 * k)
            scales[ib] = scale
            max_scale = c_max(max_scale, scale)
        if max_scale == F0:
            zero(y, o, o + 66)
            continue
        d = max_scale / _F31
        put_u16(y, o, fp32_to_fp16(d))
        inv_d = F1 / d
        for ib in range(8):
            l = max(0, min(15, nearest_int(F_HALF * (inv_d * scales[ib] - F1))))
            q2[2 * ib + 1] |= l << 28
        for j in range(16):
            put_u32(y, o + 2 + 4 * j, q2[j])
    return 0


@njit(cache=True, error_model="numpy")
def _row_iq2_xs_or_s(x, qw, has_qw, y, positions, kmap, neighbours, is_s):
    """IQ2_XS (``is_s`` False: 9-bit index + 7 sign bits per group) or IQ2_S (10-bit index, 8 sign bits)."""
    block_bytes = 82 if is_s else 74
    scales = np.zeros(16, dtype=np.float32)
    weight = np.empty(16, dtype=np.float32)
    waux = np.empty(16, dtype=np.float32)
    xval = np.empty(16, dtype=np.float32)
    L = np.zeros(16, dtype=np.int64)
    Laux = np.zeros(16, dtype=np.int64)
    idx = np.zeros(2, dtype=np.int64)
    signs = np.zeros(2, dtype=np.int64)
    for ibl in range(x.shape[0] // 256):
        xbl = x[256 * ibl : 256 * ibl + 256]
        o = block_bytes * ibl
        zero(y, o, o + block_bytes)
        max_scale = F0
        sigma2 = super_block_sigma2(xbl, 2.0 if is_s else 1.0)
        for ib in range(16):
            xb = xbl[16 * ib : 16 * ib + 16]
            block_weights(xb, qw, 256 * ibl + 16 * ib, has_qw, sigma2, np.float32(0.25) * sigma2, weight, 16)
            for i in range(16):
                waux[i] = np.sqrt(weight[i])
            if is_s:
                for k in range(2):
                    s = 0
                    for i in range(8):
                        v = xb[8 * k + i]
                        if v >= F0:
                            xval[8 * k + i] = v
                        else:
                            xval[8 * k + i] = -v
                            s |= 1 << i
                    signs[k] = s
            else:
                flip_to_even_signs(xb, weight, xval, 2, signs)
            fmax = xval[0]
            for i in range(1, 16):
                fmax = c_max(fmax, xval[i])
            if fmax < (_EPS_IQ2_S if is_s else _EPS):
                scales[ib] = F0
                continue
            zero(L, 0, L.shape[0])
            scale, ok = search_scale(
                xval, weight, waux, 16, 8, 3, _F_STEP, 9, True, False, positions, kmap, neighbours, L, Laux
            )
            if not ok:
                return 1
            if scale < F0:
                scale = -scale
                for k in range(2):
                    signs[k] = (~signs[k]) & (255 if is_s else 127)
            if not grid_indices(L, 16, 8, kmap, idx):
                return 1
            for k in range(2):
                if is_s:
                    i8 = 2 * ib + k
                    y[o + 2 + i8] = idx[k] & 255
                    y[o + 66 + i8 // 4] |= (idx[k] >> 8) << (2 * (i8 % 4))
                    y[o + 2 + 32 + i8] = signs[k]
                else:
                    put_u16(y, o + 2 + 2 * (2 * ib + k), idx[k] | (signs[k] << 9))
            scales[ib] = scale
            max_scale = c_max(max_scale, scale)
        if max_scale == F0:
            if not is_s:  # IQ2_XS builds its indices aside and drops them; IQ2_S wrote them in place
                zero(y, o, o + block_bytes)
            continue
        d = max_scale / _F31
        put_u16(y, o, fp32_to_fp16(d * np.float32(0.9875) if is_s else d))
        inv_d = F1 / d
        sc = o + (74 if is_s else 66)
        for ib in range(16):
            l = max(0, min(15, nearest_int(F_HALF * (inv_d * scales[ib] - F1))))
            if ib % 2 == 0:
                y[sc + ib // 2] = l
            else:
                y[sc + ib // 2] |= l << 4
    return 0


@njit(cache=True, nogil=True, error_model="numpy")
def quantize_iq2_xxs(x, qw, out, positions, kmap, neighbours):
    status = np.zeros(x.shape[0], dtype=np.int32)
    for r in range(x.shape[0]):
        status[r] = _row_iq2_xxs(x[r], qw, out[r], positions, kmap, neighbours)
    return status


@njit(cache=True, nogil=True, error_model="numpy")
def quantize_iq2_xs(x, qw, out, positions, kmap, neighbours):
    status = np.zeros(x.shape[0], dtype=np.int32)
    for r in range(x.shape[0]):
        status[r] = _row_iq2_xs_or_s(x[r], qw, True, out[r], positions, kmap, neighbours, False)
    return status


@njit(cache=True, nogil=True, error_model="numpy")
def quantize_iq2_s(x, qw, has_qw, out, positions, kmap, neighbours):
    status = np.zeros(x.shape[0], dtype=np.int32)
    for r in range(x.shape[0]):
        status[r] = _row_iq2_xs_or_s(x[r], qw, has_qw, out[r], positions, kmap, neighbours, True)
    return status

"""Quantization to the ~1.6-bit formats IQ1_S and IQ1_M, byte-exact with ggml.

Values are -1, 0 or +1 shifted by ±1/8 (the "delta"), coded 8 at a time as a point
of a 2048-point grid. With three levels the best split of a block's sorted values
into three groups can be searched exhaustively; groups whose levels are off the grid
then snap to the nearest listed neighbour. Kernels follow ggml-quants.c's
quantize_row_iq1_s_impl and quantize_row_iq1_m_impl. Status per row: 0, or 1 where
ggml would abort.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .common import c_max, fp32_to_fp16, nearest_int
from .iq_numeric import F0, F1, F_HALF, F_MAX, super_block_sigma2
from .iq_search import block_weights, pack_levels, put_u16, zero

_F15 = np.float32(15.0)
_DELTA = np.float32(0.125)  # IQ1S_DELTA == IQ1M_DELTA
_EPS_IQ1_S = np.float32(1e-12)  # GROUP_MAX_EPS_IQ1_S
_EPS_IQ1_M = np.float32(1e-7)  # GROUP_MAX_EPS_IQ1_M


@njit(cache=True, error_model="numpy")
def _shifted_levels():
    """x_p = {-1+δ, δ, 1+δ} and x_m = {-1-δ, -δ, 1-δ}: the three values under either shift."""
    x_p = np.empty(3, dtype=np.float32)
    x_m = np.empty(3, dtype=np.float32)
    x_p[0] = np.float32(-1.0) + _DELTA
    x_p[1] = _DELTA
    x_p[2] = F1 + _DELTA
    x_m[0] = np.float32(-1.0) - _DELTA
    x_m[1] = -_DELTA
    x_m[2] = F1 - _DELTA
    return x_p, x_m


@njit(cache=True, error_model="numpy")
def _stable_order(xb, n, order):
    """Indices of ``xb`` by ascending value, equal values in original order (glibc's qsort is a merge sort)."""
    for j in range(n):
        v = xb[j]
        m = j
        while m > 0 and v < xb[order[m - 1]]:
            order[m] = order[m - 1]
            m -= 1
        order[m] = j


@njit(cache=True, error_model="numpy")
def _find_best_neighbour2(neighbours, start, positions, xval, weight, scale, xx, L):
    """ggml's ``iq1_find_best_neighbour2``: the listed neighbour of least weighted squared error.

    Returns -1 where no distance is below FLT_MAX (ggml then scans the whole grid with an
    out-of-bounds read and aborts; lamina reports the row instead).
    """
    count = int(neighbours[start])
    best = F_MAX
    grid_index = -1
    for j in range(1, count + 1):
        g = int(neighbours[start + j])
        d2 = F0
        for i in range(8):
            q = xx[(positions[g, i] - 1) // 2]
            w = weight[i]
            diff = scale * q - xval[i]
            d2 += w * diff * diff
        if d2 < best:
            best = d2
            grid_index = g
    if grid_index >= 0:
        for i in range(8):
            L[i] = (positions[grid_index, i] - 1) // 2
    return grid_index


@njit(cache=True, error_model="numpy")
def _snap_groups(L, xb, weight, scale, n_groups, first_levels, other_levels, positions, kmap, neighbours, index):
    """Grid index of each group of 8 levels, snapping off-grid groups. Returns (all on grid, ok)."""
    all_on_grid = True
    for k in range(n_groups):
        xx = first_levels if k == 0 else other_levels
        u = pack_levels(L, 8 * k, 8, 2)
        gi = kmap[u]
        if gi < 0:
            all_on_grid = False
            gi = _find_best_neighbour2(
                neighbours,
                -gi - 1,
                positions,
                xb[8 * k : 8 * k + 8],
                weight[8 * k : 8 * k + 8],
                scale,
                xx,
                L[8 * k : 8 * k + 8],
            )
            if gi < 0:
                return False, False
        index[k] = gi
    return all_on_grid, True


@njit(cache=True, error_model="numpy")
def _refit_scale(xb, weight, index, n_groups, first_levels, other_levels, positions, scale):
    sumqx = F0
    sumq2 = F0
    for k in range(n_groups):
        xx = first_levels if k == 0 else other_levels
        for j in range(8):
            w = weight[8 * k + j]
            q = xx[(positions[index[k], j] - 1) // 2]
            sumqx += w * q * xb[8 * k + j]
            sumq2 += w * q * q
    if sumqx > F0 and sumq2 > F0:
        return sumqx / sumq2
    return scale


@njit(cache=True, error_model="numpy")
def _row_iq1_s(x, qw, y, positions, kmap, neighbours):
    x_p, x_m = _shifted_levels()
    p0, p1, p2 = x_p[0], x_p[1], x_p[2]
    m0, m1, m2 = x_m[0], x_m[1], x_m[2]
    scales = np.zeros(8, dtype=np.float32)
    shifts = np.zeros(8, dtype=np.int64)
    weight = np.empty(32, dtype=np.float32)
    sumx = np.zeros(33, dtype=np.float32)
    sumw = np.zeros(33, dtype=np.float32)
    order = np.zeros(32, dtype=np.int64)
    L = np.zeros(32, dtype=np.int64)
    index = np.zeros(4, dtype=np.int64)
    for ibl in range(x.shape[0] // 256):
        xbl = x[256 * ibl : 256 * ibl + 256]
        o = 50 * ibl
        zero(y, o, o + 50)
        max_scale = F0
        sigma2 = super_block_sigma2(xbl, 2.0)
        for ib in range(8):
            xb = xbl[32 * ib : 32 * ib + 32]
            block_weights(xb, qw, 256 * ibl + 32 * ib, True, sigma2, F0, weight, 32)
            fmax = abs(xb[0])
            for i in range(1, 32):
                fmax = c_max(fmax, abs(xb[i]))
            if fmax < _EPS_IQ1_S:
                scales[ib] = F0
                shifts[ib] = 1
                continue
            _stable_order(xb, 32, order)
            sumx[0] = F0
            sumw[0] = F0
            for j in range(32):
                i = order[j]
                sumx[j + 1] = sumx[j] + weight[i] * xb[i]
                sumw[j + 1] = sumw[j] + weight[i]
            best_score = -F_MAX
            scale = fmax
            besti1 = -1
            besti2 = -1
            best_shift = 0
            for i1 in range(33):
                a_x = sumx[i1] - sumx[0]
                a_w = sumw[i1] - sumw[0]
                for i2 in range(i1, 33):
                    b_x = sumx[i2] - sumx[i1]
                    c_x = sumx[32] - sumx[i2]
                    b_w = sumw[i2] - sumw[i1]
                    c_w = sumw[32] - sumw[i2]
                    # shift +δ, then -δ
                    sumqx = a_x * p0 + b_x * p1 + c_x * p2
                    sumq2 = a_w * p0 * p0 + b_w * p1 * p1 + c_w * p2 * p2
                    if sumq2 > F0 and sumqx * sumqx > best_score * sumq2:
                        scale = sumqx / sumq2
                        best_score = scale * sumqx
                        besti1 = i1
                        besti2 = i2
                        best_shift = 1
                    sumqx = a_x * m0 + b_x * m1 + c_x * m2
                    sumq2 = a_w * m0 * m0 + b_w * m1 * m1 + c_w * m2 * m2
                    if sumq2 > F0 and sumqx * sumqx > best_score * sumq2:
                        scale = sumqx / sumq2
                        best_score = scale * sumqx
                        besti1 = i1
                        besti2 = i2
                        best_shift = -1
            if besti1 < 0 or besti2 < 0 or best_shift == 0:
                scales[ib] = F0
                shifts[ib] = 1
                continue
            for j in range(32):
                L[order[j]] = 0 if j < besti1 else (1 if j < besti2 else 2)
            if scale < F0:
                for j in range(32):
                    L[j] = 2 - L[j]
                scale = -scale
                best_shift = -best_shift
            xx = x_p if best_shift == 1 else x_m
            all_on_grid, ok = _snap_groups(L, xb, weight, scale, 4, xx, xx, positions, kmap, neighbours, index)
            if not ok:
                return 1
            if not all_on_grid:
                scale = _refit_scale(xb, weight, index, 4, xx, xx, positions, scale)
            h = 0
            for k in range(4):
                y[o + 2 + 4 * ib + k] = index[k] & 255
                h |= (index[k] >> 8) << (3 * k)
            put_u16(y, o + 34 + 2 * ib, h)
            scales[ib] = scale
            shifts[ib] = best_shift
            max_scale = c_max(max_scale, scale)
        if max_scale == F0:
            continue
        d = max_scale / _F15
        put_u16(y, o, fp32_to_fp16(d * np.float32(1.125)))
        inv_d = F1 / d
        for ib in range(8):
            l = max(0, min(7, nearest_int(F_HALF * (inv_d * scales[ib] - F1))))
            if shifts[ib] == -1:
                l |= 8
            y[o + 34 + 2 * ib + 1] |= l << 4  # bits 12..15 of qh[ib]
    return 0


@njit(cache=True, error_model="numpy")
def _row_iq1_m(x, qw, has_qw, y, positions, kmap, neighbours):
    x_p, x_m = _shifted_levels()
    scales = np.zeros(16, dtype=np.float32)
    shifts = np.zeros(16, dtype=np.int64)
    weight = np.empty(16, dtype=np.float32)
    order = np.zeros(16, dtype=np.int64)
    L = np.zeros(16, dtype=np.int64)
    index = np.zeros(2, dtype=np.int64)
    px = np.zeros((2, 17), dtype=np.float32)
    pw = np.zeros((2, 17), dtype=np.float32)
    masks = (0x00, 0x80, 0x08, 0x88)
    p2 = x_p[2]
    m2 = x_m[2]
    cp1 = x_p[0] * x_p[0] - x_p[1] * x_p[1]
    cp2 = x_p[1] * x_p[1] - x_p[2] * x_p[2]
    cm1 = x_m[0] * x_m[0] - x_m[1] * x_m[1]
    cm2 = x_m[1] * x_m[1] - x_m[2] * x_m[2]
    sc = np.zeros(4, dtype=np.int64)
    for ibl in range(x.shape[0] // 256):
        xbl = x[256 * ibl : 256 * ibl + 256]
        o = 56 * ibl
        zero(y, o, o + 56)
        max_scale = F0
        sigma2 = super_block_sigma2(xbl, 2.0)
        for ib in range(16):
            xb = xbl[16 * ib : 16 * ib + 16]
            block_weights(xb, qw, 256 * ibl + 16 * ib, has_qw, sigma2, F0, weight, 16)
            fmax = abs(xb[0])
            for i in range(1, 16):
                fmax = c_max(fmax, abs(xb[i]))
            if fmax < _EPS_IQ1_M:
                scales[ib] = F0
                shifts[ib] = 0
                continue
            _stable_order(xb, 16, order)
            best_score = -F_MAX
            scale = fmax
            besti1 = -1
            besti2 = -1
            best_k = -1
            # prefix sums per half of the block, since each half has its own shift
            px[0, 0] = F0
            px[1, 0] = F0
            pw[0, 0] = F0
            pw[1, 0] = F0
            for j in range(16):
                i = order[j]
                h = 0 if i < 8 else 1
                px[h, j + 1] = px[h, j] + weight[i] * xb[i]
                px[1 - h, j + 1] = px[1 - h, j]
                pw[h, j + 1] = pw[h, j] + weight[i]
                pw[1 - h, j + 1] = pw[1 - h, j]
            # per half h: Σw·x·q = T·v2 - S(i1) - S(i2) and Σw·q² from the weights, for either shift
            tx0 = px[0, 16] * p2
            tx1 = px[1, 16] * p2
            ux0 = px[0, 16] * m2
            ux1 = px[1, 16] * m2
            tw0 = pw[0, 16] * p2 * p2
            tw1 = pw[1, 16] * p2 * p2
            vw0 = pw[0, 16] * m2 * m2
            vw1 = pw[1, 16] * m2 * m2
            for i1 in range(17):
                for i2 in range(i1, 17):
                    sx0 = px[0, i1] + px[0, i2]
                    sx1 = px[1, i1] + px[1, i2]
                    qxp0 = tx0 - sx0
                    qxm0 = ux0 - sx0
                    qxp1 = tx1 - sx1
                    qxm1 = ux1 - sx1
                    q2p0 = tw0 + pw[0, i1] * cp1 + pw[0, i2] * cp2
                    q2m0 = vw0 + pw[0, i1] * cm1 + pw[0, i2] * cm2
                    q2p1 = tw1 + pw[1, i1] * cp1 + pw[1, i2] * cp2
                    q2m1 = vw1 + pw[1, i1] * cm1 + pw[1, i2] * cm2
                    for k in range(4):  # shifts of the two halves: ++, +-, -+, --
                        if k == 0:
                            sqx, sq2 = qxp0 + qxp1, q2p0 + q2p1
                        elif k == 1:
                            sqx, sq2 = qxp0 + qxm1, q2p0 + q2m1
                        elif k == 2:
                            sqx, sq2 = qxm0 + qxp1, q2m0 + q2p1
                        else:
                            sqx, sq2 = qxm0 + qxm1, q2m0 + q2m1
                        if sq2 > F0 and sqx * sqx > best_score * sq2:
                            scale = sqx / sq2
                            best_score = scale * sqx
                            besti1 = i1
                            besti2 = i2
                            best_k = k
            if besti1 < 0 or besti2 < 0 or best_k < 0:
                scales[ib] = F0
                shifts[ib] = 0
                continue
            for j in range(16):
                L[order[j]] = 0 if j < besti1 else (1 if j < besti2 else 2)
            if scale < F0:
                for j in range(16):
                    L[j] = 2 - L[j]
                scale = -scale
                best_k = 3 - best_k
            first = x_p if best_k < 2 else x_m
            second = x_p if best_k % 2 == 0 else x_m
            all_on_grid, ok = _snap_groups(L, xb, weight, scale, 2, first, second, positions, kmap, neighbours, index)
            if not ok:
                return 1
            if not all_on_grid:
                scale = _refit_scale(xb, weight, index, 2, first, second, positions, scale)
            y[o + 2 * ib] = index[0] & 255
            y[o + 2 * ib + 1] = index[1] & 255
            y[o + 32 + ib] = (index[0] >> 8) | ((index[1] >> 8) << 4)
            scales[ib] = scale
            shifts[ib] = best_k
            max_scale = c_max(max_scale, scale)
        if max_scale == F0:
            continue
        zero(sc, 0, sc.shape[0])
        d = max_scale / _F15
        inv_d = F1 / d
        fqx = F0
        fq2 = F0
        for ib in range(16):
            l = max(0, min(7, nearest_int(F_HALF * (inv_d * scales[ib] - F1))))
            sc[ib // 4] |= l << (3 * (ib % 4))
            y[o + 32 + ib] |= masks[shifts[ib]]
            xb = xbl[16 * ib : 16 * ib + 16]
            block_weights(xb, qw, 256 * ibl + 16 * ib, has_qw, sigma2, F0, weight, 16)
            qh = np.int64(y[o + 32 + ib])
            mult = np.float32(2 * l + 1)
            for k in range(2):
                if k == 0:
                    xx = x_p if shifts[ib] < 2 else x_m
                else:
                    xx = x_p if shifts[ib] % 2 == 0 else x_m
                g = np.int64(y[o + 2 * ib + k]) + ((qh << (8 - 4 * k)) & 0x700)
                for j in range(8):
                    w = weight[8 * k + j]
                    q = xx[(positions[g, j] - 1) // 2] * mult
                    fqx += w * q * xb[8 * k + j]
                    fq2 += w * q * q
        if fq2 > F0:
            d = fqx / fq2
        s = fp32_to_fp16(d * np.float32(1.1125))
        sc[0] |= (s & 0x000F) << 12
        sc[1] |= (s & 0x00F0) << 8
        sc[2] |= (s & 0x0F00) << 4
        sc[3] |= s & 0xF000
        for j in range(4):
            put_u16(y, o + 48 + 2 * j, sc[j])
    return 0


@njit(cache=True, nogil=True, error_model="numpy")
def quantize_iq1_s(x, qw, out, positions, kmap, neighbours):
    status = np.zeros(x.shape[0], dtype=np.int32)
    for r in range(x.shape[0]):
        status[r] = _row_iq1_s(x[r], qw, out[r], positions, kmap, neighbours)
    return status


@njit(cache=True, nogil=True, error_model="numpy")
def quantize_iq1_m(x, qw, has_qw, out, positions, kmap, neighbours):
    status = np.zeros(x.shape[0], dtype=np.int32)
    for r in range(x.shape[0]):
        status[r] = _row_iq1_m(x[r], qw, has_qw, out[r], positions, kmap, neighbours)
    return status

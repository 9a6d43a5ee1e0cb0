"""The scale search that IQ2_XS, IQ2_S, IQ3_XXS and IQ3_S share (ggml-quants.c, quantize_row_*_impl).

For one block of |x| values the search tries a ladder of inverse scales around
``(2·kMaxQ-1)/max``; at each it rounds every group of ``dims`` values to levels,
snaps groups that fall off the grid to their best listed neighbour, and keeps the
levels with the best weighted least-squares fit. Groups that ended off the grid are
then re-snapped at the winning scale and the scale refitted once more.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .common import c_max, nearest_int
from .iq_numeric import F0, F1, F_HALF, find_best_neighbour


@njit(cache=True, inline="always", error_model="numpy")
def pack_levels(L, start, dims, bits):
    u = 0
    for i in range(dims):
        u |= np.int64(L[start + i]) << (bits * i)
    return u


@njit(cache=True, inline="always", error_model="numpy")
def snap_to_grid(xval, waux, start, dims, bits, kmaxq, inv_scale, scale, kmap, neighbours, positions, L):
    """Round one group to levels at ``inv_scale``; if off the grid, take the best neighbour at ``scale``.

    Returns (on_grid, grid index or -1 when no neighbour had a finite distance).
    """
    for i in range(dims):
        l = nearest_int(F_HALF * (inv_scale * xval[start + i] - F1))
        L[start + i] = max(0, min(kmaxq - 1, l))
    u = pack_levels(L, start, dims, bits)
    grid_index = kmap[u]
    if grid_index >= 0:
        return True, grid_index
    grid_index = find_best_neighbour(
        neighbours,
        -grid_index - 1,
        positions,
        dims,
        xval[start : start + dims],
        waux[start : start + dims],
        scale,
        L[start : start + dims],
    )
    return False, grid_index


@njit(cache=True, inline="always", error_model="numpy")
def fit_scale(xval, weight, L, n):
    """Weighted least-squares sums Σw·x·q and Σw·q² for odd levels q = 2L+1, in ggml's order."""
    sumqx = F0
    sumq2 = F0
    for i in range(n):
        w = weight[i]
        q = np.float32(2 * L[i] + 1)
        sumqx += w * xval[i] * q
        sumq2 += w * q * q
    return sumqx, sumq2


@njit(cache=True, error_model="numpy")
def search_scale(
    xval, weight, waux, n, dims, kmaxq, step, nsteps, on_grid_start, refine_all, positions, kmap, neighbours, L, Laux
):
    """Returns (scale, ok); ``L`` holds the chosen levels (all on the grid when ok).

    ``step``/``nsteps``: the ladder is ``(2·kMaxQ-1 + is·step)/max`` for is in ±nsteps.
    ``on_grid_start``: what the groups count as before any trial is kept (IQ3_S: off grid).
    ``refine_all``: re-snap every group at the final scale, not only those off the grid (IQ3_S).
    """
    bits = 2 if dims == 8 else 3
    groups = n // dims
    fmax = xval[0]
    for i in range(1, n):
        fmax = c_max(fmax, xval[i])
    on_grid = np.empty(groups, dtype=np.bool_)
    on_grid_aux = np.empty(groups, dtype=np.bool_)
    for k in range(groups):
        on_grid[k] = on_grid_start
    best = F0
    top = np.float32(2 * kmaxq - 1)
    scale = fmax / top
    for is_ in range(-nsteps, nsteps + 1):
        inv = (top + np.float32(is_) * step) / fmax
        this_scale = F1 / inv
        for k in range(groups):
            on, gi = snap_to_grid(
                xval, waux, dims * k, dims, bits, kmaxq, inv, this_scale, kmap, neighbours, positions, Laux
            )
            if gi < 0:
                return F0, False
            on_grid_aux[k] = on
        sumqx, sumq2 = fit_scale(xval, weight, Laux, n)
        if sumq2 > F0 and sumqx * sumqx > best * sumq2:
            scale = sumqx / sumq2
            best = scale * sumqx
            for i in range(n):
                L[i] = Laux[i]
            for k in range(groups):
                on_grid[k] = on_grid_aux[k]
    n_off = 0
    for k in range(groups):
        if not on_grid[k]:
            n_off += 1
    if n_off > 0 and scale > F0:
        inv = F1 / scale
        for k in range(groups):
            if on_grid[k] and not refine_all:
                continue
            on, gi = snap_to_grid(xval, waux, dims * k, dims, bits, kmaxq, inv, scale, kmap, neighbours, positions, L)
            if gi < 0:
                return F0, False
        sumqx, sumq2 = fit_scale(xval, weight, L, n)
        if sumq2 > F0:
            scale = sumqx / sumq2
    return scale, True


@njit(cache=True, error_model="numpy")
def grid_indices(L, n, dims, kmap, out):
    """The grid index of each group of final levels; False if one is off the grid (ggml aborts there)."""
    bits = 2 if dims == 8 else 3
    for k in range(n // dims):
        gi = kmap[pack_levels(L, dims * k, dims, bits)]
        if gi < 0:
            return False
        out[k] = gi
    return True


@njit(cache=True, inline="always", error_model="numpy")
def zero(buf, start, stop):
    for i in range(start, stop):
        buf[i] = 0


@njit(cache=True, inline="always", error_model="numpy")
def put_u16(buf, o, v):
    buf[o] = v & 0xFF
    buf[o + 1] = (v >> 8) & 0xFF


@njit(cache=True, inline="always", error_model="numpy")
def put_u32(buf, o, v):
    put_u16(buf, o, v & 0xFFFF)
    put_u16(buf, o + 2, (v >> 16) & 0xFFFF)


@njit(cache=True, error_model="numpy")
def block_weights(xb, qw, qoff, has_qw, sigma2, no_qw_bias, weight, n):
    """ggml's per-value weights: qw·sqrt(σ² + x²) with an importance matrix, else bias + x²."""
    for i in range(n):
        v = xb[i]
        if has_qw:
            weight[i] = qw[qoff + i] * np.sqrt(sigma2 + v * v)
        else:
            weight[i] = no_qw_bias + v * v

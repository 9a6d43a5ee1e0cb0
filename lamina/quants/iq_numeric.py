"""Scalar float32 helpers the i-quant kernels share, each reproducing ggml-quants.c bit for bit.

ggml computes in IEEE float32 with no contraction into fused multiply-adds, so every
kernel here keeps each intermediate in float32 and evaluates in the C code's order.
Numba widens ``float32 op int`` and ``float32 op 1.0`` to float64, so constants are
spelled as the ``F`` values below and integers are converted explicitly. The helpers
all block formats share (nearest_int, fp16 conversion, C's MAX, make_qp_quants) come
from :mod:`lamina.quants.common`.

Numba's on-disk cache keys a kernel on its own file only: after editing this module
(or common.py), clear the ``__pycache__`` numba files of the kernel modules that call it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

F0 = np.float32(0.0)
F1 = np.float32(1.0)
F_HALF = np.float32(0.5)
F_MAX = np.float32(np.finfo(np.float32).max)  # FLT_MAX


@njit(cache=True, inline="always", error_model="numpy")
def find_best_neighbour(neighbours, start, positions, dims, xval, weight, scale, L):
    """ggml's ``iq2_find_best_neighbour`` / ``iq3_find_best_neighbour``.

    Among the neighbour list at ``start`` picks the grid point nearest to ``xval`` in
    weighted squared distance at ``scale`` (first one on ties), writes its levels to ``L``
    and returns its grid index (-1 if none was finite). ``dims`` is positions.shape[1],
    passed as a constant so the compiler can unroll the distance loop.
    """
    count = int(neighbours[start])
    best_d2 = F_MAX
    grid_index = -1
    for j in range(1, count + 1):
        g = int(neighbours[start + j])
        d2 = F0
        for i in range(dims):
            q = np.float32(positions[g, i])
            diff = scale * q - xval[i]
            d2 += weight[i] * diff * diff
        if d2 < best_d2:
            best_d2 = d2
            grid_index = g
    if grid_index >= 0:
        for i in range(dims):
            L[i] = (positions[grid_index, i] - 1) // 2
    return grid_index


@njit(cache=True, error_model="numpy")
def flip_to_even_signs(xb, weight, xval, n_groups, signs):
    """The sign handling of IQ2_XXS, IQ2_XS and IQ3_XXS: fold signs into 7 stored bits per 8 values.

    Takes |x| into ``xval``; when a group of 8 has an odd count of negatives, the value
    with the smallest weight·x² keeps its sign flipped (stored negative in ``xval``) so
    that the eighth sign bit can be implied by parity. Writes the 7-bit sign masks to ``signs``.
    """
    for k in range(n_groups):
        nflip = 0
        s = 0
        for i in range(8):
            v = xb[8 * k + i]
            if v >= F0:
                xval[8 * k + i] = v
            else:
                xval[8 * k + i] = -v
                nflip += 1
                s |= 1 << i
        if nflip % 2:
            imin = 0
            v = xb[8 * k]
            vmin = weight[8 * k] * v * v
            for i in range(1, 8):
                v = xb[8 * k + i]
                ax = weight[8 * k + i] * v * v
                if ax < vmin:
                    vmin = ax
                    imin = i
            xval[8 * k + imin] = -xval[8 * k + imin]
            s ^= 1 << imin
        signs[k] = s & 127


@njit(cache=True, error_model="numpy")
def super_block_sigma2(xbl, factor):
    """``factor * Σx² / 256`` over one super-block, summed in order as ggml does."""
    sumx2 = F0
    for i in range(256):
        sumx2 += xbl[i] * xbl[i]
    return np.float32(factor) * sumx2 / np.float32(256.0)

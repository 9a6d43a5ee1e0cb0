"""Scalar float32 helpers the i-quant kernels share, each reproducing ggml-quants.c bit for bit.

ggml computes in IEEE float32 with no contraction into fused multiply-adds, so every
kernel here keeps each intermediate in float32 and evaluates in the C code's order.
Numba widens ``float32 op int`` and ``float32 op 1.0`` to float64, so constants are
spelled as the ``F`` values below and integers are converted explicitly.

(These duplicate a few helpers a sibling module may offer; they are private to the
i-quants so both can be merged later.)

Numba's on-disk cache keys a kernel on its own file only: after editing this module,
clear the ``__pycache__`` numba files of the kernel modules that call it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

F0 = np.float32(0.0)
F1 = np.float32(1.0)
F_HALF = np.float32(0.5)
F_MAX = np.float32(np.finfo(np.float32).max)  # FLT_MAX
_MAGIC = np.float32(12582912.0)  # 1.5 * 2**23, ggml's rounding constant


@njit(cache=True, inline="always", error_model="numpy")
def cmax(a, b):
    """C's ``MAX(a, b)``: ``a > b ? a : b`` (differs from Python's max on ties of ±0)."""
    return a if a > b else b


@njit(cache=True, inline="always", error_model="numpy")
def cmin(a, b):
    """C's ``MIN(a, b)``: ``a < b ? a : b``."""
    return a if a < b else b


@njit(cache=True, error_model="numpy")
def _nearest_int_wide(fval):
    # ggml adds 1.5*2**23 in float32 and reads the low 23 mantissa bits minus 2**22.
    val = np.float32(fval + _MAGIC)
    if math.isnan(val):
        mantissa = 0x400000
    elif math.isinf(val) or val == F0:
        mantissa = 0
    else:
        m, e = math.frexp(abs(float(val)))  # |val| = (2m) * 2**(e-1), 2m in [1, 2)
        mantissa = int((2.0 * m - 1.0) * 8388608.0)
    return mantissa - 0x400000


@njit(cache=True, inline="always", error_model="numpy")
def nearest_int(fval):
    """ggml's ``nearest_int``: round a float32 to the nearest integer, ties to even."""
    if abs(fval) <= 4194303.0:
        return int(np.rint(fval))
    return _nearest_int_wide(fval)


@njit(cache=True, error_model="numpy")
def fp16_bits(f):
    """The IEEE half-precision bits of float32 ``f``, rounded to nearest even (GGML_FP32_TO_FP16)."""
    x = float(f)  # exact
    sign = 0x8000 if math.copysign(1.0, x) < 0.0 else 0  # also for -0.0 and NaNs
    a = abs(x)
    if math.isnan(a):
        return sign | 0x7E00
    if a >= 65520.0:  # rounds past the largest half (65504), or inf
        return sign | 0x7C00
    if a < 6.103515625e-05:  # below 2**-14: a multiple of the subnormal step 2**-24
        return sign | int(np.rint(a * 16777216.0))
    m, e = math.frexp(a)  # a = m * 2**e, m in [0.5, 1)
    # 11 significant bits, rounded to even; a carry into the exponent falls out of the sum
    r = int(np.rint(m * 2048.0))
    return sign | (((e + 14) << 10) + r - 1024)


@njit(cache=True, error_model="numpy")
def fp16_value(bits):
    """The float32 value of IEEE half-precision ``bits`` (GGML_FP16_TO_FP32)."""
    sign = -1.0 if bits & 0x8000 else 1.0
    exp = (bits >> 10) & 0x1F
    mant = bits & 0x3FF
    if exp == 0:
        v = math.ldexp(float(mant), -24)
    elif exp == 31:
        v = math.inf if mant == 0 else math.nan
    else:
        v = math.ldexp(float(mant + 1024), exp - 25)
    return np.float32(sign * v)


@njit(cache=True, error_model="numpy")
def make_qp_quants(n, nmax, x, L, quant_weights):
    """ggml's ``make_qp_quants``: a positive scale and levels 0..nmax for ``x`` under weights.

    ``L`` is uint8 as in ggml: a negative level written to it wraps, and later passes read
    the wrapped value, exactly as the C code does.
    """
    fmax = F0
    for i in range(n):
        fmax = cmax(fmax, x[i])
    if fmax < np.float32(1e-15):  # GROUP_MAX_EPS
        for i in range(n):
            L[i] = 0
        return F0
    fnmax = np.float32(nmax)
    iscale = fnmax / fmax
    for i in range(n):
        L[i] = nearest_int(iscale * x[i]) & 0xFF
    scale = F1 / iscale
    best_mse = F0
    for i in range(n):
        diff = x[i] - scale * np.float32(L[i])
        w = quant_weights[i]
        best_mse += w * diff * diff
    for is_ in range(-4, 5):
        if is_ == 0:
            continue
        iscale_is = (np.float32(0.1) * np.float32(is_) + fnmax) / fmax
        scale_is = F1 / iscale_is
        mse = F0
        for i in range(n):
            l = min(nmax, nearest_int(iscale_is * x[i]))
            diff = x[i] - scale_is * np.float32(l)
            w = quant_weights[i]
            mse += w * diff * diff
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_is
    sumlx = F0
    suml2 = F0
    for i in range(n):
        l = min(nmax, nearest_int(iscale * x[i]))
        L[i] = l & 0xFF
        w = quant_weights[i]
        fl = np.float32(l)
        sumlx += w * x[i] * fl
        suml2 += w * fl * fl
    for _itry in range(5):
        n_changed = 0
        for i in range(n):
            w = quant_weights[i]
            li = np.float32(L[i])
            slx = sumlx - w * x[i] * li
            sl2 = suml2 - w * li * li
            if slx > F0 and sl2 > F0:
                new_l = min(nmax, nearest_int(x[i] * sl2 / slx))
                if new_l != L[i]:
                    fl = np.float32(new_l)
                    slx += w * x[i] * fl
                    sl2 += w * fl * fl
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l & 0xFF
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return sumlx / suml2 if suml2 > F0 else F0


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

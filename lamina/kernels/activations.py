"""Activation quantization as llama.cpp's dot products do it.

ggml multiplies a quantized weight by an activation that it first quantizes to 8 bits
(``vec_dot_type``: Q8_0 per 32 values for most legacy formats, Q8_1 — Q8_0 plus a float16
block sum — for Q4_1/Q5_1, Q8_K per 256 for the k-quants) or rounds to the weight's float
type (F16, BF16). The exact kernels take the integers and scales themselves
(:func:`quantize_q8_0`, :func:`quantize_q8_1`, :func:`quantize_q8_K`, bit-exact with ggml's
x86 quantizers); the float kernels of the other types are fed the activation quantized and
dequantized again (:func:`round_activations`), which keeps them close to llama.cpp.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from lamina.quants.common import fp16_to_fp32, fp32_to_fp16

from .common import F32
from .simd import vabs_f, vhmax_f, vhsum_i, vload_f, vmax_f, vmin_f, vmul_f, vrint_f, vsplat_f, vstore_i8, vtoi, vzero_i


@njit(cache=True, inline="always", error_model="numpy")
def round_block_q8_0(x, i, o, out):
    """quantize_row_q8_0 (ggml's AVX path) then dequantize, for x[i, o:o+32]: d = amax / 127 stored
    as f16, q = round(x * 127 / amax)."""
    amax = F32(0.0)
    for j in range(32):
        a = abs(x[i, o + j])
        if a > amax:
            amax = a
    idv = F32(127.0) / amax if amax != 0 else F32(0.0)
    dh = fp16_to_fp32(fp32_to_fp16(amax / F32(127.0)))
    for j in range(32):
        out[i, o + j] = F32(np.rint(x[i, o + j] * idv)) * dh


@njit(cache=True, inline="always", error_model="numpy")
def round_block_q8_K(x, i, o, out):
    """quantize_row_q8_K then dequantize, for x[i, o:o+256]: iscale = -127 / (the value of largest magnitude)."""
    amax = F32(0.0)
    vmax = F32(0.0)
    for j in range(256):
        a = abs(x[i, o + j])
        if a > amax:
            amax = a
            vmax = x[i, o + j]
    if amax == 0:
        for j in range(256):
            out[i, o + j] = 0
        return
    iscale = F32(-127.0) / vmax
    d = F32(1.0) / iscale
    for j in range(256):
        q = np.rint(iscale * x[i, o + j])
        if q > 127:
            q = 127
        out[i, o + j] = F32(q) * d


@njit(cache=True, parallel=True, error_model="numpy")
def _round_q8_0(x, out):
    nb = x.shape[1] // 32
    for t in prange(x.shape[0] * nb):
        round_block_q8_0(x, t // nb, (t % nb) * 32, out)


@njit(cache=True, parallel=True, error_model="numpy")
def _round_q8_K(x, out):
    nb = x.shape[1] // 256
    for t in prange(x.shape[0] * nb):
        round_block_q8_K(x, t // nb, (t % nb) * 256, out)


# -- the quantized activations themselves (integers and scales), as ggml's kernels read them ----


@njit(cache=True, inline="always", error_model="numpy")
def _q8_0_block(x, i, o, q):
    """quantize_row_q8_0 / q8_1 (AVX path) for x[i, o:o+32] into q; returns (amax / 127, the
    unrounded scale)."""
    amax = F32(0.0)
    for j in range(32):
        a = abs(x[i, o + j])
        if a > amax:
            amax = a
    idv = F32(127.0) / amax if amax != 0 else F32(0.0)
    for j in range(32):
        q[i, o + j] = np.int8(np.rint(x[i, o + j] * idv))
    return amax / F32(127.0)


@njit(cache=True, parallel=True, error_model="numpy")
def quantize_q8_0(x, q, d):
    """Q8_0 activations: q (N, n) int8 and d (N, n/32) float32 (the f16 scale, widened)."""
    nb = x.shape[1] // 32
    for t in prange(x.shape[0] * nb):
        i = t // nb
        b = t % nb
        d[i, b] = fp16_to_fp32(fp32_to_fp16(_q8_0_block(x, i, b * 32, q)))


@njit(cache=True, parallel=True, error_model="numpy")
def quantize_q8_1(x, q, d, s):
    """Q8_1 activations: Q8_0's q and d, and s = f16(d · Σq) with the unrounded d (quantize_row_q8_1)."""
    nb = x.shape[1] // 32
    for t in prange(x.shape[0] * nb):
        i = t // nb
        b = t % nb
        dd = _q8_0_block(x, i, b * 32, q)
        total = 0
        for j in range(32):
            total += np.int32(q[i, b * 32 + j])
        d[i, b] = fp16_to_fp32(fp32_to_fp16(dd))
        s[i, b] = fp16_to_fp32(fp32_to_fp16(dd * F32(total)))


@njit(cache=True, inline="always", error_model="numpy")
def _q8_K_block(xf, q, d, bsums, t, n):
    """Block ``t`` (flat token × block index) of quantize_row_q8_K_ref: the value of largest
    magnitude (its first occurrence) sets iscale = -127/value, q = min(127, round-half-even(iscale·x))."""
    o = t * 256
    m = vabs_f(vload_f(xf, o))
    for j in range(1, 16):
        m = vmax_f(m, vabs_f(vload_f(xf, o + 16 * j)))
    amax = vhmax_f(m)
    if not amax > 0:  # all zero (or NaN: ggml's comparisons skip those too)
        d[t] = 0
        for j in range(16):
            vstore_i8(q, o + 16 * j, vzero_i())
            bsums[16 * t + j] = 0
        return
    first = 0
    while first < 255 and abs(xf[o + first]) != amax:
        first += 1
    iscale = F32(-127.0) / xf[o + first]
    d[t] = F32(1.0) / iscale
    vs = vsplat_f(iscale)
    top = vsplat_f(F32(127.0))
    for j in range(16):
        qi = vtoi(vmin_f(vrint_f(vmul_f(vs, vload_f(xf, o + 16 * j))), top))
        vstore_i8(q, o + 16 * j, qi)
        bsums[16 * t + j] = vhsum_i(qi)


@njit(cache=True, parallel=True, error_model="numpy")
def quantize_q8_K(x, q, d, bsums):
    """Q8_K activations (quantize_row_q8_K_ref): q (N, n) int8, d (N, n/256) float32, bsums (N, n/16)
    int32. ggml_quantize_mat_q8_K_4x8 (the repacked Q4_K path) gives the same values, or all of q, d
    and bsums negated when the largest magnitude occurs with both signs, which no product notices."""
    n_tok, n = x.shape
    nb = n // 256
    xf, qf, df, bf = x.reshape(-1), q.reshape(-1), d.reshape(-1), bsums.reshape(-1)
    if n_tok <= 4:  # a parallel launch costs more than a few tokens' work
        for t in range(n_tok * nb):
            _q8_K_block(xf, qf, df, bf, t, n)
        return
    n_chunks = (n_tok + 15) // 16  # 16 tokens per parallel task: one block each would drown in scheduling
    for c in prange(n_chunks):
        for t in range(c * 16 * nb, min(n_tok, (c + 1) * 16) * nb):
            _q8_K_block(xf, qf, df, bf, t, n)


def round_activations(x: np.ndarray, kind: str | None) -> np.ndarray:
    """``x`` (rows, n) as ggml's dot product for ``kind`` sees it: "q8_0", "q8_1", "q8_K", "f16", "bf16"
    or None. Q8_1 has Q8_0's values; its block sums (used with Q4_1/Q5_1 minimums) are rounded to
    float16 on top, which no rounding of ``x`` alone can express (see :func:`quantize_q8_1`)."""
    if kind is None or x.shape[0] == 0:
        return x
    if kind == "f16":
        return x.astype(np.float16).astype(np.float32)
    if kind == "bf16":
        from lamina.quants.common import bf16_to_fp32_array, fp32_to_bf16_array

        return bf16_to_fp32_array(fp32_to_bf16_array(x)).reshape(x.shape)
    out = np.empty_like(x)
    if kind in ("q8_0", "q8_1") and x.shape[1] % 32 == 0:
        _round_q8_0(x, out)
    elif kind == "q8_K" and x.shape[1] % 256 == 0:
        _round_q8_K(x, out)
    else:
        return x
    return out

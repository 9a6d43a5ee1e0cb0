"""Activation rounding that mirrors llama.cpp's dot products.

ggml multiplies a quantized weight by an activation that it first quantizes to 8 bits
(``vec_dot_type``: Q8_0 per 32 values for the legacy formats, Q8_K per 256 for the
k-quants) or rounds to the weight's float type (F16, BF16). lamina's kernels compute in
float32, so they give the same products when they are fed the activation as ggml sees
it: quantized and dequantized again. That keeps lamina's logits close to llama.cpp's.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from lamina.quants.common import fp16_to_fp32, fp32_to_fp16

from .common import F32


@njit(cache=True, parallel=True, error_model="numpy")
def _round_q8_0(x, out):
    """quantize_row_q8_0 (ggml's AVX path) then dequantize: per 32 values d = amax / 127, stored as f16,
    and q = round(x * 127 / amax)."""
    n_rows, n = x.shape
    nb = n // 32
    for t in prange(n_rows * nb):
        i = t // nb
        o = (t % nb) * 32
        amax = F32(0.0)
        for j in range(32):
            a = abs(x[i, o + j])
            if a > amax:
                amax = a
        idv = F32(127.0) / amax if amax != 0 else F32(0.0)
        dh = fp16_to_fp32(fp32_to_fp16(amax / F32(127.0)))
        for j in range(32):
            out[i, o + j] = F32(np.rint(x[i, o + j] * idv)) * dh


@njit(cache=True, parallel=True, error_model="numpy")
def _round_q8_K(x, out):
    """quantize_row_q8_K then dequantize: per 256 values, iscale = -127 / (the value of largest magnitude)."""
    n_rows, n = x.shape
    nb = n // 256
    for t in prange(n_rows * nb):
        i = t // nb
        o = (t % nb) * 256
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
            continue
        iscale = F32(-127.0) / vmax
        d = F32(1.0) / iscale
        for j in range(256):
            q = np.rint(iscale * x[i, o + j])
            if q > 127:
                q = 127
            out[i, o + j] = F32(q) * d


def round_activations(x: np.ndarray, kind: str | None) -> np.ndarray:
    """``x`` (rows, n) as ggml's dot product for ``kind`` sees it: "q8_0", "q8_K", "f16", "bf16" or None."""
    if kind is None or x.shape[0] == 0:
        return x
    if kind == "f16":
        return x.astype(np.float16).astype(np.float32)
    if kind == "bf16":
        from lamina.quants.common import bf16_to_fp32_array, fp32_to_bf16_array

        return bf16_to_fp32_array(fp32_to_bf16_array(x)).reshape(x.shape)
    out = np.empty_like(x)
    if kind == "q8_0" and x.shape[1] % 32 == 0:
        _round_q8_0(x, out)
    elif kind == "q8_K" and x.shape[1] % 256 == 0:
        _round_q8_K(x, out)
    else:
        return x
    return out

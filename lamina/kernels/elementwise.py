"""Compiled element-wise steps of a transformer layer: RMS norm, gated activations, rotary
embeddings, float16 conversions.

Generating one token runs a few hundred of these per step; as NumPy expressions each costs
several array passes and allocations, which for a small model adds up to more than the
matrix products. Each function here is one compiled pass, written to the same arithmetic
as the NumPy reference in :mod:`lamina.models.layers` (which they are tested against).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from lamina.quants.common import bits_f32, fp32_to_fp16

from .common import F32, FAST, and32, shl32


@njit(cache=True, inline="always", error_model="numpy")
def h2f(h):
    """float16 bits -> float32, vectorizable (normal and subnormal values; not inf/NaN)."""
    # the magnitude bits moved to float32's place, then rescaled from float16's exponent bias
    mag = bits_f32(shl32(and32(h, 0x7FFF), 13)) * F32(5.192296858534828e33)  # 2**112
    return -mag if and32(h, 0x8000) else mag


@njit(cache=True, error_model="numpy")
def f2h_round(x):
    """x rounded to float16 and back, as ggml's FP32_TO_FP16 then FP16_TO_FP32."""
    h = fp32_to_fp16(x)
    return h2f(h)


@njit(cache=True, fastmath=FAST, error_model="numpy")
def rms_norm_rows(x, weight, eps, out):
    """out = x / sqrt(mean(x²) + eps) * weight, the mean accumulated in double as ggml does."""
    n = x.shape[1]
    for i in range(x.shape[0]):
        s = 0.0
        for j in range(n):
            s += np.float64(x[i, j]) * np.float64(x[i, j])
        scale = F32(1.0) / np.sqrt(F32(s / n) + F32(eps))
        for j in range(n):
            out[i, j] = x[i, j] * scale * weight[j]


@njit(cache=True, fastmath=FAST, error_model="numpy")
def swiglu_rows(gate, up, out):
    for i in range(gate.shape[0]):
        for j in range(gate.shape[1]):
            g = gate[i, j]
            out[i, j] = g / (F32(1.0) + np.exp(-g)) * up[i, j]


@njit(cache=True, error_model="numpy")
def geglu_rows(gate, up, table, out):
    """GELU through ggml's float16 table (``table`` maps float16 bits to float16 bits), times up."""
    for i in range(gate.shape[0]):
        for j in range(gate.shape[1]):
            g = gate[i, j]
            if g <= F32(-10.0):
                y = F32(0.0)
            elif g >= F32(10.0):
                y = g
            else:
                y = h2f(table[fp32_to_fp16(g)])
            out[i, j] = y * up[i, j]


@njit(cache=True, fastmath=FAST, error_model="numpy")
def rope_rows(x, cos, sin, n_rot, neox):
    """Rotate the first ``n_rot`` values of every head of x (tokens, heads, head_dim) in place."""
    half = n_rot // 2
    for t in range(x.shape[0]):
        for h in range(x.shape[1]):
            for i in range(half):
                c = cos[t, i]
                s = sin[t, i]
                if neox:
                    a = x[t, h, i]
                    b = x[t, h, i + half]
                    x[t, h, i] = a * c - b * s
                    x[t, h, i + half] = a * s + b * c
                else:
                    a = x[t, h, 2 * i]
                    b = x[t, h, 2 * i + 1]
                    x[t, h, 2 * i] = a * c - b * s
                    x[t, h, 2 * i + 1] = a * s + b * c

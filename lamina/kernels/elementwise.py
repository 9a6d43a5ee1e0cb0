"""Compiled element-wise steps of a transformer layer: RMS norm, rotary embeddings, float16
conversions (the gated activations are in :mod:`.glu`).

Generating one token runs a few hundred of these per step; as NumPy expressions each costs
several array passes and allocations, which for a small model adds up to more than the
matrix products. Each function here is one compiled pass, written to the same arithmetic
as the NumPy reference in :mod:`lamina.models.layers` (which they are tested against).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from lamina.quants.common import bits_f32, f32_bits32

from .common import EPR, F32, add32, and32, chunk_sum, fma32, shl32, shr32


@njit(cache=True, inline="always", error_model="numpy")
def h2f(h):
    """float16 bits -> float32, vectorizable (normal and subnormal values; not inf/NaN)."""
    # the magnitude bits moved to float32's place, then rescaled from float16's exponent bias
    mag = bits_f32(shl32(and32(h, 0x7FFF), 13)) * F32(5.192296858534828e33)  # 2**112
    return -mag if and32(h, 0x8000) else mag


@njit(cache=True, inline="always", error_model="numpy")
def f2h_round(x):
    """x rounded to float16 precision (nearest, ties to even) and kept as float32, as ggml's
    FP32_TO_FP16 then FP16_TO_FP32 give it; vectorizable. Values beyond float16's range are not
    turned into infinity (attention's accumulators never get there)."""
    b = f32_bits32(x)
    if and32(b, 0x7FFFFFFF) < 0x38800000:  # below 2**-14: float16 subnormals, multiples of 2**-24
        return F32(np.rint(x * F32(16777216.0))) * F32(5.9604644775390625e-08)
    return bits_f32(and32(add32(add32(b, 0x0FFF), and32(shr32(b, 13), 1)), -8192))


@njit(cache=True, error_model="numpy")
def rms_norm_rows(x, weight, eps, out):
    """out = x / sqrt(mean(x²) + eps) * weight, exactly as ggml_rms_norm then ggml_mul: the squares
    in float, summed in order in double, the scale in float."""
    n = x.shape[1]
    for i in range(x.shape[0]):
        s = 0.0
        for j in range(n):
            s += np.float64(x[i, j] * x[i, j])
        scale = F32(1.0) / np.sqrt(F32(s / n) + F32(eps))
        for j in range(n):
            out[i, j] = x[i, j] * scale * weight[j]


@njit(cache=True, parallel=True, error_model="numpy")
def layer_norm_rows(x, weight, bias, eps, out):
    """out = (x - mean) / sqrt(var + eps) * weight + bias, exactly as ggml_norm then ggml_mul and
    ggml_add: the sum in double stored as float, the mean in float; the variance (ggml_vec_cvar_f32)
    over chunks of one vector register (EPR values), each chunk's float squares folded as the build
    folds a register and added in double, the rest one by one in double; the scale in float."""
    n = x.shape[1]
    for i in prange(x.shape[0]):
        v = np.empty(EPR, np.float32)
        s = 0.0
        for j in range(n):
            s += np.float64(x[i, j])
        mean = F32(F32(s) / F32(n))
        var = 0.0
        j = 0
        while j + EPR - 1 < n:
            for k in range(EPR):
                c = F32(x[i, j + k] - mean)
                out[i, j + k] = c
                v[k] = F32(c * c)
            var += np.float64(chunk_sum(v, 0))
            j += EPR
        while j < n:
            c = F32(x[i, j] - mean)
            out[i, j] = c
            var += np.float64(F32(c * c))
            j += 1
        scale = F32(1.0) / np.sqrt(F32(F32(var / n) + F32(eps)))
        for j in range(n):
            out[i, j] = F32(F32(out[i, j] * scale) * weight[j]) + bias[j]


@njit(cache=True, error_model="numpy")
def rope_rows(x, cos, sin, n_rot, neox):
    """Rotate the first ``n_rot`` values of every head of x (tokens, heads, head_dim) in place:
    pairs (i, i + n_rot/2) in the NeoX layout, (2i, 2i + 1) otherwise; rounded as ggml's rope."""
    half = n_rot // 2
    for t in range(x.shape[0]):
        for h in range(x.shape[1]):
            for i in range(half):
                c = cos[t, i]
                s = sin[t, i]
                i0 = i if neox else 2 * i
                i1 = i + half if neox else 2 * i + 1
                a = x[t, h, i0]
                b = x[t, h, i1]
                x[t, h, i0] = fma32(a, c, -(b * s))  # GCC contracts ggml's a*c - b*s this way
                x[t, h, i1] = fma32(a, s, b * c)


@njit(cache=True, error_model="numpy")
def rope_cache(positions, base, n_rot, freq_scale, freq_factors, ext_factor, corr_low, corr_high, attn_factor,
               cos, sin):
    """ggml's rope cache (ggml_rope_cache_init and rope_yarn) in float32 with libm's powf, cosf and
    sinf, so the rotation matches llama.cpp's to the bit. ``freq_factors`` may be empty."""
    theta_scale = math.pow(np.float32(base), np.float32(-2.0) / np.float32(n_rot))
    for p in range(positions.shape[0]):
        theta = np.float32(positions[p])
        for i in range(n_rot // 2):
            ff = freq_factors[i] if freq_factors.shape[0] else F32(1.0)
            extrap = theta / ff
            angle = F32(freq_scale) * extrap
            mscale = F32(attn_factor)
            if ext_factor != 0.0:
                y = (F32(i) - F32(corr_low)) / max(F32(0.001), F32(corr_high) - F32(corr_low))
                ramp = (F32(1.0) - min(F32(1.0), max(F32(0.0), y))) * F32(ext_factor)
                angle = angle * (F32(1.0) - ramp) + extrap * ramp
                mscale *= F32(1.0) + F32(0.1) * math.log(F32(1.0) / F32(freq_scale))
            cos[p, i] = math.cos(angle) * mscale
            sin[p, i] = math.sin(angle) * mscale
            theta = theta * theta_scale

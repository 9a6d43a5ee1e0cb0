"""The gated activations as llama.cpp's CPU backend computes them, bit for bit.

SwiGLU, ``silu(gate) * up``:

ggml_vec_swiglu_f32 (AVX-512 build) evaluates SiLU 16 values at a time as
``x / (1 + ggml_v_expf(-x))``, where ggml_v_expf is a fixed polynomial (not libm's expf):
``n = round(x·log2 e)`` by the 1.5·2^23 trick, a two-step reduction ``b = x - n·ln2`` with FMAs,
a degree-5 polynomial ``j`` in ``b`` evaluated with FMAs in a fixed shape, then
``scalef(j, n) = j·2^n`` (one rounding); ``|n| > 192`` gives 0 or infinity. The last
``width % 16`` values of a row use ``x / (1 + expf(-x))`` with libm's expf instead.

GEGLU, ``gelu(gate) * up``, goes through a float16 table (ggml_vec_geglu_f32); ggml fills it at
start-up with ``f16((0.5·x)·(1 + tanhf((c·x)·fma(a·x, x, 1))))`` — GCC contracts the inner
``1 + a·x·x`` into one FMA, and tanhf is libm's: :func:`gelu_f16_table` builds the same table.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from lamina.quants.common import fp16_to_fp32, fp32_to_fp16

from .common import F32, fma32
from .simd import (f16_bits, vabs_f, vadd_f, vadd_i, vbits_f, vdiv_f, vfma, vload_f, vmax_f, vmin_f, vmul_f, vsll_i, vsplat_f,
                   vsplat_i, vsra_i, vstore_f, vsub_f, vsub_i, vtoi, vwhere_gt, vzero_f)

def _hexf(s: str) -> np.float32:
    return np.float32(float.fromhex(s))


_R = _hexf("0x1.8p23")  # adding and subtracting it rounds to an integer
_LOG2E = _hexf("0x1.715476p+0")
_LN2_HI = _hexf("0x1.62e4p-1")
_LN2_LO = _hexf("0x1.7f7d1cp-20")
_C5 = _hexf("0x1.0e4020p-7")
_C4 = _hexf("0x1.573e2ep-5")
_C3 = _hexf("0x1.555e66p-3")
_C2 = _hexf("0x1.fffdb6p-2")
_C1 = _hexf("0x1.ffffecp-1")


@njit(cache=True, inline="always", error_model="numpy")
def v_expf(x):
    """ggml_v_expf (AVX-512 form) for one float32."""
    z = fma32(x, _LOG2E, _R)
    n = z - _R
    b = fma32(-n, _LN2_LO, fma32(-n, _LN2_HI, x))
    u = b * b
    j = fma32(fma32(fma32(_C5, b, _C4), u, fma32(_C3, b, _C2)), u, fma32(_C1, b, F32(1.0)))
    if abs(n) > F32(192.0):
        return F32(0.0) if n <= F32(0.0) else F32(np.inf)
    # scalef: j · 2^n rounded once (the float64 product is exact)
    return F32(np.float64(j) * np.ldexp(1.0, np.int64(n)))


@njit(cache=True, inline="always", error_model="numpy")
def _pow2(k):
    """2^k for integer lanes k in [-126, 127], as float32 bits."""
    return vbits_f(vsll_i(vadd_i(k, vsplat_i(127)), 23))


@njit(cache=True, inline="always", error_model="numpy")
def v_expf16(x):
    """ggml_v_expf for 16 lanes (the same operations as :func:`v_expf`). scalef(j, n) is j·2^⌊n/2⌋·2^(n-⌊n/2⌋):
    the first product stays normal, so only the second rounds."""
    z = vfma(x, vsplat_f(_LOG2E), vsplat_f(_R))
    n = vsub_f(z, vsplat_f(_R))
    neg = vsub_f(vzero_f(), n)
    b = vfma(neg, vsplat_f(_LN2_LO), vfma(neg, vsplat_f(_LN2_HI), x))
    u = vmul_f(b, b)
    j = vfma(vfma(vfma(vsplat_f(_C5), b, vsplat_f(_C4)), u, vfma(vsplat_f(_C3), b, vsplat_f(_C2))), u,
             vfma(vsplat_f(_C1), b, vsplat_f(F32(1.0))))
    big = vsplat_f(F32(192.0))
    nc = vmin_f(vmax_f(n, vsub_f(vzero_f(), big)), big)
    k = vtoi(nc)
    k1 = vsra_i(k, 1)
    res = vmul_f(vmul_f(j, _pow2(k1)), _pow2(vsub_i(k, k1)))
    out_of_range = vwhere_gt(vabs_f(n), big, vwhere_gt(n, vzero_f(), vsplat_f(F32(np.inf)), vzero_f()), res)
    return vwhere_gt(vabs_f(n), big, out_of_range, res)


@njit(cache=True, parallel=True, error_model="numpy")
def swiglu_rows(gate, up, out):
    """out = silu(gate) * up, rows in parallel, each value as ggml_vec_swiglu_f32 computes it."""
    n_rows, width = gate.shape
    vec_end = width - width % 16
    one = vsplat_f(F32(1.0))
    for i in prange(n_rows):
        g_row = gate[i]
        u_row = up[i]
        o_row = out[i]
        if g_row.strides[0] == 4 and u_row.strides[0] == 4 and o_row.strides[0] == 4:
            for j in range(0, vec_end, 16):
                g = vload_f(g_row, j)
                silu = vdiv_f(g, vadd_f(one, v_expf16(vsub_f(vzero_f(), g))))
                vstore_f(o_row, j, vmul_f(silu, vload_f(u_row, j)))
        else:
            for j in range(vec_end):
                g = g_row[j]
                o_row[j] = g / (F32(1.0) + v_expf(F32(0.0) - g)) * u_row[j]
        for j in range(vec_end, width):
            g = g_row[j]
            o_row[j] = g / (F32(1.0) + np.exp(-g)) * u_row[j]


_GELU_A = np.float32(0.044715)
_SQRT_2_OVER_PI = np.float32(0.7978845608028654)


@njit(cache=True, error_model="numpy")
def _gelu_table(table):
    for i in range(1 << 16):
        x = fp16_to_fp32(i)
        inner = (_SQRT_2_OVER_PI * x) * fma32(_GELU_A * x, x, F32(1.0))
        table[i] = fp32_to_fp16((F32(0.5) * x) * (F32(1.0) + np.tanh(inner)))


def gelu_f16_table() -> np.ndarray:
    """ggml_table_gelu_f16: float16 bits of GELU(x) for every float16 bit pattern x (uint16[65536])."""
    table = np.empty(1 << 16, np.uint16)
    _gelu_table(table)
    return table


GELU_TABLE = None  # float32 values of ggml_table_gelu_f16, built on first use


def gelu_table_f32() -> np.ndarray:
    """:func:`gelu_f16_table` widened to float32 (what ggml multiplies by), built once."""
    global GELU_TABLE
    if GELU_TABLE is None:
        GELU_TABLE = gelu_f16_table().view(np.float16).astype(np.float32)
    return GELU_TABLE


@njit(cache=True, parallel=True, error_model="numpy")
def _geglu_rows(gate, up, table, out):
    for i in prange(gate.shape[0]):
        for j in range(gate.shape[1]):
            g = gate[i, j]
            if g <= F32(-10.0):
                out[i, j] = F32(0.0)
            elif g >= F32(10.0):
                out[i, j] = g * up[i, j]
            else:
                out[i, j] = table[f16_bits(g)] * up[i, j]


@njit(cache=True, parallel=True, error_model="numpy")
def _gelu_rows(x, table, out):
    for i in prange(x.shape[0]):
        for j in range(x.shape[1]):  # written without branches, so the loop vectorizes
            g = x[i, j]
            v = table[f16_bits(g)]
            v = g if g >= F32(10.0) else v
            out[i, j] = F32(0.0) if g <= F32(-10.0) else v


def gelu_rows(x: np.ndarray, out: np.ndarray) -> None:
    """out = gelu(x) as ggml_vec_gelu_f32 computes it (0 below -10, x above 10, the float16 table
    in between)."""
    _gelu_rows(x, gelu_table_f32(), out)


def geglu_rows(gate: np.ndarray, up: np.ndarray, out: np.ndarray) -> None:
    """out = gelu(gate) * up as ggml_vec_geglu_f32 computes it (0 below -10, gate·up above 10,
    the float16 table in between)."""
    _geglu_rows(gate, up, gelu_table_f32(), out)

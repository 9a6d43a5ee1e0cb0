"""The gated activations as llama.cpp's CPU backend computes them, bit for bit.

SwiGLU, ``silu(gate) * up``:

ggml_vec_swiglu_f32 evaluates SiLU a vector register at a time (16 values on AVX-512, 8 on AVX2)
as ``x / (1 + ggml_v_expf(-x))``, where ggml_v_expf is a fixed polynomial (not libm's expf):
``n = round(x·log2 e)`` by the 1.5·2^23 trick, a two-step reduction ``b = x - n·ln2`` with FMAs,
then a degree-5 polynomial ``j`` in ``b`` evaluated with FMAs in a fixed shape. The two builds
finish differently: AVX-512 computes ``j = P(b)·u + fma(c1, b, 1)`` and ``scalef(j, n) = j·2^n``
(one rounding; ``|n| > 192`` gives 0 or infinity); AVX2 computes ``j = P(b)·u + c1·b`` (the product
rounded on its own) and ``fma(2^n, j, 2^n)``, with two rescaled steps for ``|n| > 126``. The last
``width % EPR`` values of a row use ``x / (1 + expf(-x))`` with libm's expf instead.

GEGLU, ``gelu(gate) * up``, goes through a float16 table (ggml_vec_geglu_f32); ggml fills it at
start-up with ``f16((0.5·x)·(1 + tanhf((c·x)·fma(a·x, x, 1))))`` — GCC contracts the inner
``1 + a·x·x`` into one FMA, and tanhf is libm's: :func:`gelu_f16_table` builds the same table.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from lamina.quants.common import bits_f32, f32_bits32, fp16_to_fp32, fp32_to_fp16

from .common import EPR, F32, add32, chunk_sum, fma32, shl32, sub32
from .simd import (f16_bits, vabs_f, vadd_f, vadd_i, vbits_f, vbits_i, vdiv_f, vfma, vload_f, vmax_f, vmin_f, vmul_f,
                   vany_gt, vsll_i, vsplat_f, vsplat_i, vsra_i, vstore_f, vsub_f, vsub_i, vtoi, vwhere_gt, vzero_f)

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
def v_expf_512(x):
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
def v_expf_256(x):
    """ggml_v_expf (AVX2 form) for one float32: lanes are independent, so one lane is the vector's answer."""
    z = fma32(x, _LOG2E, _R)
    n = z - _R
    b = fma32(-n, _LN2_LO, fma32(-n, _LN2_HI, x))
    e = shl32(f32_bits32(z), 23)  # wraps, as _mm256_slli_epi32
    k = bits_f32(add32(e, 0x3F800000))  # 2^n
    u = b * b
    j = fma32(fma32(fma32(_C5, b, _C4), u, fma32(_C3, b, _C2)), u, _C1 * b)
    if abs(n) <= F32(126.0):
        return fma32(k, j, k)
    g = np.int32(-2113929216) if n <= F32(0.0) else np.int32(0)  # 0x82000000 or 0
    s1 = bits_f32(add32(g, 0x7F000000))
    if abs(n) > F32(192.0):
        return s1 * s1
    s2 = bits_f32(sub32(e, g))
    return fma32(s2, j, s2) * s1


@njit(cache=True, inline="always", error_model="numpy")
def _pow2(k):
    """2^k for integer lanes k in [-126, 127], as float32 bits."""
    return vbits_f(vsll_i(vadd_i(k, vsplat_i(127)), 23))


@njit(cache=True, inline="always", error_model="numpy")
def v_expf16_512(x):
    """ggml_v_expf (AVX-512 form) for 16 lanes (the same operations as :func:`v_expf_512`). scalef(j, n) is
    j·2^⌊n/2⌋·2^(n-⌊n/2⌋): the first product stays normal, so only the second rounds."""
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


@njit(cache=True, inline="always", error_model="numpy")
def v_expf16_256(x):
    """ggml_v_expf (AVX2 form) for 16 lanes, the operations of :func:`v_expf_256` on each."""
    z = vfma(x, vsplat_f(_LOG2E), vsplat_f(_R))
    n = vsub_f(z, vsplat_f(_R))
    neg = vsub_f(vzero_f(), n)
    b = vfma(neg, vsplat_f(_LN2_LO), vfma(neg, vsplat_f(_LN2_HI), x))
    e = vsll_i(vbits_i(z), 23)
    k = vbits_f(vadd_i(e, vsplat_i(0x3F800000)))
    u = vmul_f(b, b)
    j = vfma(vfma(vfma(vsplat_f(_C5), b, vsplat_f(_C4)), u, vfma(vsplat_f(_C3), b, vsplat_f(_C2))), u,
             vmul_f(vsplat_f(_C1), b))
    normal = vfma(k, j, k)
    if not vany_gt(vabs_f(n), vsplat_f(F32(126.0))):
        # ggml's early return: the rescaled steps below underflow for ordinary negative n, and each
        # underflow is a microcode assist (~10x slower SiLU on AVX2); no lane would use them
        return normal
    zero = vzero_f()
    g = vbits_i(vwhere_gt(n, zero, zero, vbits_f(vsplat_i(-2113929216))))  # 0 where n > 0, else 0x82000000
    s1 = vbits_f(vadd_i(g, vsplat_i(0x7F000000)))
    s2 = vbits_f(vsub_i(e, g))
    wide = vwhere_gt(vabs_f(n), vsplat_f(F32(192.0)), vmul_f(s1, s1), vmul_f(vfma(s2, j, s2), s1))
    return vwhere_gt(vabs_f(n), vsplat_f(F32(126.0)), wide, normal)


# The family's form (see the module docstring); lanes are independent, so 16 lanes serve any EPR.
v_expf = v_expf_512 if EPR == 16 else v_expf_256
v_expf16 = v_expf16_512 if EPR == 16 else v_expf16_256


@njit(cache=True, error_model="numpy")
def _swiglu_row(flat, g0, u0, o_row, width):
    """One row of :func:`swiglu_rows`: gate values from flat[g0], up values from flat[u0]."""
    vec_end = width - width % EPR  # from here on ggml uses libm's expf
    sixteens = vec_end - vec_end % 16
    one = vsplat_f(F32(1.0))
    for j in range(0, sixteens, 16):
        g = vload_f(flat, g0 + j)
        silu = vdiv_f(g, vadd_f(one, v_expf16(vsub_f(vzero_f(), g))))
        vstore_f(o_row, j, vmul_f(silu, vload_f(flat, u0 + j)))
    for j in range(sixteens, vec_end):
        g = flat[g0 + j]
        o_row[j] = g / (F32(1.0) + v_expf(F32(0.0) - g)) * flat[u0 + j]
    for j in range(vec_end, width):
        g = flat[g0 + j]
        o_row[j] = g / (F32(1.0) + np.exp(-g)) * flat[u0 + j]


@njit(cache=True, parallel=True, error_model="numpy")
def swiglu_rows(gate_up, width, out):
    """out = silu(gate) * up, rows in parallel, each value as ggml_vec_swiglu_f32 computes it. Each
    row of ``gate_up`` (C-contiguous, one layout for every batch: one compiled kernel) holds the
    row's ``width`` gate values, then its up values (a fused gate/up weight's output). A single
    row (a generation step) is computed on the calling thread: a parallel launch costs more."""
    n_rows = gate_up.shape[0]
    flat = gate_up.reshape(-1)
    row = gate_up.shape[1]
    if n_rows == 1:
        _swiglu_row(flat, 0, width, out[0], width)
        return
    for i in prange(n_rows):
        _swiglu_row(flat, i * row, i * row + width, out[i], width)


@njit(cache=True, error_model="numpy")
def softmax_rows(x):
    """ggml_soft_max of each row (the MoE router): the values minus the row's maximum through
    ggml_v_expf a register at a time (EPR values; the rest through expf), their sum kept in double
    (each register folded as the build folds it), then every value times (float)(1/sum)."""
    n_rows, width = x.shape
    out = np.empty((n_rows, width), np.float32)
    vec_end = width - width % EPR
    for r in range(n_rows):
        top = x[r, 0]
        for j in range(1, width):
            top = max(top, x[r, j])
        total = np.float64(0.0)
        for j in range(0, vec_end, EPR):
            for i in range(EPR):
                out[r, j + i] = v_expf(x[r, j + i] - top)
            total += np.float64(chunk_sum(out[r], j))
        for j in range(vec_end, width):
            value = F32(np.exp(np.float64(x[r, j] - top)))
            out[r, j] = value
            total += np.float64(value)
        scale = F32(1.0 / total)
        for j in range(width):
            out[r, j] *= scale
    return out


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
def _geglu_rows(gate_up, width, table, out):
    for i in prange(gate_up.shape[0]):
        for j in range(width):
            g = gate_up[i, j]
            if g <= F32(-10.0):
                out[i, j] = F32(0.0)
            elif g >= F32(10.0):
                out[i, j] = g * gate_up[i, width + j]
            else:
                out[i, j] = table[f16_bits(g)] * gate_up[i, width + j]


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


def geglu_rows(gate_up: np.ndarray, width: int, out: np.ndarray) -> None:
    """out = gelu(gate) * up as ggml_vec_geglu_f32 computes it (0 below -10, gate·up above 10,
    the float16 table in between), gate and up side by side in ``gate_up`` as for :func:`swiglu_rows`."""
    _geglu_rows(gate_up, width, gelu_table_f32(), out)

"""Scalar helpers shared by every block format, written to round exactly as ggml does.

ggml-quants.c is compiled without ``-march`` flags, so every expression there is
plain IEEE float32 arithmetic evaluated left to right (no FMA contraction, no
reassociation). The Numba functions here (and the kernels that use them) do the
same: every literal is an ``np.float32`` and every int is converted to float32
before it meets a float, because in Numba ``float32 * int`` is float64 while in C
it is float. Never compile these with ``fastmath``.

Public, stable helpers (the i-quant module imports them too):

- :func:`f32_bits`, :func:`bits_f32` — reinterpret a float32 as its bits and back
- :func:`fp32_to_fp16`, :func:`fp16_to_fp32`, :func:`fp32_to_bf16`, :func:`bf16_to_fp32`
- :func:`load_f16`, :func:`store_f16` — a little-endian fp16 inside a uint8 buffer
- :func:`nearest_int` — ggml's round-half-to-even via the 1.5·2^23 trick
- :func:`c_max`, :func:`round_away`, :func:`best_index_int8`
- :func:`make_qx_quants`, :func:`make_q3_quants`, :func:`make_qkx2_quants`,
  :func:`make_qkx3_quants`, :func:`make_qp_quants` — the scale searches
- array conversions :func:`fp32_to_fp16_array`, :func:`fp16_to_fp32_array`,
  :func:`fp32_to_bf16_array`, :func:`bf16_to_fp32_array`
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

F32 = np.float32
GROUP_MAX_EPS = np.float32(1e-15)


# -- bit casts ------------------------------------------------------------------------


@intrinsic
def f32_bits(typingctx, x):
    """The IEEE bits of a float32, as a non-negative int64 (C's memcpy into a uint32)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.bitcast(args[0], ir.IntType(32))
        return builder.zext(bits, ir.IntType(64))

    return types.int64(types.float32), codegen


@intrinsic
def f32_bits32(typingctx, x):
    """The IEEE bits of a float32 as an int32 (vectorizes, unlike the int64 form)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def bits_f32(typingctx, u):
    """The float32 whose bits are the low 32 bits of an integer."""
    if not isinstance(u, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = args[0]
        width = v.type.width
        if width > 32:
            v = builder.trunc(v, ir.IntType(32))
        elif width < 32:
            v = builder.zext(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(u), codegen


# -- half and bfloat16 --------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def fp32_to_fp16(f):
    """ggml_compute_fp32_to_fp16: round to nearest even; NaN becomes 0x7E00 with the sign kept."""
    f = F32(f)
    base = (abs(f) * F32(2.0**112)) * F32(2.0**-110)
    w = f32_bits(f)
    shl1_w = (w + w) & 0xFFFFFFFF
    sign = w & 0x80000000
    bias = shl1_w & 0xFF000000
    if bias < 0x71000000:
        bias = 0x71000000
    base = bits_f32((bias >> 1) + 0x07800000) + base
    bits = f32_bits(base)
    exp_bits = (bits >> 13) & 0x00007C00
    mantissa_bits = bits & 0x00000FFF
    nonsign = exp_bits + mantissa_bits
    if shl1_w > 0xFF000000:
        nonsign = 0x7E00
    return np.uint16(((sign >> 16) | nonsign) & 0xFFFF)


@njit(cache=True, error_model="numpy")
def fp16_to_fp32(h):
    """ggml_compute_fp16_to_fp32 (exact; a NaN comes back quieted, as ggml's multiply does)."""
    h = np.int64(h) & 0xFFFF
    sign = (h & 0x8000) << 16
    exp = (h >> 10) & 0x1F
    man = h & 0x3FF
    if exp == 0x1F:
        bits = sign | 0x7F800000 | (man << 13)
        if man:
            bits |= 0x00400000
        return bits_f32(bits)
    if exp == 0:
        value = F32(man) * F32(2.0**-24)  # exact: a subnormal half is man * 2^-24
        return -value if sign else value
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13))


@njit(cache=True, error_model="numpy")
def fp32_to_bf16(f):
    """ggml_compute_fp32_to_bf16: round to nearest even, NaN forced quiet."""
    u = f32_bits(F32(f))
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return np.uint16(((u >> 16) | 64) & 0xFFFF)
    return np.uint16(((u + (0x7FFF + ((u >> 16) & 1))) >> 16) & 0xFFFF)


@njit(cache=True, error_model="numpy")
def bf16_to_fp32(h):
    return bits_f32((np.int64(h) & 0xFFFF) << 16)


@njit(cache=True, error_model="numpy")
def round_fp16(f):
    """A float32 rounded to fp16 and back, as ``GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(f))``."""
    return fp16_to_fp32(fp32_to_fp16(f))


@njit(cache=True, error_model="numpy")
def load_f16(buf, offset):
    """The fp16 stored little-endian at ``buf[offset:offset+2]``, as float32."""
    return fp16_to_fp32(np.int64(buf[offset]) | (np.int64(buf[offset + 1]) << 8))


@njit(cache=True, error_model="numpy")
def store_f16(buf, offset, h):
    """Store fp16 bits ``h`` little-endian at ``buf[offset:offset+2]``."""
    h = np.int64(h)
    buf[offset] = np.uint8(h & 0xFF)
    buf[offset + 1] = np.uint8((h >> 8) & 0xFF)


@njit(cache=True, error_model="numpy")
def load_u16(buf, offset):
    return np.int64(buf[offset]) | (np.int64(buf[offset + 1]) << 8)


@njit(cache=True, error_model="numpy")
def load_u32(buf, offset):
    return (np.int64(buf[offset]) | (np.int64(buf[offset + 1]) << 8) | (np.int64(buf[offset + 2]) << 16)
            | (np.int64(buf[offset + 3]) << 24))


@njit(cache=True, error_model="numpy")
def store_u32(buf, offset, v):
    v = np.int64(v)
    buf[offset] = np.uint8(v & 0xFF)
    buf[offset + 1] = np.uint8((v >> 8) & 0xFF)
    buf[offset + 2] = np.uint8((v >> 16) & 0xFF)
    buf[offset + 3] = np.uint8((v >> 24) & 0xFF)


# Element-wise conversions run in chunks of this many values per parallel task: lamina hands out
# parallel work one task at a time (set_parallel_chunksize(1)), so one task per value would be
# scheduling overhead, not conversion.
_CHUNK = 16384


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _fp32_to_fp16_flat(x, out):
    for c in prange((x.size + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(x.size, (c + 1) * _CHUNK)):
            out[i] = fp32_to_fp16(x[i])


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _fp16_to_fp32_flat(h, out):
    for c in prange((h.size + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(h.size, (c + 1) * _CHUNK)):
            out[i] = fp16_to_fp32(h[i])


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _fp32_to_bf16_flat(x, out):
    for c in prange((x.size + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(x.size, (c + 1) * _CHUNK)):
            out[i] = fp32_to_bf16(x[i])


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _bf16_to_fp32_flat(h, out):
    for c in prange((h.size + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(h.size, (c + 1) * _CHUNK)):
            out[i] = bits_f32(np.int64(h[i]) << 16)


def fp32_to_fp16_array(x: np.ndarray) -> np.ndarray:
    """float32 array → fp16 bits (uint16, same shape), exactly as ggml_fp32_to_fp16_row."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(x.shape, dtype=np.uint16)
    _fp32_to_fp16_flat(x.reshape(-1), out.reshape(-1))
    return out


def fp16_to_fp32_array(h: np.ndarray) -> np.ndarray:
    """fp16 bits (uint16 or float16) → float32, same shape."""
    h = np.ascontiguousarray(h).view(np.uint16)
    out = np.empty(h.shape, dtype=np.float32)
    _fp16_to_fp32_flat(h.reshape(-1), out.reshape(-1))
    return out


def fp32_to_bf16_array(x: np.ndarray) -> np.ndarray:
    """float32 array → bf16 bits (uint16, same shape), exactly as ggml_fp32_to_bf16_row_ref."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(x.shape, dtype=np.uint16)
    _fp32_to_bf16_flat(x.reshape(-1), out.reshape(-1))
    return out


def bf16_to_fp32_array(h: np.ndarray) -> np.ndarray:
    h = np.ascontiguousarray(h).view(np.uint16)
    out = np.empty(h.shape, dtype=np.float32)
    _bf16_to_fp32_flat(h.reshape(-1), out.reshape(-1))
    return out


# -- C macros -----------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def c_max(a, b):
    """ggml's MAX(a, b) macro, ``a > b ? a : b`` — unlike Python's max() it returns b when either is NaN."""
    return a if a > b else b


# -- rounding -----------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def nearest_int(fval):
    """ggml's nearest_int: add 1.5·2^23 and read the mantissa (round half to even for |x| < 2^22)."""
    val = F32(fval) + F32(12582912.0)
    i = f32_bits(val)
    return (i & 0x007FFFFF) - 0x00400000


@njit(cache=True, error_model="numpy", inline="always")
def nearest_int32(fval):
    """:func:`nearest_int` in int32 arithmetic, so loops over many blocks vectorize (same results)."""
    b = f32_bits32(fval + F32(12582912.0))
    return (b & np.int32(0x007FFFFF)) - np.int32(0x00400000)


@njit(cache=True, error_model="numpy")
def round_away(x):
    """C's roundf/lroundf: nearest, halves away from zero (as float32)."""
    x = F32(x)
    t = np.trunc(x)
    if abs(x - t) >= F32(0.5):
        t = t + (F32(1.0) if x > 0 else F32(-1.0))
    return t


@njit(cache=True, error_model="numpy")
def best_index_int8(values, x):
    """Index of the entry of the sorted table ``values`` nearest to ``x`` (ggml's best_index_int8)."""
    n = values.shape[0]
    if x <= F32(values[0]):
        return 0
    if x >= F32(values[n - 1]):
        return n - 1
    ml = 0
    mu = n - 1
    while mu - ml > 1:
        mav = (ml + mu) // 2
        if x < F32(values[mav]):
            mu = mav
        else:
            ml = mav
    return mu - 1 if x - F32(values[mu - 1]) < F32(values[mu]) - x else mu


# -- scale searches -----------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _qx_weight(x, qw, i, rmse_type, has_qw):
    if has_qw:
        return qw[i]
    if rmse_type == 1:
        return x[i] * x[i]
    if rmse_type == 2:
        return F32(1.0)
    if rmse_type == 3:
        return abs(x[i])
    return np.sqrt(abs(x[i]))


@njit(cache=True, error_model="numpy")
def make_qx_quants(n, nmax, x, L, rmse_type, qw, has_qw):
    """ggml's make_qx_quants: symmetric scale search; writes levels L (int8, offset by nmax), returns the scale.

    ``qw`` is the weight array (ignored unless ``has_qw``), so one compiled version serves both cases.
    """
    fmax = F32(0.0)
    amax = F32(0.0)
    for i in range(n):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            fmax = x[i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return F32(0.0)
    fnmax = F32(nmax)
    iscale = -fnmax / fmax
    if rmse_type == 0:
        for i in range(n):
            l = nearest_int(iscale * x[i])
            L[i] = nmax + max(-nmax, min(nmax - 1, l))
        return F32(1.0) / iscale
    return_early = False
    if rmse_type < 0:
        rmse_type = -rmse_type
        return_early = True
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        l = nearest_int(iscale * x[i])
        l = max(-nmax, min(nmax - 1, l))
        L[i] = l + nmax
        w = _qx_weight(x, qw, i, rmse_type, has_qw)
        fl = F32(l)
        sumlx += w * x[i] * fl
        suml2 += w * fl * fl
    scale = sumlx / suml2 if suml2 else F32(0.0)
    if return_early:
        return F32(0.5) * (scale + F32(1.0) / iscale) if suml2 > 0 else F32(1.0) / iscale
    best = scale * sumlx
    for js in range(-9, 10):
        if js == 0:
            continue
        iscale = -(fnmax + F32(0.1) * F32(js)) / fmax
        sumlx = F32(0.0)
        suml2 = F32(0.0)
        for i in range(n):
            l = nearest_int(iscale * x[i])
            l = max(-nmax, min(nmax - 1, l))
            w = _qx_weight(x, qw, i, rmse_type, has_qw)
            fl = F32(l)
            sumlx += w * x[i] * fl
            suml2 += w * fl * fl
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            for i in range(n):
                l = nearest_int(iscale * x[i])
                L[i] = nmax + max(-nmax, min(nmax - 1, l))
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@njit(cache=True, error_model="numpy")
def make_q3_quants(n, nmax, x, L, do_rmse):
    """ggml's make_q3_quants (Q3_K without importance): levels in L (int8, offset by nmax)."""
    fmax = F32(0.0)
    amax = F32(0.0)
    for i in range(n):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            fmax = x[i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return F32(0.0)
    iscale = -F32(nmax) / fmax
    if do_rmse:
        sumlx = F32(0.0)
        suml2 = F32(0.0)
        for i in range(n):
            l = nearest_int(iscale * x[i])
            l = max(-nmax, min(nmax - 1, l))
            L[i] = l
            w = x[i] * x[i]
            sumlx += w * x[i] * F32(l)
            suml2 += w * F32(l) * F32(l)
        for itry in range(5):
            n_changed = 0
            for i in range(n):
                w = x[i] * x[i]
                li = F32(L[i])
                slx = sumlx - w * x[i] * li
                if slx > 0:
                    sl2 = suml2 - w * li * li
                    new_l = nearest_int(x[i] * sl2 / slx)
                    new_l = max(-nmax, min(nmax - 1, new_l))
                    if new_l != L[i]:
                        slx += w * x[i] * F32(new_l)
                        sl2 += w * F32(new_l) * F32(new_l)
                        if sl2 > 0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                            L[i] = new_l
                            sumlx = slx
                            suml2 = sl2
                            n_changed += 1
            if n_changed == 0:
                break
        for i in range(n):
            L[i] += nmax
        return sumlx / suml2 if suml2 > F32(0.0) else F32(0.0)
    for i in range(n):
        l = nearest_int(iscale * x[i])
        l = max(-nmax, min(nmax - 1, l))
        L[i] = l + nmax
    return F32(1.0) / iscale


@njit(cache=True, error_model="numpy")
def make_qkx2_quants(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad):
    """ggml's make_qkx2_quants: asymmetric (scale, min) search. Returns (scale, the_min) with the_min = -min."""
    fmin = x[0]
    fmax = x[0]
    sum_w = weights[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < fmin:
            fmin = x[i]
        if x[i] > fmax:
            fmax = x[i]
        w = weights[i]
        sum_w += w
        sum_x += w * x[i]
    if fmin > 0:
        fmin = F32(0.0)
    if fmax == fmin:
        for i in range(n):
            L[i] = 0
        return F32(0.0), -fmin
    fnmax = F32(nmax)
    iscale = fnmax / (fmax - fmin)
    scale = F32(1.0) / iscale
    best_error = F32(0.0)
    for i in range(n):
        l = nearest_int(iscale * (x[i] - fmin))
        L[i] = max(0, min(nmax, l))
        diff = scale * F32(L[i]) + fmin - x[i]
        diff = abs(diff) if use_mad else diff * diff
        best_error += weights[i] * diff
    if nstep < 1:
        return scale, -fmin
    for js in range(nstep + 1):
        iscale = (rmin + rdelta * F32(js) + fnmax) / (fmax - fmin)
        sum_l = F32(0.0)
        sum_l2 = F32(0.0)
        sum_xl = F32(0.0)
        for i in range(n):
            l = nearest_int(iscale * (x[i] - fmin))
            l = max(0, min(nmax, l))
            Laux[i] = l
            w = weights[i]
            fl = F32(l)
            sum_l += w * fl
            sum_l2 += w * fl * fl
            sum_xl += w * fl * x[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > 0:
                this_min = F32(0.0)
                this_scale = sum_xl / sum_l2
            cur_error = F32(0.0)
            for i in range(n):
                diff = this_scale * F32(Laux[i]) + this_min - x[i]
                diff = abs(diff) if use_mad else diff * diff
                cur_error += weights[i] * diff
            if cur_error < best_error:
                for i in range(n):
                    L[i] = Laux[i]
                best_error = cur_error
                scale = this_scale
                fmin = this_min
    return scale, -fmin


@njit(cache=True, error_model="numpy")
def make_qkx3_quants(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad, has_weights):
    """ggml's make_qkx3_quants (weights x² when ``has_weights`` is False). Returns (scale, the_min)."""
    fmin = x[0]
    fmax = x[0]
    sum_w = weights[0] if has_weights else x[0] * x[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < fmin:
            fmin = x[i]
        if x[i] > fmax:
            fmax = x[i]
        w = weights[i] if has_weights else x[i] * x[i]
        sum_w += w
        sum_x += w * x[i]
    if fmin > 0:
        fmin = F32(0.0)
    if fmax <= fmin:
        for i in range(n):
            L[i] = 0
        return F32(0.0), -fmin
    fnmax = F32(nmax)
    iscale = fnmax / (fmax - fmin)
    scale = F32(1.0) / iscale
    best_mad = F32(0.0)
    for i in range(n):
        l = nearest_int(iscale * (x[i] - fmin))
        L[i] = max(0, min(nmax, l))
        diff = scale * F32(L[i]) + fmin - x[i]
        diff = abs(diff) if use_mad else diff * diff
        w = weights[i] if has_weights else x[i] * x[i]
        best_mad += w * diff
    if nstep < 1:
        return scale, -fmin
    for js in range(nstep + 1):
        iscale = (rmin + rdelta * F32(js) + fnmax) / (fmax - fmin)
        sum_l = F32(0.0)
        sum_l2 = F32(0.0)
        sum_xl = F32(0.0)
        for i in range(n):
            l = nearest_int(iscale * (x[i] - fmin))
            l = max(0, min(nmax, l))
            Laux[i] = l
            w = weights[i] if has_weights else x[i] * x[i]
            fl = F32(l)
            sum_l += w * fl
            sum_l2 += w * fl * fl
            sum_xl += w * fl * x[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > 0:
                this_min = F32(0.0)
                this_scale = sum_xl / sum_l2
            mad = F32(0.0)
            for i in range(n):
                diff = this_scale * F32(Laux[i]) + this_min - x[i]
                diff = abs(diff) if use_mad else diff * diff
                w = weights[i] if has_weights else x[i] * x[i]
                mad += w * diff
            if mad < best_mad:
                for i in range(n):
                    L[i] = Laux[i]
                best_mad = mad
                scale = this_scale
                fmin = this_min
    return scale, -fmin


@njit(cache=True, error_model="numpy")
def make_qp_quants(n, nmax, x, L, quant_weights):
    """ggml's make_qp_quants: positive values onto 0..nmax (L is uint8), weighted; returns the scale."""
    fmax = F32(0.0)
    for i in range(n):
        fmax = c_max(fmax, x[i])
    if fmax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return F32(0.0)
    fnmax = F32(nmax)
    iscale = fnmax / fmax
    for i in range(n):
        L[i] = nearest_int(iscale * x[i]) & 0xFF
    scale = F32(1.0) / iscale
    best_mse = F32(0.0)
    for i in range(n):
        diff = x[i] - scale * F32(L[i])
        w = quant_weights[i]
        best_mse += w * diff * diff
    for js in range(-4, 5):
        if js == 0:
            continue
        iscale_is = (F32(0.1) * F32(js) + fnmax) / fmax
        scale_is = F32(1.0) / iscale_is
        mse = F32(0.0)
        for i in range(n):
            l = nearest_int(iscale_is * x[i])
            l = min(nmax, l)
            diff = x[i] - scale_is * F32(l)
            w = quant_weights[i]
            mse += w * diff * diff
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_is
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        l = nearest_int(iscale * x[i])
        l = min(nmax, l)
        L[i] = l & 0xFF
        w = quant_weights[i]
        sumlx += w * x[i] * F32(l)
        suml2 += w * F32(l) * F32(l)
    for itry in range(5):
        n_changed = 0
        for i in range(n):
            w = quant_weights[i]
            li = F32(L[i])
            slx = sumlx - w * x[i] * li
            sl2 = suml2 - w * li * li
            if slx > 0 and sl2 > 0:
                new_l = nearest_int(x[i] * sl2 / slx)
                new_l = min(nmax, new_l)
                if new_l != L[i]:
                    slx += w * x[i] * F32(new_l)
                    sl2 += w * F32(new_l) * F32(new_l)
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l & 0xFF
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return sumlx / suml2 if suml2 > F32(0.0) else F32(0.0)


# -- the same searches for many blocks at once ---------------------------------------------------------
#
# The scalar searches above are latency-bound: each sum is a chain of dependent float
# additions. The batched forms below run nb blocks in lock step, blocks laid out as the
# columns of (n, nb) arrays, so the nb chains overlap (and vectorize across blocks). Every
# block still sums its own terms in ggml's order, so the results are bit-identical.


@njit(cache=True, error_model="numpy")
def make_qkx_quants_batch(nmax, X, W, L, rmin, rdelta, nstep, use_mad, scale_out, min_out):
    """make_qkx2_quants (and make_qkx3_quants given its weights) for the nb columns of X (n, nb).

    W holds each value's weight; L (n, nb) receives the levels; scale_out[b] the scale and
    min_out[b] the_min (= -min) of block b. nstep must be at least 1.
    """
    n, nb = X.shape
    fmin = X[0].copy()
    fmax = X[0].copy()
    sum_w = W[0].copy()
    sum_x = np.empty(nb, np.float32)
    for b in range(nb):
        sum_x[b] = sum_w[b] * X[0, b]
    for i in range(1, n):
        for b in range(nb):
            v = X[i, b]
            if v < fmin[b]:
                fmin[b] = v
            if v > fmax[b]:
                fmax[b] = v
            w = W[i, b]
            sum_w[b] += w
            sum_x[b] += w * v
    done = np.empty(nb, np.bool_)
    iscale = np.empty(nb, np.float32)
    scale = np.empty(nb, np.float32)
    best = np.zeros(nb, np.float32)
    fnmax = F32(nmax)
    for b in range(nb):
        if fmin[b] > 0:
            fmin[b] = F32(0.0)
        done[b] = fmax[b] == fmin[b]
        iscale[b] = fnmax / (fmax[b] - fmin[b])
        scale[b] = F32(1.0) / iscale[b]
    top = np.int32(nmax)
    zero = np.int32(0)
    for i in range(n):
        for b in range(nb):
            l = max(zero, min(top, nearest_int32(iscale[b] * (X[i, b] - fmin[b]))))
            L[i, b] = l
            diff = scale[b] * F32(l) + fmin[b] - X[i, b]
            diff = abs(diff) if use_mad else diff * diff
            best[b] += W[i, b] * diff
    FL = np.empty((n, nb), np.float32)
    sl = np.empty(nb, np.float32)
    sl2 = np.empty(nb, np.float32)
    sxl = np.empty(nb, np.float32)
    this_scale = np.empty(nb, np.float32)
    this_min = np.empty(nb, np.float32)
    err = np.empty(nb, np.float32)
    usable = np.empty(nb, np.bool_)
    for js in range(nstep + 1):
        step = rmin + rdelta * F32(js) + fnmax
        for b in range(nb):
            iscale[b] = step / (fmax[b] - fmin[b])  # min moves when a better fit is found, as in ggml
            sl[b] = F32(0.0)
            sl2[b] = F32(0.0)
            sxl[b] = F32(0.0)
            err[b] = F32(0.0)
        for i in range(n):
            for b in range(nb):
                fl = F32(max(zero, min(top, nearest_int32(iscale[b] * (X[i, b] - fmin[b])))))
                FL[i, b] = fl
                wl = W[i, b] * fl
                sl[b] += wl
                sl2[b] += wl * fl
                sxl[b] += wl * X[i, b]
        for b in range(nb):
            D = sum_w[b] * sl2[b] - sl[b] * sl[b]
            usable[b] = D > 0 and not done[b]
            ts = (sum_w[b] * sxl[b] - sum_x[b] * sl[b]) / D
            tm = (sl2[b] * sum_x[b] - sl[b] * sxl[b]) / D
            if tm > 0:
                tm = F32(0.0)
                ts = sxl[b] / sl2[b]
            this_scale[b] = ts
            this_min[b] = tm
        for i in range(n):
            for b in range(nb):
                diff = this_scale[b] * FL[i, b] + this_min[b] - X[i, b]
                diff = abs(diff) if use_mad else diff * diff
                err[b] += W[i, b] * diff
        for b in range(nb):
            if usable[b] and err[b] < best[b]:
                for i in range(n):
                    L[i, b] = np.uint8(np.int32(FL[i, b]))
                best[b] = err[b]
                scale[b] = this_scale[b]
                fmin[b] = this_min[b]
    for b in range(nb):
        if done[b]:
            for i in range(n):
                L[i, b] = 0
            scale_out[b] = F32(0.0)
        else:
            scale_out[b] = scale[b]
        min_out[b] = -fmin[b]


@njit(cache=True, error_model="numpy")
def make_qx_quants_batch(nmax, X, W, L, scale_out):
    """make_qx_quants with rmse_type 1 for the nb columns of X (n, nb), weights W (x² or importance).

    L (n, nb) receives the levels offset by nmax (int8), scale_out[b] each block's scale.
    """
    n, nb = X.shape
    fmax = np.zeros(nb, np.float32)
    amax = np.zeros(nb, np.float32)
    for i in range(n):
        for b in range(nb):
            ax = abs(X[i, b])
            if ax > amax[b]:
                amax[b] = ax
                fmax[b] = X[i, b]
    fnmax = F32(nmax)
    lo = np.int32(-nmax)
    hi = np.int32(nmax - 1)
    off = np.int32(nmax)
    iscale = np.empty(nb, np.float32)
    sumlx = np.zeros(nb, np.float32)
    suml2 = np.zeros(nb, np.float32)
    for b in range(nb):
        iscale[b] = -fnmax / fmax[b]
    for i in range(n):
        for b in range(nb):
            l = max(lo, min(hi, nearest_int32(iscale[b] * X[i, b])))
            L[i, b] = l + off
            fl = F32(l)
            w = W[i, b]
            sumlx[b] += w * X[i, b] * fl
            suml2[b] += w * fl * fl
    scale = np.empty(nb, np.float32)
    best = np.empty(nb, np.float32)
    for b in range(nb):
        scale[b] = sumlx[b] / suml2[b] if suml2[b] else F32(0.0)
        best[b] = scale[b] * sumlx[b]
    FL = np.empty((n, nb), np.float32)
    for js in range(-9, 10):
        if js == 0:
            continue
        for b in range(nb):
            iscale[b] = -(fnmax + F32(0.1) * F32(js)) / fmax[b]
            sumlx[b] = F32(0.0)
            suml2[b] = F32(0.0)
        for i in range(n):
            for b in range(nb):
                fl = F32(max(lo, min(hi, nearest_int32(iscale[b] * X[i, b]))))
                FL[i, b] = fl
                w = W[i, b]
                sumlx[b] += w * X[i, b] * fl
                suml2[b] += w * fl * fl
        for b in range(nb):
            if suml2[b] > 0 and sumlx[b] * sumlx[b] > best[b] * suml2[b]:
                for i in range(n):
                    L[i, b] = np.int32(FL[i, b]) + off
                scale[b] = sumlx[b] / suml2[b]
                best[b] = scale[b] * sumlx[b]
    for b in range(nb):
        if amax[b] < GROUP_MAX_EPS:
            for i in range(n):
                L[i, b] = 0
            scale_out[b] = F32(0.0)
        else:
            scale_out[b] = scale[b]


# -- plumbing shared by the format modules -------------------------------------------------


def check_block_dtype(dtype: np.dtype, type_size: int) -> np.dtype:
    """Assert a block layout has the size ggml's struct has (it is the single description of the layout)."""
    dtype = np.dtype(dtype)
    assert dtype.itemsize == type_size, (dtype, type_size)
    return dtype


def field_offset(dtype: np.dtype, name: str) -> int:
    """Byte offset of a field inside a block (kernels index raw bytes with it)."""
    return int(np.dtype(dtype).fields[name][1])


def new_output(rows: int, n: int, block_size: int, type_size: int) -> np.ndarray:
    return np.empty((rows, n // block_size * type_size), dtype=np.uint8)


def weights_or_empty(importance):
    """(weights array, has_weights) in the form the kernels take: one compiled signature for both cases."""
    if importance is None:
        return np.zeros(1, dtype=np.float32), False
    return np.ascontiguousarray(importance, dtype=np.float32), True

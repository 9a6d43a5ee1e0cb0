"""The ternary formats TQ1_0 and TQ2_0 (BitNet b1.58 / TriLM weights: every value is -1, 0 or +1 times d).

TQ1_0 packs five trits per byte as a base-3 fixed-point fraction (3^5 = 243 < 256),
plus four per byte in ``qh``; TQ2_0 spends two bits per trit. One fp16 scale, the
super-block's absolute maximum. Importance weights are ignored, as ggml ignores them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from lamina.gguf.types import QK_K

from .common import F32, c_max, check_block_dtype, field_offset, fp32_to_fp16, load_f16, new_output, round_away, store_f16
from .registry import register

RELEASES_GIL = True  # every kernel here is compiled nogil: lamina quantize may run them in several threads

BLOCK_TQ1_0 = check_block_dtype([("qs", "u1", (48,)), ("qh", "u1", (4,)), ("d", "<f2")], 54)
BLOCK_TQ2_0 = check_block_dtype([("qs", "u1", (64,)), ("d", "<f2")], 66)

TQ1_QH, TQ1_D = field_offset(BLOCK_TQ1_0, "qh"), field_offset(BLOCK_TQ1_0, "d")
TQ2_D = field_offset(BLOCK_TQ2_0, "d")
POW3 = np.array([1, 3, 9, 27, 81, 243], dtype=np.int64)


@njit(cache=True, error_model="numpy")
def _trit(q, n):
    """Trit n (0 = most significant) of a packed byte, as 0, 1 or 2."""
    shifted = (q * POW3[n]) & 0xFF
    return (shifted * 3) >> 8


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _dequant_tq1_0(raw, out):
    for ib in prange(raw.size // 54):
        b = ib * 54
        d = load_f16(raw, b + TQ1_D)
        y = ib * QK_K
        for n in range(5):
            for m in range(32):
                out[y] = F32(_trit(np.int64(raw[b + m]), n) - 1) * d
                y += 1
        for n in range(5):
            for m in range(16):
                out[y] = F32(_trit(np.int64(raw[b + 32 + m]), n) - 1) * d
                y += 1
        for n in range(4):
            for j in range(4):
                out[y] = F32(_trit(np.int64(raw[b + TQ1_QH + j]), n) - 1) * d
                y += 1


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _dequant_tq2_0(raw, out):
    for ib in prange(raw.size // 66):
        b = ib * 66
        d = load_f16(raw, b + TQ2_D)
        y = ib * QK_K
        for j in range(0, 64, 32):
            for l in range(4):
                for m in range(32):
                    q = (np.int64(raw[b + j + m]) >> (2 * l)) & 3
                    out[y] = F32(q - 1) * d
                    y += 1


@njit(cache=True, error_model="numpy")
def _absmax_scale(x, o):
    amax = F32(0.0)
    for j in range(QK_K):
        amax = c_max(amax, abs(x[o + j]))
    return amax


@njit(cache=True, error_model="numpy")
def _ternary(v, idd):
    """lroundf(v * id) + 1: -1, 0, 1 -> 0, 1, 2."""
    return np.int64(round_away(v * idd)) + 1


@njit(cache=True, error_model="numpy")
def _pack5(q):
    """Base-3 digits to the byte's fixed-point fraction: ceil(q * 256 / 243)."""
    return ((q & 0xFF) * 256 + 242) // 243


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _quantize_tq1_0(x, out):
    rows, n = x.shape
    for r in prange(rows):
        xr = x[r]
        y = out[r]
        for i in range(n // QK_K):
            o = i * QK_K
            b = i * 54
            d = _absmax_scale(xr, o)
            idd = F32(1.0) / d if d else F32(0.0)
            store_f16(y, b + TQ1_D, fp32_to_fp16(d))
            for m in range(32):
                q = 0
                for k in range(5):
                    q = (q * 3 + _ternary(xr[o + m + 32 * k], idd)) & 0xFF
                y[b + m] = np.uint8(_pack5(q) & 0xFF)
            o += 160
            for m in range(16):
                q = 0
                for k in range(5):
                    q = (q * 3 + _ternary(xr[o + m + 16 * k], idd)) & 0xFF
                y[b + 32 + m] = np.uint8(_pack5(q) & 0xFF)
            o += 80
            for j in range(4):
                q = 0
                for m in range(4):
                    q = (q * 3 + _ternary(xr[o + j + 4 * m], idd)) & 0xFF
                q = (q * 3) & 0xFF
                y[b + TQ1_QH + j] = np.uint8(_pack5(q) & 0xFF)


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _quantize_tq2_0(x, out):
    rows, n = x.shape
    for r in prange(rows):
        xr = x[r]
        y = out[r]
        for i in range(n // QK_K):
            o = i * QK_K
            b = i * 66
            d = _absmax_scale(xr, o)
            idd = F32(1.0) / d if d else F32(0.0)
            store_f16(y, b + TQ2_D, fp32_to_fp16(d))
            for j in range(0, 64, 32):
                for m in range(32):
                    q = 0
                    for k in range(4):
                        q += (_ternary(xr[o + m + 32 * k], idd) & 3) << (2 * k)
                    y[b + j + m] = np.uint8(q & 0xFF)
                o += 128


def _quantizer(kernel, type_size):
    def quantize_rows(x: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
        out = new_output(x.shape[0], x.shape[1], QK_K, type_size)
        kernel(x, out)
        return out

    return quantize_rows


def _dequantizer(kernel):
    def dequantize_rows(raw: np.ndarray, n: int) -> np.ndarray:
        out = np.empty((raw.shape[0], n), dtype=np.float32)
        kernel(np.ascontiguousarray(raw).reshape(-1), out.reshape(-1))
        return out

    return dequantize_rows


register("TQ1_0", _quantizer(_quantize_tq1_0, 54), _dequantizer(_dequant_tq1_0), BLOCK_TQ1_0)
register("TQ2_0", _quantizer(_quantize_tq2_0, 66), _dequantizer(_dequant_tq2_0), BLOCK_TQ2_0)

"""MXFP4 (OCP microscaling FP4): 32 E2M1 values sharing one power-of-two (E8M0) scale.

The codes index ``KVALUES_MXFP4`` (the E2M1 values doubled, so they are integers);
the shared exponent is ``floor(log2(amax)) - 2``, stored biased by 127, and each
value takes the nearest code (the first on ties). Importance weights are ignored,
as ggml ignores them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .common import F32, bits_f32, check_block_dtype, field_offset, new_output
from .registry import register

RELEASES_GIL = True  # every kernel here is compiled nogil: lamina quantize may run them in several threads

KVALUES_MXFP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.int8)
BLOCK_MXFP4 = check_block_dtype([("e", "u1"), ("qs", "u1", (16,))], 17)
QS = field_offset(BLOCK_MXFP4, "qs")


@njit(cache=True, error_model="numpy")
def e8m0_to_fp32_half(e):
    """2^(e - 128): half the E8M0 scale, because the code values are doubled (ggml_e8m0_to_fp32_half)."""
    e = np.int64(e)
    if e < 2:
        return bits_f32(0x00200000 << e)
    return bits_f32((e - 1) << 23)


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _dequant_mxfp4(raw, out):
    for ib in prange(raw.size // 17):
        b = ib * 17
        d = e8m0_to_fp32_half(raw[b])
        o = ib * 32
        for j in range(16):
            q = np.int64(raw[b + QS + j])
            out[o + j] = F32(KVALUES_MXFP4[q & 0xF]) * d
            out[o + j + 16] = F32(KVALUES_MXFP4[q >> 4]) * d


@njit(cache=True, error_model="numpy")
def _best_index(x, e):
    best_index = 0
    best_err = abs(F32(KVALUES_MXFP4[0]) * e - x)
    for i in range(1, 16):
        err = abs(F32(KVALUES_MXFP4[i]) * e - x)
        if err < best_err:
            best_index = i
            best_err = err
    return best_index


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _quantize_mxfp4(x, out):
    rows, n = x.shape
    for r in prange(rows):
        xr = x[r]
        y = out[r]
        for i in range(n // 32):
            o = i * 32
            b = i * 17
            amax = F32(0.0)
            for j in range(32):
                if amax < abs(xr[o + j]):
                    amax = abs(xr[o + j])
            e = 0
            if amax > F32(0.0):
                e = np.int64(np.floor(np.log2(amax)) - F32(2.0) + F32(127.0)) & 0xFF
            d = e8m0_to_fp32_half(e)
            y[b] = np.uint8(e)
            for j in range(16):
                x0 = _best_index(xr[o + j], d)
                x1 = _best_index(xr[o + 16 + j], d)
                y[b + QS + j] = np.uint8(x0 | (x1 << 4))


def _quantize_rows(x: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    out = new_output(x.shape[0], x.shape[1], 32, 17)
    _quantize_mxfp4(x, out)
    return out


def _dequantize_rows(raw: np.ndarray, n: int) -> np.ndarray:
    out = np.empty((raw.shape[0], n), dtype=np.float32)
    _dequant_mxfp4(np.ascontiguousarray(raw).reshape(-1), out.reshape(-1))
    return out


register("MXFP4", _quantize_rows, _dequantize_rows, BLOCK_MXFP4)

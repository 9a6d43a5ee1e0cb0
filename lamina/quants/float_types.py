"""The plain float types F32, F16 and BF16, converted exactly as ggml converts them.

F16: round to nearest even, overflow to infinity, NaN to 0x7E00 (ggml_compute_fp32_to_fp16).
BF16: round to nearest even, NaN forced quiet (ggml_compute_fp32_to_bf16). Importance
weights are ignored, as ggml_quantize_chunk ignores them for these types.
"""

from __future__ import annotations

import numpy as np

from .common import bf16_to_fp32_array, check_block_dtype, fp16_to_fp32_array, fp32_to_bf16_array, fp32_to_fp16_array
from .registry import register

RELEASES_GIL = True  # every kernel here is compiled nogil: lamina quantize may run them in several threads

BLOCK_F32 = check_block_dtype("<f4", 4)
BLOCK_F16 = check_block_dtype("<u2", 2)  # IEEE half bits
BLOCK_BF16 = check_block_dtype("<u2", 2)  # bfloat16 bits


def _as_bytes(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint8).reshape(a.shape[0], -1)


def _quantize_f32(x, importance):
    return _as_bytes(np.array(x, dtype=np.float32, copy=True))


def _dequantize_f32(raw, n):
    return np.ascontiguousarray(raw).view(np.float32).reshape(raw.shape[0], n).copy()


def _quantize_f16(x, importance):
    return _as_bytes(fp32_to_fp16_array(x))


def _dequantize_f16(raw, n):
    return fp16_to_fp32_array(np.ascontiguousarray(raw).view(np.uint16)).reshape(raw.shape[0], n)


def _quantize_bf16(x, importance):
    return _as_bytes(fp32_to_bf16_array(x))


def _dequantize_bf16(raw, n):
    return bf16_to_fp32_array(np.ascontiguousarray(raw).view(np.uint16)).reshape(raw.shape[0], n)


register("F32", _quantize_f32, _dequantize_f32, BLOCK_F32)
register("F16", _quantize_f16, _dequantize_f16, BLOCK_F16)
register("BF16", _quantize_bf16, _dequantize_bf16, BLOCK_BF16)

"""Where each block format registers its quantize and dequantize functions.

A format module calls :func:`register` at import time; :mod:`lamina.quants`
imports every format module once, so looking a type up here is all callers do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from lamina.gguf.types import GGMLType, ggml_type

# quantize_rows(x: float32 (rows, n), importance: float32 (n,) | None) -> uint8 (rows, row_bytes)
QuantizeRows = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]
# dequantize_rows(raw: uint8 (rows, row_bytes), n: int) -> float32 (rows, n)
DequantizeRows = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class BlockFormat:
    type: GGMLType
    quantize_rows: QuantizeRows | None
    dequantize_rows: DequantizeRows
    block_dtype: np.dtype | None = None  # the block layout, described once
    requires_importance: bool = False  # ggml refuses to quantize these without an importance matrix


FORMATS: dict[str, BlockFormat] = {}


def register(type_name: str, quantize_rows, dequantize_rows, block_dtype=None, requires_importance=False) -> None:
    gtype = ggml_type(type_name)
    if block_dtype is not None and np.dtype(block_dtype).itemsize != gtype.type_size:
        raise AssertionError(f"{gtype.name}: block dtype is {np.dtype(block_dtype).itemsize} bytes, ggml's is {gtype.type_size}")
    FORMATS[gtype.name] = BlockFormat(gtype, quantize_rows, dequantize_rows, block_dtype, requires_importance)

"""The grid i-quants IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S and IQ1_M.

Block layouts (ggml-common.h) are described once below as NumPy structured dtypes;
the kernels live in iquants_dequant (all seven), iquants_iq2, iquants_iq3 and
iquants_iq1, and the grids and their search tables in iq_grids / iq_tables.
ggml refuses to quantize IQ2_XXS, IQ2_XS and IQ1_S without an importance matrix,
and so does lamina.
"""

from __future__ import annotations

import importlib

import numpy as np

from . import QuantizationError
from . import iquants_dequant as dq
from .iq_parallel import for_row_slices
from .iq_tables import search_tables, sign_table, value_grid
from .registry import register

# The 256-value super-blocks as ggml-common.h lays them out (little-endian).
BLOCK_IQ2_XXS = np.dtype([("d", "<f2"), ("qs", "<u2", 32)])  # per 32: 4 grid bytes + 4×7 sign bits + 4-bit scale
BLOCK_IQ2_XS = np.dtype([("d", "<f2"), ("qs", "<u2", 32), ("scales", "u1", 8)])  # 9-bit grid index + 7 sign bits
# qs: 32 low bytes of 10-bit grid indices, then 32 sign bytes; qh: the indices' top 2 bits
BLOCK_IQ2_S = np.dtype([("d", "<f2"), ("qs", "u1", 64), ("qh", "u1", 8), ("scales", "u1", 8)])
# qs: 64 grid bytes, then per 32 values a u32 of 4×7 sign bits and a 4-bit scale
BLOCK_IQ3_XXS = np.dtype([("d", "<f2"), ("qs", "u1", 96)])
BLOCK_IQ3_S = np.dtype(
    [("d", "<f2"), ("qs", "u1", 64), ("qh", "u1", 8), ("signs", "u1", 32), ("scales", "u1", 4)]
)
# qh per 32 values: 4×3 high index bits, a 3-bit scale and the sign of the shift
BLOCK_IQ1_S = np.dtype([("d", "<f2"), ("qs", "u1", 32), ("qh", "<u2", 8)])
# no d field: the fp16 super-block scale is spread over the top nibbles of the four u16 scales
BLOCK_IQ1_M = np.dtype([("qs", "u1", 32), ("qh", "u1", 16), ("scales", "u1", 8)])

RELEASES_GIL = True  # every kernel here is compiled nogil: lamina quantize may run them in several threads

_EMPTY = np.empty(0, dtype=np.float32)


def _check_rows(type_name: str, x: np.ndarray, importance: np.ndarray | None) -> None:
    """ggml has no answer for NaN or inf (its searches abort or emit garbage), so refuse them."""
    step = max(1, (1 << 22) // max(1, x.shape[1]))  # bounded scratch memory for big tensors
    for start in range(0, x.shape[0], step):
        finite = np.isfinite(x[start : start + step])
        if not finite.all():
            row, col = np.argwhere(~finite)[0]
            row += start
            raise QuantizationError(f"{type_name}: row {row} has a non-finite value at column {col} ({x[row, col]})")
    if importance is not None and not np.isfinite(importance).all():
        col = int(np.argwhere(~np.isfinite(importance))[0, 0])
        raise QuantizationError(f"{type_name}: importance weight {col} is not finite ({importance[col]})")


def _run(type_name: str, kernel, x, importance, grid: str, block_bytes: int, with_flag: bool) -> np.ndarray:
    _check_rows(type_name, x, importance)
    tables = search_tables(grid)
    out = np.empty((x.shape[0], x.shape[1] // 256 * block_bytes), dtype=np.uint8)
    qw = _EMPTY if importance is None else importance
    flag = (importance is not None,) if with_flag else ()

    def work(a: int, b: int) -> np.ndarray:
        return kernel(x[a:b], qw, *flag, out[a:b], tables.positions, tables.kmap, tables.neighbours)

    status = np.concatenate(for_row_slices(x.shape[0], work))
    bad = np.flatnonzero(status)
    if bad.size:
        raise QuantizationError(
            f"{type_name}: row {bad[0]} cannot be coded (no grid point at a finite distance: "
            "values too large for float32 arithmetic; ggml aborts here)"
        )
    return out


def _quantizer(type_name: str, module: str, grid: str, block_bytes: int, with_flag: bool):
    """The registered quantize_rows; its kernel module is imported (and compiled) on first use."""

    def quantize_rows(x: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
        kernel = getattr(importlib.import_module(f"{__package__}.{module}"), f"quantize_{type_name.lower()}")
        return _run(type_name, kernel, x, importance, grid, block_bytes, with_flag)

    quantize_rows.__doc__ = f"Quantize float32 rows to {type_name} blocks (ggml's quantize_{type_name.lower()})."
    return quantize_rows


def _dequantizer(kernel, grid: str, signs: bool):
    def dequantize_rows(raw: np.ndarray, n: int) -> np.ndarray:
        out = np.empty((raw.shape[0], n), dtype=np.float32)
        tables = (value_grid(grid), sign_table()) if signs else (value_grid(grid),)
        # enough rows per thread that the pool's overhead stays small next to the copy
        for_row_slices(raw.shape[0], lambda a, b: kernel(raw[a:b], *tables, out[a:b]), max(1, 65536 // n))
        return out

    return dequantize_rows


# type, block dtype, quantizer module, grid, whether ggml requires an importance matrix, dequantizer, it takes signs
_TYPES = [
    ("IQ2_XXS", BLOCK_IQ2_XXS, "iquants_iq2", "IQ2_XXS", True, dq.dequantize_iq2_xxs, True),
    ("IQ2_XS", BLOCK_IQ2_XS, "iquants_iq2", "IQ2_XS", True, dq.dequantize_iq2_xs, True),
    ("IQ2_S", BLOCK_IQ2_S, "iquants_iq2", "IQ2_S", False, dq.dequantize_iq2_s, False),
    ("IQ3_XXS", BLOCK_IQ3_XXS, "iquants_iq3", "IQ3_XXS", False, dq.dequantize_iq3_xxs, True),
    ("IQ3_S", BLOCK_IQ3_S, "iquants_iq3", "IQ3_S", False, dq.dequantize_iq3_s, False),
    ("IQ1_S", BLOCK_IQ1_S, "iquants_iq1", "IQ1", True, dq.dequantize_iq1_s, False),
    ("IQ1_M", BLOCK_IQ1_M, "iquants_iq1", "IQ1", False, dq.dequantize_iq1_m, False),
]

for _name, _dtype, _module, _grid, _needs_imatrix, _dequant, _signs in _TYPES:
    register(
        _name,
        _quantizer(_name, _module, _grid, _dtype.itemsize, not _needs_imatrix),
        _dequantizer(_dequant, _grid, _signs),
        block_dtype=_dtype,
        requires_importance=_needs_imatrix,
    )

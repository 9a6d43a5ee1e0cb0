"""Every ggml block format, bit-exact with ggml-quants.c.

``quantize(x, type, importance=None)`` turns float32 rows into the bytes a GGUF
file stores; ``dequantize(raw, type, shape)`` turns them back into float32. Each
format family lives in its own module, imported the first time one of its types
is used (so reading a Q4_K model never compiles the i-quant searches).
"""

from __future__ import annotations

import importlib

import numpy as np

from lamina.gguf.types import GGMLType, ggml_type
from lamina.kernels import family  # noqa: F401  (Numba's target and cache, before anything here compiles)

from .registry import FORMATS, BlockFormat

# Which module implements each type.
_FAMILY = {
    **dict.fromkeys(["F32", "F16", "BF16"], "float_types"),
    **dict.fromkeys(["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1"], "legacy"),
    **dict.fromkeys(["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"], "kquants"),
    **dict.fromkeys(["IQ4_NL", "IQ4_XS"], "iq4"),
    **dict.fromkeys(["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M"], "iquants"),
    **dict.fromkeys(["TQ1_0", "TQ2_0"], "ternary"),
    **dict.fromkeys(["MXFP4"], "mxfp4"),
}


class QuantizationError(ValueError):
    """A request to quantize or dequantize that cannot be honoured (bad type, shape or input)."""


def block_format(type_name: str | GGMLType) -> BlockFormat:
    """The registered format for a ggml type, importing its family module on first use."""
    try:
        gtype = ggml_type(type_name)
    except ValueError as e:
        raise QuantizationError(str(e)) from None
    fmt = FORMATS.get(gtype.name)
    if fmt is None:
        family = _FAMILY.get(gtype.name)
        if family is None:
            raise QuantizationError(f"lamina does not implement the {gtype.name} block format")
        importlib.import_module(f"{__name__}.{family}")
        fmt = FORMATS[gtype.name]
    return fmt


def quantize(x: np.ndarray, type: str, importance: np.ndarray | None = None) -> np.ndarray:
    """Quantize float32 rows ``x`` of shape (rows, n) to ``type``; returns the blocks as uint8 (rows × row bytes, flat)."""
    fmt = block_format(type)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise QuantizationError(f"quantize expects rows of shape (rows, n), got shape {x.shape}")
    n = x.shape[1]
    if n % fmt.type.block_size:
        raise QuantizationError(f"row length {n} is not a multiple of {fmt.type.name}'s block size {fmt.type.block_size}")
    if importance is not None:
        importance = np.ascontiguousarray(importance, dtype=np.float32).reshape(-1)
        if importance.shape[0] != n:
            raise QuantizationError(f"importance has {importance.shape[0]} weights for rows of {n}")
    elif fmt.requires_importance:
        raise QuantizationError(f"{fmt.type.name} needs an importance matrix (ggml refuses to quantize it without one)")
    if fmt.quantize_rows is None:
        raise QuantizationError(f"quantizing to {fmt.type.name} is not supported")
    out = fmt.quantize_rows(np.ascontiguousarray(x), importance)
    return np.ascontiguousarray(out, dtype=np.uint8).reshape(-1)


def dequantize(raw: np.ndarray, type: str, shape) -> np.ndarray:
    """Turn stored blocks back into float32. ``shape`` is the NumPy shape (..., n) of the result."""
    fmt = block_format(type)
    shape = tuple(int(s) for s in (shape if np.ndim(shape) else (shape,)))
    n = shape[-1]
    if n % fmt.type.block_size:
        raise QuantizationError(f"row length {n} is not a multiple of {fmt.type.name}'s block size {fmt.type.block_size}")
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    raw = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    need = rows * fmt.type.row_bytes(n)
    if raw.nbytes != need:
        raise QuantizationError(f"{raw.nbytes} bytes given, {rows} rows of {n} {fmt.type.name} values need {need}")
    return fmt.dequantize_rows(raw.reshape(rows, -1), n).reshape(shape)


__all__ = ["FORMATS", "BlockFormat", "QuantizationError", "block_format", "dequantize", "quantize"]

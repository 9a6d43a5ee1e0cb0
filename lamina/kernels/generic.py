"""Weights without a dedicated kernel: Q2_K, the i-quants, TQ1_0/TQ2_0, MXFP4, BF16.

Every such block format (Q2_K, the i-quants, TQ1_0/TQ2_0, MXFP4, IQ4_NL/XS …) is
multiplied tile by tile (matrix-vector products round the activation first, as the
specialised kernels do): a few hundred rows dequantized by the format's own (Numba)
dequantizer into a float32 buffer, then a BLAS product. BF16 weights use BLAS directly
(F16 and F32 have exact kernels in :mod:`.floats`).
"""

from __future__ import annotations

import numpy as np

from lamina.quants import dequantize as dequantize_blocks

from .activations import round_activations

# ggml's vec_dot_type: how the activation is rounded before the dot product with each weight type.
ACTIVATION_ROUNDING = {
    "Q4_0": "q8_0", "Q4_1": "q8_0", "Q5_0": "q8_0", "Q5_1": "q8_0", "Q8_0": "q8_0", "IQ4_NL": "q8_0",
    "MXFP4": "q8_0", "Q2_K": "q8_K", "Q3_K": "q8_K", "Q4_K": "q8_K", "Q5_K": "q8_K", "Q6_K": "q8_K",
    "IQ4_XS": "q8_K", "IQ2_XXS": "q8_K", "IQ2_XS": "q8_K", "IQ2_S": "q8_K", "IQ3_XXS": "q8_K",
    "IQ3_S": "q8_K", "IQ1_S": "q8_K", "IQ1_M": "q8_K", "TQ1_0": "q8_K", "TQ2_0": "q8_K",
    "F16": "f16", "BF16": "bf16",
}

TILE_BYTES = 1 << 21  # float32 rows dequantized at a time in matrix-vector products (2 MiB, stays in L2)


class PackedBlocks:
    """Any block format, left as the file's blocks and dequantized tile by tile."""

    def __init__(self, raws: list[np.ndarray], n: int, type_name: str):
        self.type = type_name
        self.n = n
        self.raw = np.concatenate([r.reshape(r.shape[0], -1) for r in raws]) if len(raws) > 1 else raws[0]
        self.rows = self.raw.shape[0]
        self.activation = ACTIVATION_ROUNDING.get(type_name)

    def dequantize(self, r0: int, out: np.ndarray) -> None:
        out[...] = dequantize_blocks(self.raw[r0:r0 + out.shape[0]], self.type, out.shape)

    def matvec(self, x: np.ndarray, alone: bool = False) -> np.ndarray:
        """``x @ W.T``; ``alone``: each row by its own BLAS call (a product's bits may depend on how
        many rows it multiplies)."""
        x = round_activations(x, self.activation)
        out = np.empty((x.shape[0], self.rows), np.float32)
        tile = max(1, TILE_BYTES // (4 * self.n))
        buf = np.empty((tile, self.n), np.float32)
        for r0 in range(0, self.rows, tile):
            rows = min(tile, self.rows - r0)
            self.dequantize(r0, buf[:rows])
            _products(x, buf[:rows], out[:, r0:r0 + rows], alone)
        return out


class PackedFloat:
    """Float weights converted once to float32 and multiplied by BLAS (BF16; F16 and F32 take
    :mod:`.floats`' exact kernels instead)."""

    def __init__(self, raws: list[np.ndarray], n: int, type_name: str):
        self.n = n
        parts = [dequantize_blocks(np.ascontiguousarray(r).view(np.uint8), type_name, (_rows(r, n, type_name), n))
                 for r in raws]
        self.w = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self.rows = self.w.shape[0]
        self.activation = ACTIVATION_ROUNDING.get(type_name)

    def dequantize(self, r0: int, out: np.ndarray) -> None:
        out[...] = self.w[r0:r0 + out.shape[0]]

    def matvec(self, x: np.ndarray, alone: bool = False) -> np.ndarray:
        out = np.empty((x.shape[0], self.rows), np.float32)
        _products(round_activations(x, self.activation), self.w, out, alone)
        return out


def _products(x: np.ndarray, w: np.ndarray, out: np.ndarray, alone: bool) -> None:
    """``out = x @ w.T``, one row at a time when ``alone``."""
    if not alone:
        np.matmul(x, w.T, out=out)
        return
    for i in range(x.shape[0]):
        np.matmul(x[i:i + 1], w.T, out=out[i:i + 1])


def _rows(raw: np.ndarray, n: int, type_name: str) -> int:
    itemsize = 4 if type_name == "F32" else 2
    return raw.nbytes // (itemsize * n)

"""F16 and F32 weights exact to llama.cpp's CPU backend.

ggml multiplies a float16 weight by the activation rounded to float16 (its ``vec_dot_type``), a
float32 weight by the activation as it is, and how it adds the products depends on the batch:

* one token, or a weight whose rows are not a multiple of 4 or whose row length is not a multiple
  of one register (EPR values), or an expert weight (``mul_mat_id``): ``ggml_vec_dot_f16``/``_f32``
  per output. On AVX-512: four 16-lane accumulators over steps of 64 values, folded
  ``(a0 + a2) + (a1 + a3)`` and summed in the order of ``_mm512_reduce_add_ps``, the leftover
  values added one by one (in double for F16; for F32 as GCC compiles that loop: products of 16,
  then of 8, rounded and added in order, the last seven or fewer with FMAs). On AVX2: four 8-lane
  accumulators over steps of 32, GGML_F32x8_REDUCE; F32 leftovers by 8, then 4, then FMAs;
* otherwise llamafile's ``tinyBLAS``: one register-wide accumulator per output over steps of a
  register (16 values on AVX-512, 8 on AVX2), then that register's horizontal sum.

These kernels repeat both, so an F16 model's logits are llama.cpp's bit for bit. The weight keeps
its type (the file's size); the activation is rounded once per call, and prompt batches take four
tokens past each loaded weight vector.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .common import EPR, F32, fma32
from .simd import (load_f16, round_f16, vadd_f, vfma, vhsum8_hi, vhsum8_lo, vload_f, vload_f8x2, vload_f16,
                   vload_f16_8x2, vreduce_add_f, vreduce_f32x8, vround_f16, vstore_f, vzero_f)

TOKENS_PER_PASS = 4  # tokens sharing each loaded weight vector in the tinyBLAS order


@njit(cache=True, error_model="numpy")
def _round_to_f16(x, out):
    """The activation as ggml's FP32_TO_FP16 leaves it (kept as float32: exact)."""
    flat = x.reshape(-1)
    main = flat.shape[0] - flat.shape[0] % 16
    for i in range(0, main, 16):
        vstore_f(out, i, vround_f16(vload_f(flat, i)))
    for i in range(main, flat.shape[0]):
        out[i] = round_f16(flat[i])


@njit(cache=True, inline="always", error_model="numpy")
def _load(w16, w32, i):
    """16 weights from element ``i``: float16 bits widened, or float32 (``w16`` empty)."""
    return vload_f16(w16, i) if w16.shape[0] else vload_f(w32, i)


@njit(cache=True, inline="always", error_model="numpy")
def _vec_dot_512(w16, w32, wo, x, xo, n):
    """ggml_vec_dot_f16 / ggml_vec_dot_f32 (AVX-512 build) of weight row ``wo`` and activation ``x[xo:xo+n]``."""
    main = n - n % 64
    a0 = vzero_f()
    a1 = vzero_f()
    a2 = vzero_f()
    a3 = vzero_f()
    for i in range(0, main, 64):
        a0 = vfma(_load(w16, w32, wo + i), vload_f(x, xo + i), a0)
        a1 = vfma(_load(w16, w32, wo + i + 16), vload_f(x, xo + i + 16), a1)
        a2 = vfma(_load(w16, w32, wo + i + 32), vload_f(x, xo + i + 32), a2)
        a3 = vfma(_load(w16, w32, wo + i + 48), vload_f(x, xo + i + 48), a3)
    return _leftovers(w16, w32, wo, x, xo, main, n, vreduce_add_f(vadd_f(vadd_f(a0, a2), vadd_f(a1, a3))), 16)


@njit(cache=True, inline="always", error_model="numpy")
def _leftovers(w16, w32, wo, x, xo, main, n, total, epr):
    """The products past the vector loop: in double for ggml_vec_dot_f16; for ggml_vec_dot_f32 its
    ``sumf += x[i]*y[i]`` as GCC compiles it: a register's worth (epr) and then half of one at a time,
    rounded and added in order, the last few contracted into FMAs."""
    if w16.shape[0]:
        s = np.float64(total)
        for i in range(main, n):
            s += np.float64(load_f16(w16, wo + i) * x[xo + i])
        return F32(s)
    i = main
    while n - i >= epr:
        for j in range(i, i + epr):
            total = F32(total + F32(w32[wo + j] * x[xo + j]))
        i += epr
    if n - i >= epr // 2:
        for j in range(i, i + epr // 2):
            total = F32(total + F32(w32[wo + j] * x[xo + j]))
        i += epr // 2
    for j in range(i, n):
        total = fma32(w32[wo + j], x[xo + j], total)
    return total


@njit(cache=True, inline="always", error_model="numpy")
def _vec_dot_256(w16, w32, wo, x, xo, n):
    """ggml_vec_dot_f16 / ggml_vec_dot_f32 (AVX2 build): four 8-lane accumulators over steps of 32
    (held as x0|x1 and x2|x3), GGML_F32x8_REDUCE, then the leftovers."""
    main = n - n % 32
    a01 = vzero_f()
    a23 = vzero_f()
    for i in range(0, main, 32):
        a01 = vfma(_load(w16, w32, wo + i), vload_f(x, xo + i), a01)
        a23 = vfma(_load(w16, w32, wo + i + 16), vload_f(x, xo + i + 16), a23)
    return _leftovers(w16, w32, wo, x, xo, main, n, vreduce_f32x8(vadd_f(a01, a23)), 8)


_vec_dot = _vec_dot_512 if EPR == 16 else _vec_dot_256


TILE_ROWS, TILE_TOKENS = 8, 3  # the register tile: rows x tokens of accumulators
ROW_BLOCK = 32   # weight rows one thread takes at a time (their vectors stay in L1/L2)
TILE_BYTES = 1 << 18  # the activations of a token tile shared by those rows (kept in L2)


@njit(cache=True, parallel=True, error_model="numpy")
def _matmul_float(w16, w32, tiny_rows, n, x, n_tok, out):
    """out (n_tok, rows) = x @ W.T; ``tiny_rows[r]``: row r belongs to a weight tinyBLAS takes.

    Each output is its own accumulation (tinyBLAS's 16-lane one, or vec_dot's), so the order the
    outputs are visited in changes nothing: rows are taken in blocks and tokens in tiles, for the
    cache's sake."""
    rows = tiny_rows.shape[0]
    n_blocks = (rows + ROW_BLOCK - 1) // ROW_BLOCK
    widen = EPR == 16 and w16.shape[0] > 0 and n_tok >= 2 * TILE_TOKENS and n % 16 == 0
    token_tile = max(TILE_TOKENS, TILE_BYTES // (4 * n) // TILE_TOKENS * TILE_TOKENS)
    for b in prange(n_blocks):
        r0 = b * ROW_BLOCK
        r1 = min(rows, r0 + ROW_BLOCK)
        # a float16 block is widened once, not once per token tile (the values are the same)
        tw16, tw32, base = w16, w32, 0
        if widen:
            tw16 = np.zeros(0, np.uint16)
            tw32 = np.empty((r1 - r0) * n, np.float32)
            for k in range(0, (r1 - r0) * n, 16):
                vstore_f(tw32, k, vload_f16(w16, r0 * n + k))
            base = r0
        for tt in range(0, n_tok, token_tile):
            t_end = min(n_tok, tt + token_tile)
            r = r0
            while r < r1:
                if EPR == 16 and n_tok >= 2 and r + TILE_ROWS <= r1 and tiny_rows[r:r + TILE_ROWS].all():
                    full = tt + (t_end - tt) // TILE_TOKENS * TILE_TOKENS
                    _tiny_tile(tw16, tw32, r - base, r, n, x, tt, full, out)
                    for q in range(r, r + TILE_ROWS):
                        _tiny_rows(tw16, tw32, (q - base) * n, q, n, x, full, t_end, out)
                    r += TILE_ROWS
                    continue
                if n_tok >= 2 and tiny_rows[r]:
                    _tiny_rows(tw16, tw32, (r - base) * n, r, n, x, tt, t_end, out)
                else:
                    for t in range(tt, t_end):
                        out[t, r] = _vec_dot(w16, w32, r * n, x, t * n, n)
                r += 1


@njit(cache=True, inline="always", error_model="numpy")
def _tiny_tile(w16, w32, wr, r, n, x, t_start, t_end, out):
    """:func:`_tiny_rows` for output rows r..r+7 (weight rows wr..wr+7) and a multiple of 3 tokens:
    each loaded weight vector serves 3 tokens and each activation vector 8 rows (the outputs' sums are
    unchanged). The 24 accumulators are written out one by one on purpose: Numba keeps named
    vector values in registers, not the elements of an array (8 x 3 measured fastest of the
    shapes tried, 2x4 to 12x2, on the bge-base benchmark)."""
    for t0 in range(t_start, t_end, 3):
        a0_0 = vzero_f()
        a0_1 = vzero_f()
        a0_2 = vzero_f()
        a1_0 = vzero_f()
        a1_1 = vzero_f()
        a1_2 = vzero_f()
        a2_0 = vzero_f()
        a2_1 = vzero_f()
        a2_2 = vzero_f()
        a3_0 = vzero_f()
        a3_1 = vzero_f()
        a3_2 = vzero_f()
        a4_0 = vzero_f()
        a4_1 = vzero_f()
        a4_2 = vzero_f()
        a5_0 = vzero_f()
        a5_1 = vzero_f()
        a5_2 = vzero_f()
        a6_0 = vzero_f()
        a6_1 = vzero_f()
        a6_2 = vzero_f()
        a7_0 = vzero_f()
        a7_1 = vzero_f()
        a7_2 = vzero_f()
        for i in range(0, n, 16):
            x0 = vload_f(x, (t0 + 0) * n + i)
            x1 = vload_f(x, (t0 + 1) * n + i)
            x2 = vload_f(x, (t0 + 2) * n + i)
            w = _load(w16, w32, (wr + 0) * n + i)
            a0_0 = vfma(w, x0, a0_0)
            a0_1 = vfma(w, x1, a0_1)
            a0_2 = vfma(w, x2, a0_2)
            w = _load(w16, w32, (wr + 1) * n + i)
            a1_0 = vfma(w, x0, a1_0)
            a1_1 = vfma(w, x1, a1_1)
            a1_2 = vfma(w, x2, a1_2)
            w = _load(w16, w32, (wr + 2) * n + i)
            a2_0 = vfma(w, x0, a2_0)
            a2_1 = vfma(w, x1, a2_1)
            a2_2 = vfma(w, x2, a2_2)
            w = _load(w16, w32, (wr + 3) * n + i)
            a3_0 = vfma(w, x0, a3_0)
            a3_1 = vfma(w, x1, a3_1)
            a3_2 = vfma(w, x2, a3_2)
            w = _load(w16, w32, (wr + 4) * n + i)
            a4_0 = vfma(w, x0, a4_0)
            a4_1 = vfma(w, x1, a4_1)
            a4_2 = vfma(w, x2, a4_2)
            w = _load(w16, w32, (wr + 5) * n + i)
            a5_0 = vfma(w, x0, a5_0)
            a5_1 = vfma(w, x1, a5_1)
            a5_2 = vfma(w, x2, a5_2)
            w = _load(w16, w32, (wr + 6) * n + i)
            a6_0 = vfma(w, x0, a6_0)
            a6_1 = vfma(w, x1, a6_1)
            a6_2 = vfma(w, x2, a6_2)
            w = _load(w16, w32, (wr + 7) * n + i)
            a7_0 = vfma(w, x0, a7_0)
            a7_1 = vfma(w, x1, a7_1)
            a7_2 = vfma(w, x2, a7_2)
        out[t0 + 0, r + 0] = vreduce_add_f(a0_0)
        out[t0 + 1, r + 0] = vreduce_add_f(a0_1)
        out[t0 + 2, r + 0] = vreduce_add_f(a0_2)
        out[t0 + 0, r + 1] = vreduce_add_f(a1_0)
        out[t0 + 1, r + 1] = vreduce_add_f(a1_1)
        out[t0 + 2, r + 1] = vreduce_add_f(a1_2)
        out[t0 + 0, r + 2] = vreduce_add_f(a2_0)
        out[t0 + 1, r + 2] = vreduce_add_f(a2_1)
        out[t0 + 2, r + 2] = vreduce_add_f(a2_2)
        out[t0 + 0, r + 3] = vreduce_add_f(a3_0)
        out[t0 + 1, r + 3] = vreduce_add_f(a3_1)
        out[t0 + 2, r + 3] = vreduce_add_f(a3_2)
        out[t0 + 0, r + 4] = vreduce_add_f(a4_0)
        out[t0 + 1, r + 4] = vreduce_add_f(a4_1)
        out[t0 + 2, r + 4] = vreduce_add_f(a4_2)
        out[t0 + 0, r + 5] = vreduce_add_f(a5_0)
        out[t0 + 1, r + 5] = vreduce_add_f(a5_1)
        out[t0 + 2, r + 5] = vreduce_add_f(a5_2)
        out[t0 + 0, r + 6] = vreduce_add_f(a6_0)
        out[t0 + 1, r + 6] = vreduce_add_f(a6_1)
        out[t0 + 2, r + 6] = vreduce_add_f(a6_2)
        out[t0 + 0, r + 7] = vreduce_add_f(a7_0)
        out[t0 + 1, r + 7] = vreduce_add_f(a7_1)
        out[t0 + 2, r + 7] = vreduce_add_f(a7_2)


@njit(cache=True, inline="always", error_model="numpy")
def _tiny_rows_512(w16, w32, wo, r, n, x, t_start, t_end, out):
    """tinyBLAS's outputs (AVX-512 build) of weight row ``r`` for tokens t_start..t_end: one 16-lane
    accumulator per token over steps of 16 values, reduced as _mm512_reduce_add_ps (four tokens per pass)."""
    for t0 in range(t_start, t_end, TOKENS_PER_PASS):
        a0 = vzero_f()
        a1 = vzero_f()
        a2 = vzero_f()
        a3 = vzero_f()
        m = min(TOKENS_PER_PASS, t_end - t0)
        for i in range(0, n, 16):
            wv = _load(w16, w32, wo + i)
            a0 = vfma(wv, vload_f(x, t0 * n + i), a0)
            if m > 1:
                a1 = vfma(wv, vload_f(x, (t0 + 1) * n + i), a1)
            if m > 2:
                a2 = vfma(wv, vload_f(x, (t0 + 2) * n + i), a2)
            if m > 3:
                a3 = vfma(wv, vload_f(x, (t0 + 3) * n + i), a3)
        out[t0, r] = vreduce_add_f(a0)
        if m > 1:
            out[t0 + 1, r] = vreduce_add_f(a1)
        if m > 2:
            out[t0 + 2, r] = vreduce_add_f(a2)
        if m > 3:
            out[t0 + 3, r] = vreduce_add_f(a3)


@njit(cache=True, inline="always", error_model="numpy")
def _tiny_rows_256(w16, w32, wo, r, n, x, t_start, t_end, out):
    """tinyBLAS's outputs (AVX2 build) of weight row ``r``: one 8-lane accumulator per token over steps
    of 8 values, reduced as hsum_float_8; two tokens share each 16-lane vector (one per half)."""
    for t0 in range(t_start, t_end, 2):
        t1 = t0 + 1 if t0 + 1 < t_end else t0
        acc = vzero_f()
        for i in range(0, n, 8):
            wv = vload_f16_8x2(w16, wo + i, wo + i) if w16.shape[0] else vload_f8x2(w32, wo + i, wo + i)
            acc = vfma(wv, vload_f8x2(x, t0 * n + i, t1 * n + i), acc)
        out[t0, r] = vhsum8_lo(acc)
        out[t1, r] = vhsum8_hi(acc)


_tiny_rows = _tiny_rows_512 if EPR == 16 else _tiny_rows_256


class PackedFloatExact:
    """F16 or F32 weights (several stacked, when fused), computed in ggml's order."""

    def __init__(self, raws: list[np.ndarray], n: int, type_name: str):
        half = type_name == "F16"
        dtype = np.uint16 if half else np.float32
        parts = [np.ascontiguousarray(r).view(dtype).reshape(-1, n) for r in raws]
        self.n, self.type, self.activation = n, type_name, "f16" if half else None
        w = (np.concatenate(parts) if len(parts) > 1 else parts[0].copy()).reshape(-1)
        self.w16 = w if half else np.zeros(0, np.uint16)
        self.w32 = np.zeros(0, np.float32) if half else w
        self.rows = sum(p.shape[0] for p in parts)
        # tinyBLAS serves a weight (ggml multiplies each separately) with rows % 4 == 0 and n a multiple of
        # one register (16 values on AVX-512, 8 on AVX2)
        self.tiny_rows = np.concatenate([np.full(p.shape[0], p.shape[0] % 4 == 0 and n % EPR == 0)
                                         for p in parts])

    def as_expert(self) -> None:
        """ggml multiplies mixture-of-experts weights with mul_mat_id, which never takes tinyBLAS."""
        self.tiny_rows[:] = False

    def matmul(self, x: np.ndarray, alone: bool = False) -> np.ndarray:
        """``x @ W.T``; ``alone``: every row as ggml computes a single token (its vec_dot, no tinyBLAS)."""
        n_tok = x.shape[0]
        if self.activation == "f16":
            xr = np.empty(n_tok * self.n, np.float32)
            _round_to_f16(x, xr)
        else:
            xr = np.ascontiguousarray(x, np.float32).reshape(-1)
        out = np.empty((n_tok, self.rows), np.float32)
        tiny_rows = self.tiny_rows if not alone else np.zeros_like(self.tiny_rows)
        _matmul_float(self.w16, self.w32, tiny_rows, self.n, xr, n_tok, out)
        return out

    def dequantize(self, r0: int, out: np.ndarray) -> None:
        rows = out.shape[0]
        part = slice(r0 * self.n, (r0 + rows) * self.n)
        w = self.w16[part].view(np.float16) if self.w16.shape[0] else self.w32[part]
        out[...] = w.reshape(rows, self.n)

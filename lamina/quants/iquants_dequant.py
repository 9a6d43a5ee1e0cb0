"""Dequantization of the grid i-quants (IQ2_XXS … IQ1_M), float32-exact with ggml's dequantize_row_*.

Each kernel takes the rows' raw blocks (uint8, rows × row bytes) and writes float32
values in ggml's order of operations: the block scale is built first, then each value
is scale × grid value (× ±1 for the stored sign). Each kernel fills ``out``
(rows × n float32) and releases the GIL, so slices of rows can run on threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .common import fp16_to_fp32
from .iq_numeric import F_HALF

_F_QUARTER = np.float32(0.25)
_F_DELTA = np.float32(0.125)  # IQ1S_DELTA == IQ1M_DELTA


@njit(cache=True, inline="always", error_model="numpy")
def _u16(b, o):
    return np.int64(b[o]) | (np.int64(b[o + 1]) << 8)


@njit(cache=True, inline="always", error_model="numpy")
def _u32(b, o):
    return _u16(b, o) | (_u16(b, o + 2) << 16)


@njit(cache=True, inline="always", error_model="numpy")
def _signed(v, negative):
    return -v if negative else v


@njit(cache=True, nogil=True, error_model="numpy")
def dequantize_iq2_xxs(raw, grid, ksigns, out):
    rows, n = out.shape
    for r in range(rows):
        b = raw[r]
        y = out[r]
        for ibl in range(n // 256):
            o = 66 * ibl
            d = fp16_to_fp32(_u16(b, o))
            for ib in range(8):
                q = o + 2 + 8 * ib
                aux1 = _u32(b, q + 4)
                db = d * (F_HALF + np.float32(aux1 >> 28)) * _F_QUARTER
                for l in range(4):
                    g = b[q + l]
                    signs = ksigns[(aux1 >> (7 * l)) & 127]
                    base = 256 * ibl + 32 * ib + 8 * l
                    for j in range(8):
                        y[base + j] = _signed(db * np.float32(grid[g, j]), signs & (1 << j))


@njit(cache=True, nogil=True, error_model="numpy")
def dequantize_iq2_xs(raw, grid, ksigns, out):
    rows, n = out.shape
    for r in range(rows):
        b = raw[r]
        y = out[r]
        for ibl in range(n // 256):
            o = 74 * ibl
            d = fp16_to_fp32(_u16(b, o))
            for ib in range(8):
                sc = b[o + 66 + ib]
                db0 = d * (F_HALF + np.float32(sc & 0xF)) * _F_QUARTER
                db1 = d * (F_HALF + np.float32(sc >> 4)) * _F_QUARTER
                for l in range(4):
                    q = _u16(b, o + 2 + 2 * (4 * ib + l))
                    g = q & 511
                    signs = ksigns[q >> 9]
                    db = db0 if l < 2 else db1
                    base = 256 * ibl + 32 * ib + 8 * l
                    for j in range(8):
                        y[base + j] = _signed(db * np.float32(grid[g, j]), signs & (1 << j))


@njit(cache=True, nogil=True, error_model="numpy")
def dequantize_iq2_s(raw, grid, out):
    rows, n = out.shape
    for r in range(rows):
        b = raw[r]
        y = out[r]
        for ibl in range(n // 256):
            o = 82 * ibl
            d = fp16_to_fp32(_u16(b, o))
            qs = o + 2
            qh = o + 66
            for ib in range(8):
                sc = b[o + 74 + ib]
                db0 = d * (F_HALF + np.float32(sc & 0xF)) * _F_QUARTER
                db1 = d * (F_HALF + np.float32(sc >> 4)) * _F_QUARTER
                h = np.int64(b[qh + ib])
                for l in range(4):
                    g = np.int64(b[qs + 4 * ib + l]) | ((h << (8 - 2 * l)) & 0x300)
                    signs = b[qs + 32 + 4 * ib + l]
                    db = db0 if l < 2 else db1
                    base = 256 * ibl + 32 * ib + 8 * l
                    for j in range(8):
                        y[base + j] = _signed(db * np.float32(grid[g, j]), signs & (1 << j))


@njit(cache=True, nogil=True, error_model="numpy")
def dequantize_iq3_xxs(raw, grid, ksigns, out):
    rows, n = out.shape
    for r in range(rows):
        b = raw[r]
        y = out[r]
        for ibl in range(n // 256):
            o = 98 * ibl
            d = fp16_to_fp32(_u16(b, o))
            for ib in range(8):
                aux = _u32(b, o + 2 + 64 + 4 * ib)
                db = d * (F_HALF + np.float32(aux >> 28)) * F_HALF
                q = o + 2 + 8 * ib
                for l in range(4):
                    signs = ksigns[(aux >> (7 * l)) & 127]
                    g1 = b[q + 2 * l]
                    g2 = b[q + 2 * l + 1]
                    base = 256 * ibl + 32 * ib + 8 * l
                    for j in range(4):
                        y[base + j] = _signed(db * np.float32(grid[g1, j]), signs & (1 << j))
                        y[base + j + 4] = _signed(db * np.float32(grid[g2, j]), signs & (1 << (j + 4)))


@njit(cache=True, nogil=True, error_model="numpy")
def dequantize_iq3_s(raw, grid, out):
    rows, n = out.shape
    for r in range(rows):
        b = raw[r]
        y = out[r]
        for ibl in range(n // 256):
            o = 110 * ibl
            d = fp16_to_fp32(_u16(b, o))
            qs = o + 2
            qh = o + 66
            signs = o + 74
            scales = o + 106
            for ib in range(8):
                sc = b[scales + ib // 2]
                db = d * np.float32(1 + 2 * ((sc >> (4 * (ib % 2))) & 0xF))
                h = np.int64(b[qh + ib])
                for l in range(4):
                    g1 = np.int64(b[qs + 8 * ib + 2 * l]) | ((h << (8 - 2 * l)) & 256)
                    g2 = np.int64(b[qs + 8 * ib + 2 * l + 1]) | ((h << (7 - 2 * l)) & 256)
                    s = b[signs + 4 * ib + l]
                    base = 256 * ibl + 32 * ib + 8 * l
                    for j in range(4):
                        y[base + j] = _signed(db * np.float32(grid[g1, j]), s & (1 << j))
                        y[base + j + 4] = _signed(db * np.float32(grid[g2, j]), s & (1 << (j + 4)))


@njit(cache=True, nogil=True, error_model="numpy")
def dequantize_iq1_s(raw, grid, out):
    rows, n = out.shape
    for r in range(rows):
        b = raw[r]
        y = out[r]
        for ibl in range(n // 256):
            o = 50 * ibl
            d = fp16_to_fp32(_u16(b, o))
            for ib in range(8):
                qh = _u16(b, o + 34 + 2 * ib)
                dl = d * np.float32(2 * ((qh >> 12) & 7) + 1)
                delta = -_F_DELTA if qh & 0x8000 else _F_DELTA
                for l in range(4):
                    g = np.int64(b[o + 2 + 4 * ib + l]) | (((qh >> (3 * l)) & 7) << 8)
                    base = 256 * ibl + 32 * ib + 8 * l
                    for j in range(8):
                        y[base + j] = dl * (np.float32(grid[g, j]) + delta)


@njit(cache=True, nogil=True, error_model="numpy")
def dequantize_iq1_m(raw, grid, out):
    rows, n = out.shape
    for r in range(rows):
        b = raw[r]
        y = out[r]
        for ibl in range(n // 256):
            o = 56 * ibl
            sc = o + 48
            s0 = _u16(b, sc)
            s1 = _u16(b, sc + 2)
            s2 = _u16(b, sc + 4)
            s3 = _u16(b, sc + 6)
            d = fp16_to_fp32((s0 >> 12) | ((s1 >> 8) & 0x00F0) | ((s2 >> 4) & 0x0F00) | (s3 & 0xF000))
            for ib in range(8):
                s = _u16(b, sc + 2 * (ib // 2))
                dl1 = d * np.float32(2 * ((s >> (6 * (ib % 2))) & 7) + 1)
                dl2 = d * np.float32(2 * ((s >> (6 * (ib % 2) + 3)) & 7) + 1)
                qs = o + 4 * ib
                h0 = np.int64(b[o + 32 + 2 * ib])
                h1 = np.int64(b[o + 32 + 2 * ib + 1])
                for l in range(4):
                    h = h0 if l < 2 else h1
                    if l % 2 == 0:
                        g = np.int64(b[qs + l]) | ((h << 8) & 0x700)
                        negative = h & 0x08
                    else:
                        g = np.int64(b[qs + l]) | ((h << 4) & 0x700)
                        negative = h & 0x80
                    delta = -_F_DELTA if negative else _F_DELTA
                    dl = dl1 if l < 2 else dl2
                    base = 256 * ibl + 32 * ib + 8 * l
                    for j in range(8):
                        y[base + j] = dl * (np.float32(grid[g, j]) + delta)

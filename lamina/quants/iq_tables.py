"""Tables derived from the i-quant grids, built once per process on first use.

Two kinds of table come out of each packed grid in :mod:`lamina.quants.iq_grids`:

* the *value grid* that dequantization reads (ggml-common.h's iq2xxs_grid,
  iq3s_grid, iq1s_grid, ...), one row of decoded values per grid point;
* the *search tables* that quantization uses (``iq2xs_init_impl`` and
  ``iq3xs_init_impl`` in ggml-quants.c): each grid point as odd "positions"
  2·level+1, a map from a packed level vector to its grid index, and for every
  level vector that is not on the grid the list of its nearest grid points.

The neighbour lists keep ggml's encoding exactly (the quantizers' tie-breaking
depends on their order): ``kmap[u] >= 0`` is the grid index of ``u``; otherwise
the list starts at ``o = -kmap[u] - 1`` with ``neighbours[o]`` = count followed by
that many grid indices, ordered by (squared distance, grid index) and holding all
points of the ``nwant`` smallest distances.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import njit, prange

from . import iq_grids

# kmap sizes in ggml: a packed vector of 8 levels in {0,1,2} is at most 0xAAAA = 43690;
# one of 4 levels in 0..7 is at most 0xFFF.
_KMAP_SIZE_2BIT = 43692
_KMAP_SIZE_3BIT = 4096


@dataclass(frozen=True)
class SearchTables:
    """ggml's quantization tables for one grid (see the module docstring)."""

    positions: np.ndarray  # int8 (grid_size, dims): 2*level + 1
    kmap: np.ndarray  # int32 (kmap_size,)
    neighbours: np.ndarray  # uint16, count-prefixed lists


def _unpack_levels(packed, bits: int, dims: int) -> np.ndarray:
    packed = np.asarray(packed, dtype=np.int64)
    shifts = np.arange(dims, dtype=np.int64) * bits
    return ((packed[:, None] >> shifts) & ((1 << bits) - 1)).astype(np.int64)


@njit(cache=True, parallel=True)
def _count_neighbours(positions, kmap, nwant, bits, counts):
    """For each level vector off the grid, how many grid points its neighbour list holds."""
    grid_size, dims = positions.shape
    mask = (1 << bits) - 1
    for i in prange(kmap.shape[0]):
        if kmap[i] >= 0:
            counts[i] = 0
            continue
        d2 = _distances(positions, i, bits, mask, dims, grid_size)
        counts[i] = _take_nearest(d2, nwant, None)


@njit(cache=True, parallel=True)
def _fill_neighbours(positions, kmap, nwant, bits, offsets, neighbours):
    grid_size, dims = positions.shape
    mask = (1 << bits) - 1
    for i in prange(kmap.shape[0]):
        if offsets[i] < 0:
            continue
        d2 = _distances(positions, i, bits, mask, dims, grid_size)
        o = offsets[i]
        n = _take_nearest(d2, nwant, neighbours[o + 1:])
        neighbours[o] = n


@njit(cache=True)
def _distances(positions, i, bits, mask, dims, grid_size):
    d2 = np.empty(grid_size, dtype=np.int32)
    for j in range(grid_size):
        s = 0
        for k in range(dims):
            d = positions[j, k] - (2 * ((i >> (bits * k)) & mask) + 1)
            s += d * d
        d2[j] = s
    return d2


@njit(cache=True)
def _take_nearest(d2, nwant, out):
    """Grid indices of the ``nwant`` smallest distinct distances, in (distance, index) order.

    This is the order ggml's qsort on (d2, j) pairs produces; written to ``out`` if given.
    """
    # the nwant smallest distinct distances, ascending
    smallest = np.full(nwant, np.iinfo(np.int32).max, dtype=np.int32)
    for j in range(d2.shape[0]):
        d = d2[j]
        for m in range(nwant):
            if d == smallest[m]:
                break
            if d < smallest[m]:
                for r in range(nwant - 1, m, -1):
                    smallest[r] = smallest[r - 1]
                smallest[m] = d
                break
    n = 0
    for m in range(nwant):
        for j in range(d2.shape[0]):
            if d2[j] == smallest[m]:
                if out is not None:
                    out[n] = j
                n += 1
    return n


def _search_tables(packed, bits: int, dims: int, kmap_size: int, nwant: int) -> SearchTables:
    levels = _unpack_levels(packed, bits, dims)
    positions = (2 * levels + 1).astype(np.int8)
    kmap = np.full(kmap_size, -1, dtype=np.int32)
    index = (levels << (np.arange(dims) * bits)).sum(axis=1)
    kmap[index] = np.arange(len(packed), dtype=np.int32)
    counts = np.zeros(kmap_size, dtype=np.int64)
    _count_neighbours(positions, kmap, nwant, bits, counts)
    off_grid = kmap < 0
    sizes = np.where(off_grid, counts + 1, 0)
    starts = np.cumsum(sizes) - sizes
    offsets = np.where(off_grid, starts, -1).astype(np.int64)
    neighbours = np.zeros(int(sizes.sum()), dtype=np.uint16)
    _fill_neighbours(positions, kmap, nwant, bits, offsets, neighbours)
    kmap[off_grid] = -(starts[off_grid] + 1).astype(np.int32)
    return SearchTables(positions, kmap, neighbours)


# (packed grid, bits per level, levels per point, kmap size, nwant) as iq2xs_init_impl / iq3xs_init_impl choose them
_SEARCH_SPECS = {
    "IQ2_XXS": (iq_grids.KGRID_2BIT_256, 2, 8, _KMAP_SIZE_2BIT, 2),
    "IQ2_XS": (iq_grids.KGRID_2BIT_512, 2, 8, _KMAP_SIZE_2BIT, 2),
    "IQ2_S": (iq_grids.KGRID_2BIT_1024, 2, 8, _KMAP_SIZE_2BIT, 1),
    "IQ1": (iq_grids.KGRID_1BIT_2048, 2, 8, _KMAP_SIZE_2BIT, 3),
    "IQ3_XXS": (iq_grids.KGRID_3BIT_256, 3, 4, _KMAP_SIZE_3BIT, 2),
    "IQ3_S": (iq_grids.KGRID_3BIT_512, 3, 4, _KMAP_SIZE_3BIT, 3),
}


@lru_cache(maxsize=None)
def search_tables(grid: str) -> SearchTables:
    """Quantization tables for ``grid`` in IQ2_XXS, IQ2_XS, IQ2_S, IQ1 (IQ1_S and IQ1_M), IQ3_XXS, IQ3_S."""
    return _search_tables(*_SEARCH_SPECS[grid])


# (packed grid, bits per level, levels per point, level values, dtype) of ggml-common.h's value grids
_VALUE_SPECS = {
    "IQ2_XXS": (iq_grids.KGRID_2BIT_256, 2, 8, "IQ2", np.uint8),
    "IQ2_XS": (iq_grids.KGRID_2BIT_512, 2, 8, "IQ2", np.uint8),
    "IQ2_S": (iq_grids.KGRID_2BIT_1024, 2, 8, "IQ2", np.uint8),
    "IQ1": (iq_grids.KGRID_1BIT_2048, 2, 8, "IQ1", np.int8),
    "IQ3_XXS": (iq_grids.KGRID_3BIT_256, 3, 4, "IQ3_XXS", np.uint8),
    "IQ3_S": (iq_grids.KGRID_3BIT_512, 3, 4, "IQ3_S", np.uint8),
}


@lru_cache(maxsize=None)
def value_grid(grid: str) -> np.ndarray:
    """ggml-common.h's decoded grid for ``grid``: (grid_size, 8 or 4) values that dequantization scales."""
    packed, bits, dims, levels, dtype = _VALUE_SPECS[grid]
    values = np.asarray(iq_grids.GRID_LEVELS[levels], dtype=np.int64)
    return values[_unpack_levels(packed, bits, dims)].astype(dtype)


@lru_cache(maxsize=None)
def sign_table() -> np.ndarray:
    """ggml's ksigns_iq2xs: 7 stored sign bits plus an eighth that makes the count of minus signs even."""
    i = np.arange(128, dtype=np.int64)
    parity = np.array([bin(v).count("1") & 1 for v in range(128)], dtype=np.int64)
    return (i | (parity << 7)).astype(np.uint8)

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
from numba import njit

from . import iq_grids
from .iq_parallel import for_row_slices

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


@njit(cache=True, nogil=True, error_model="numpy")
def _neighbour_lists(positions, kmap, nwant, bits, start, stop, offsets, counts, neighbours):
    """For the level vectors ``start..stop`` that are off the grid, their nearest grid points.

    With ``neighbours`` empty, only writes each list's length to ``counts``; otherwise writes
    the list at ``offsets[i]`` (count first). The list holds every grid point at one of the
    ``nwant`` smallest distinct squared distances, in (distance, index) order: the order
    ggml's qsort of (d2, j) pairs gives.
    """
    grid_size, dims = positions.shape
    levels = 1 << bits
    # sq[k, l, j]: squared distance along axis k from level l to grid point j
    sq = np.empty((dims, levels, grid_size), dtype=np.int32)
    for k in range(dims):
        for l in range(levels):
            for j in range(grid_size):
                d = np.int32(positions[j, k]) - np.int32(2 * l + 1)
                sq[k, l, j] = d * d
    max_d2 = dims * (2 * levels - 2) ** 2
    hist = np.empty(max_d2 + 1, dtype=np.int64)
    d2 = np.empty(grid_size, dtype=np.int32)
    fill = neighbours.shape[0] > 0
    for i in range(start, stop):
        if kmap[i] >= 0:
            continue
        d2[:] = 0
        for k in range(dims):
            row = sq[k, (i >> (bits * k)) & (levels - 1)]
            for j in range(grid_size):
                d2[j] += row[j]
        hist[:] = 0
        for j in range(grid_size):
            hist[d2[j]] += 1
        # the nwant-th smallest distinct distance, and where each distance's points go
        n = 0
        have = 0
        limit = 0
        for d in range(max_d2 + 1):
            if hist[d]:
                c = hist[d]
                hist[d] = n
                n += c
                have += 1
                limit = d
                if have == nwant:
                    break
        if not fill:
            counts[i] = n
            continue
        o = offsets[i]
        neighbours[o] = n
        for j in range(grid_size):
            if d2[j] <= limit:
                neighbours[o + 1 + hist[d2[j]]] = j
                hist[d2[j]] += 1


def _search_tables(packed, bits: int, dims: int, kmap_size: int, nwant: int) -> SearchTables:
    levels = _unpack_levels(packed, bits, dims)
    positions = (2 * levels + 1).astype(np.int8)
    kmap = np.full(kmap_size, -1, dtype=np.int32)
    index = (levels << (np.arange(dims) * bits)).sum(axis=1)
    kmap[index] = np.arange(len(packed), dtype=np.int32)
    counts = np.zeros(kmap_size, dtype=np.int64)
    no_lists = np.zeros(0, dtype=np.uint16)
    for_row_slices(
        kmap_size, lambda a, b: _neighbour_lists(positions, kmap, nwant, bits, a, b, counts, counts, no_lists), 4096
    )
    off_grid = kmap < 0
    sizes = np.where(off_grid, counts + 1, 0)
    starts = np.cumsum(sizes) - sizes
    offsets = np.where(off_grid, starts, -1).astype(np.int64)
    neighbours = np.zeros(int(sizes.sum()), dtype=np.uint16)
    for_row_slices(
        kmap_size, lambda a, b: _neighbour_lists(positions, kmap, nwant, bits, a, b, offsets, counts, neighbours), 4096
    )
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

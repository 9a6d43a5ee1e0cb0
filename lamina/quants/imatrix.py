"""Importance matrices as llama-imatrix writes them, turned into per-column weights for quantize.

Two file formats exist (common/imatrix-loader.cpp):

- GGUF (current): for every weight ``W`` a tensor ``W.in_sum2`` with the summed squared
  activations per column (one row per expert) and ``W.counts`` with how many tokens
  each expert saw; metadata ``imatrix.datasets``, ``imatrix.chunk_count``, ``imatrix.chunk_size``.
- legacy ``.dat``: int32 entry count, then per entry its name, call count and values,
  optionally followed by the chunk count and the dataset name.

The weights handed to the quantizer are the sums divided by the counts (float32
division, as llama-quantize does), 1 where an expert saw no tokens.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np

from lamina.gguf import GGUFError, read
from lamina.gguf.constants import GGUF_MAGIC


class ImatrixError(ValueError):
    """An importance-matrix file that cannot be used; the message names the file and the problem."""


@dataclass
class ImportanceMatrix:
    weights: dict[str, np.ndarray]  # tensor name -> float32 weights (n_per_row × n_expert)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    is_legacy: bool = False

    def select(self, include: list[str] | None = None, exclude: list[str] | None = None) -> "ImportanceMatrix":
        """--include-weights / --exclude-weights: keep (or drop) the entries whose name contains a given string."""
        weights = dict(self.weights)
        for needle in exclude or []:
            weights = {k: v for k, v in weights.items() if needle not in k}
        if include:
            weights = {k: v for k, v in weights.items() if any(needle in k for needle in include)}
        return ImportanceMatrix(weights, list(self.datasets), self.chunk_count, self.chunk_size, self.is_legacy)


def read_imatrix(path: str | os.PathLike) -> ImportanceMatrix:
    """Load an importance matrix in either format, checking it as llama-quantize does."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ImatrixError(f"{path}: cannot open importance matrix: {e.strerror or e}") from None
    matrix = _read_gguf(path) if magic == GGUF_MAGIC else _read_legacy(path)
    for name, w in matrix.weights.items():
        if not np.isfinite(w).all():
            bad = w[~np.isfinite(w)][0]
            raise ImatrixError(f"{path}: importance matrix contains non-finite value {bad} (entry {name!r})")
    return matrix


def _read_gguf(path: str) -> ImportanceMatrix:
    try:
        f = read(path)
    except GGUFError as e:
        raise ImatrixError(f"failed to load imatrix: {e}") from None
    with f:
        if not f.tensors:
            raise ImatrixError(f"{path}: no data in importance matrix file")
        has_metadata = all(k in f.fields for k in ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"))
        if not has_metadata:
            raise ImatrixError(f"{path}: missing imatrix metadata (imatrix.datasets, imatrix.chunk_count, "
                               f"imatrix.chunk_size)")
        try:
            datasets = list(f.get_array("imatrix.datasets", [], element="string"))
            chunk_count = int(f.get_int("imatrix.chunk_count", 0))
            chunk_size = int(f.get_int("imatrix.chunk_size", 0))
        except GGUFError as e:
            raise ImatrixError(f"{path}: {e}") from None
        pairs: dict[str, list] = {}
        for t in f:
            for suffix, slot in ((".in_sum2", 0), (".counts", 1)):
                if t.name.endswith(suffix):
                    pairs.setdefault(t.name[: -len(suffix)], [None, None])[slot] = t
        weights = {}
        for name, (sums, counts) in sorted(pairs.items()):
            if sums is None or counts is None:
                raise ImatrixError(f"{path}: mismatched sums and counts for {name}")
            if sums.type != "F32" or counts.type != "F32":
                raise ImatrixError(f"{path}: sums and counts for {name} must be F32 (found {sums.type}, {counts.type})")
            s = np.asarray(sums.data, dtype=np.float32).reshape(-1)
            c = _lround(np.asarray(counts.data, dtype=np.float64).reshape(-1))
            if c.size == 0 or s.size % c.size:
                raise ImatrixError(f"{path}: {name} has {s.size} sums for {c.size} experts")
            per = s.reshape(c.size, -1)
            out = np.ones_like(per)
            seen = c > 0
            out[seen] = per[seen] / c[seen, None].astype(np.float32)
            weights[name] = out.reshape(-1)
    return ImportanceMatrix(weights, datasets, chunk_count, chunk_size, is_legacy=False)


def _lround(a: np.ndarray) -> np.ndarray:
    """std::lround: halves away from zero (exact here: the counts are float32 values held in float64)."""
    return np.where(a >= 0, np.floor(a + 0.5), np.ceil(a - 0.5))


def _read_legacy(path: str) -> ImportanceMatrix:
    with open(path, "rb") as f:
        data = f.read()
    pos = 0

    def take(fmt: str, what: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise ImatrixError(f"{path}: not a GGUF file and truncated as a legacy imatrix (reading {what} "
                               f"at byte {pos})")
        values = struct.unpack_from(fmt, data, pos)
        pos += size
        return values

    (n_entries,) = take("<i", "the entry count")
    if n_entries < 1:
        raise ImatrixError(f"{path}: no data in importance matrix file (or not an imatrix file at all)")
    if n_entries > len(data) // 12:
        raise ImatrixError(f"{path}: claims {n_entries} entries in {len(data)} bytes: not an imatrix file")
    weights = {}
    for i in range(n_entries):
        (length,) = take("<i", f"the name length of entry {i + 1}")
        if length < 0 or pos + length > len(data):
            raise ImatrixError(f"{path}: failed reading name for entry {i + 1}")
        name = data[pos:pos + length].split(b"\0", 1)[0].decode("utf-8", "replace")
        pos += length
        ncall, nval = take("<ii", f"the sizes of entry {i + 1}")
        if nval < 1 or pos + 4 * nval > len(data):
            raise ImatrixError(f"{path}: failed reading number of values for entry {i + 1}")
        sums = np.frombuffer(data, dtype="<f4", count=nval, offset=pos).astype(np.float32)
        pos += 4 * nval
        weights[name] = sums / np.float32(ncall) if ncall > 0 else sums.copy()
    chunk_count, datasets = 0, []
    if pos + 4 <= len(data):
        (chunk_count,) = struct.unpack_from("<i", data, pos)
        pos += 4
        if pos + 4 <= len(data):
            (length,) = struct.unpack_from("<i", data, pos)
            pos += 4
            if 0 < length and pos + length <= len(data):
                datasets.append(data[pos:pos + length].split(b"\0", 1)[0].decode("utf-8", "replace"))
    return ImportanceMatrix(weights, datasets, chunk_count, 0, is_legacy=True)

"""The key/value cache: float16 keys and values for every layer and sequence.

Each sequence owns a stream of ``n_ctx_seq`` cells and the cell index is the
token's position, so a sequence's keys are one contiguous block per head and
attention needs no cross-sequence masking. Several sequences can be decoded in
one batch (the server's concurrent requests), each in its own stream.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np


class ContextFullError(RuntimeError):
    """A sequence would grow past the context size."""


class KVCacheMemoryError(MemoryError):
    """The cache would not fit in memory; raised before anything is allocated."""


@dataclass(frozen=True)
class LayerKVShape:
    n_kv_head: int
    head_dim_k: int
    head_dim_v: int


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@contextlib.contextmanager
def _small_pages():
    """Allocate without NumPy's transparent-huge-page hint: the cache is filled a position at a time
    from the start of every head's block, and 2 MiB pages would make an unused long context cost
    memory up front. (Lazily zeroed 4 KiB pages cost only what is written.)"""
    core = getattr(np, "_core", None) or np.core  # NumPy 2 / 1.26
    set_hint = getattr(core.multiarray, "_set_madvise_hugepage", None)
    if set_hint is None:
        yield
        return
    previous = set_hint(False)
    try:
        yield
    finally:
        set_hint(previous)


class KVCache:
    """Per layer: ``k[layer]`` of shape (n_seq, n_kv_head, n_ctx_seq, head_dim_k), ``v[layer]`` likewise, float16."""

    def __init__(self, shapes: list[LayerKVShape], n_ctx_seq: int, n_seq: int = 1, dtype=np.float16):
        if n_ctx_seq < 1 or n_seq < 1:
            raise ValueError(f"KV cache needs at least one cell and one sequence (got n_ctx_seq={n_ctx_seq}, n_seq={n_seq})")
        self.dtype = np.dtype(dtype)
        need = self.bytes_needed(shapes, n_ctx_seq, n_seq, self.dtype)
        available = _available_memory()
        if available is not None and need > available:
            raise KVCacheMemoryError(
                f"the KV cache for {n_seq} x {n_ctx_seq} tokens needs {need / 2**20:.0f} MiB but only "
                f"{available / 2**20:.0f} MiB of memory is available; use a smaller context (-c)")
        self.shapes = shapes
        self.n_ctx_seq = n_ctx_seq
        self.n_seq = n_seq
        with _small_pages():
            self.k = [np.zeros((n_seq, s.n_kv_head, n_ctx_seq, s.head_dim_k), self.dtype) for s in shapes]
            self.v = [np.zeros((n_seq, s.n_kv_head, n_ctx_seq, s.head_dim_v), self.dtype) for s in shapes]
        self.seq_len = np.zeros(n_seq, dtype=np.int64)  # positions [0, seq_len) hold valid cells

    @staticmethod
    def bytes_needed(shapes: list[LayerKVShape], n_ctx_seq: int, n_seq: int, dtype=np.float16) -> int:
        per_token = sum(s.n_kv_head * (s.head_dim_k + s.head_dim_v) for s in shapes)
        return per_token * n_ctx_seq * n_seq * np.dtype(dtype).itemsize

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.k) + sum(a.nbytes for a in self.v)

    def check_room(self, seq: int, positions: np.ndarray) -> None:
        """Refuse positions that do not continue the sequence or do not fit its stream."""
        if not 0 <= seq < self.n_seq:
            raise ValueError(f"sequence id {seq} is outside 0..{self.n_seq - 1}")
        if len(positions) == 0:
            return
        first, last = int(positions[0]), int(positions[-1])
        if first > self.seq_len[seq] or np.any(np.diff(positions) != 1):
            raise ValueError(f"sequence {seq}: positions must continue the cached {int(self.seq_len[seq])} tokens "
                             f"consecutively, got {first}..{last}")
        if last >= self.n_ctx_seq:
            raise ContextFullError(f"sequence {seq} needs {last + 1} positions but the context holds {self.n_ctx_seq}")

    def store(self, layer: int, seq: int, positions: np.ndarray, k: np.ndarray, v: np.ndarray) -> None:
        """Write keys/values (tokens, n_kv_head, head_dim) at ``positions`` (consecutive)."""
        p0, p1 = int(positions[0]), int(positions[-1]) + 1
        self.k[layer][seq, :, p0:p1] = k.transpose(1, 0, 2)
        self.v[layer][seq, :, p0:p1] = v.transpose(1, 0, 2)

    def store_rows(self, layer: int, seqs: np.ndarray, positions: np.ndarray, k: np.ndarray, v: np.ndarray) -> None:
        """Write one token's keys/values per row, row ``i`` to sequence ``seqs[i]`` at ``positions[i]``."""
        self.k[layer][seqs, :, positions] = k
        self.v[layer][seqs, :, positions] = v

    def commit(self, seq: int, positions: np.ndarray) -> None:
        """Mark the cells of ``positions`` valid (after every layer has stored them)."""
        if len(positions):
            self.seq_len[seq] = int(positions[-1]) + 1

    def keys(self, layer: int, seq: int, n: int) -> np.ndarray:
        return self.k[layer][seq, :, :n]

    def values(self, layer: int, seq: int, n: int) -> np.ndarray:
        return self.v[layer][seq, :, :n]

    def export_seq(self, seq: int, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Copies of the first ``n`` cells' keys and values of sequence ``seq``, per layer (for saving)."""
        return [k[seq, :, :n].copy() for k in self.k], [v[seq, :, :n].copy() for v in self.v]

    def import_seq(self, seq: int, keys: list[np.ndarray], values: list[np.ndarray], what: str = "saved state") -> None:
        """Put saved keys and values (``export_seq``'s) into sequence ``seq`` as its valid cells.

        Raises ValueError naming ``what``, before anything is written, if they do not fit this cache."""
        if len(keys) != len(self.k) or len(values) != len(self.v):
            raise ValueError(f"the {what} has {len(keys)} layers but this model has {len(self.k)}")
        n = keys[0].shape[1] if keys else 0
        if n > self.n_ctx_seq:
            raise ValueError(f"the {what} holds {n} tokens but a sequence here holds {self.n_ctx_seq}")
        for layer, (k, v) in enumerate(zip(keys, values)):
            if k.shape != self.k[layer][seq, :, :n].shape or v.shape != self.v[layer][seq, :, :n].shape:
                raise ValueError(f"the {what}'s layer {layer} has keys {k.shape} / values {v.shape}, which do "
                                 "not fit this model's cache: was it saved from another model?")
        for layer, (k, v) in enumerate(zip(keys, values)):
            self.k[layer][seq, :, :n] = k
            self.v[layer][seq, :, :n] = v
        self.seq_len[seq] = n

    def truncate(self, seq: int, n_keep: int) -> None:
        """Forget positions ``n_keep`` and later (llama_memory_seq_rm from n_keep)."""
        self.seq_len[seq] = min(int(self.seq_len[seq]), max(0, int(n_keep)))

    def clear(self) -> None:
        self.seq_len[:] = 0

    def shift(self, seq: int, n_keep: int, n_discard: int, rerope) -> None:
        """Drop positions [n_keep, n_keep + n_discard) and move the rest down (context shifting).

        ``rerope(layer, keys, delta)`` re-rotates the moved keys by ``delta`` positions, since
        their rotary phase encodes the old positions.
        """
        n = int(self.seq_len[seq])
        if n_discard <= 0 or n_keep + n_discard > n:
            raise ValueError(f"cannot discard {n_discard} tokens after {n_keep} from a sequence of {n}")
        src0, count = n_keep + n_discard, n - n_keep - n_discard
        for layer in range(len(self.shapes)):
            for cache in (self.k[layer], self.v[layer]):
                cache[seq, :, n_keep:n_keep + count] = cache[seq, :, src0:n].copy()
            moved = self.k[layer][seq, :, n_keep:n_keep + count]
            moved[...] = rerope(layer, moved.astype(np.float32), np.arange(n_keep, n_keep + count), -n_discard)
        self.seq_len[seq] = n - n_discard

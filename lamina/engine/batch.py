"""A batch of tokens to decode, and the per-pass state the model reads while running it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from lamina.kernels.attention import TILE as ATTENTION_TILE
from lamina.kernels.attention import attention, attention_one_query_each, rope_store_attend
from lamina.kernels.linear import rows_alone

from .kv_cache import KVCache


@dataclass
class Batch:
    """Tokens to evaluate, like ``llama_batch``: each with a position, a sequence id and
    whether its logits are wanted."""

    tokens: np.ndarray
    positions: np.ndarray
    seq_ids: np.ndarray
    output: np.ndarray

    @classmethod
    def for_sequence(cls, tokens, start_pos: int, seq_id: int = 0, logits_all: bool = False) -> "Batch":
        tokens = np.asarray(tokens, dtype=np.int32)
        n = len(tokens)
        output = np.ones(n, dtype=bool) if logits_all else np.arange(n) == n - 1
        return cls(tokens, np.arange(start_pos, start_pos + n, dtype=np.int32),
                   np.full(n, seq_id, dtype=np.int32), output)

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class SequenceRows:
    seq: int
    rows: np.ndarray  # indices into the batch
    positions: np.ndarray


@dataclass
class ForwardState:
    """What a model's layers need from the engine during one forward pass.

    Models call :meth:`rope` and :meth:`attend`; which sequence each row belongs to and
    where its keys live stays the engine's business.
    """

    positions: np.ndarray
    groups: list[SequenceRows]
    kv: KVCache
    seq_ids: np.ndarray
    _rope_tables: dict = field(default_factory=dict)

    @classmethod
    def for_batch(cls, batch: Batch, kv: KVCache) -> "ForwardState":
        groups = []
        for seq in np.unique(batch.seq_ids):
            rows = np.flatnonzero(batch.seq_ids == seq)
            groups.append(SequenceRows(int(seq), rows, batch.positions[rows].astype(np.int64)))
        return cls(batch.positions.astype(np.int64), groups, kv, batch.seq_ids.astype(np.int64))

    @property
    def one_row_per_sequence(self) -> bool:
        return len(self.groups) > 1 and len(self.groups) == len(self.positions)

    def rope(self, cfg, x: np.ndarray) -> np.ndarray:
        """Apply rotary embedding ``cfg`` at this batch's positions to x (tokens, heads, head_dim), in place."""
        from lamina.models.layers import apply_rope

        return apply_rope(x, *self._cos_sin(cfg), cfg.n_rot, cfg.neox)

    def _cos_sin(self, cfg) -> tuple:
        tables = self._rope_tables.get(id(cfg))
        if tables is None:
            tables = self._rope_tables[id(cfg)] = (cfg, *cfg.cos_sin(self.positions))
        return tables[1], tables[2]

    def rope_and_attend(self, layer: int, cfg, q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float,
                        window: int = 0, softcap: float = 0.0, q_scale: float = 1.0) -> np.ndarray:
        """Rotary embedding ``cfg`` on q and k, q times ``q_scale``, then :meth:`attend`; one compiled
        call when the batch is a few tokens of one sequence (every generation step of a single
        conversation), where the separate steps' Python overhead outweighed their arithmetic."""
        if len(self.groups) == 1 and len(self.positions) < ATTENTION_TILE:
            g = self.groups[0]
            cos, sin = self._cos_sin(cfg)
            return rope_store_attend(q, k, v, cos, sin, cfg.n_rot, cfg.neox, self.kv.k[layer][g.seq],
                                     self.kv.v[layer][g.seq], g.positions, scale, window, softcap, q_scale,
                                     n_threads=numba.get_num_threads())
        self.rope(cfg, q)
        self.rope(cfg, k)
        if q_scale != 1.0:
            q *= np.float32(q_scale)
        return self.attend(layer, q, k, v, scale, window, softcap)

    def attend(self, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float,
               window: int = 0, softcap: float = 0.0) -> np.ndarray:
        """Store this batch's k/v for ``layer`` and attend each sequence's queries over its cache."""
        # ggml picks its kernel by the whole micro-batch's size; rows computed alone (see
        # lamina.kernels.rows_computed_alone) get the kernel of their own sequence's rows
        tiled = len(self.positions) >= ATTENTION_TILE
        alone = rows_alone()
        n_threads = numba.get_num_threads()
        if len(self.groups) == 1:  # one sequence (every CLI batch): no gathering of its rows
            g = self.groups[0]
            self.kv.store(layer, g.seq, g.positions, k, v)
            return attention(q, self.kv.k[layer][g.seq], self.kv.v[layer][g.seq], g.positions, scale, window,
                             softcap, tiled=tiled, n_threads=n_threads)
        if self.one_row_per_sequence and (alone or not tiled):  # a decode step: every sequence in one launch
            self.kv.store_rows(layer, self.seq_ids, self.positions, k, v)
            return attention_one_query_each(q, self.kv.k[layer], self.kv.v[layer], self.seq_ids, self.positions,
                                            scale, window, softcap, n_threads=n_threads)
        out = np.empty((q.shape[0], q.shape[1] * v.shape[2]), dtype=np.float32)
        for g in self.groups:
            self.kv.store(layer, g.seq, g.positions, k[g.rows], v[g.rows])
            out[g.rows] = attention(q[g.rows], self.kv.k[layer][g.seq], self.kv.v[layer][g.seq], g.positions,
                                    scale, window, softcap, tiled=len(g.rows) >= ATTENTION_TILE if alone else tiled,
                                    n_threads=n_threads)
        return out

"""An inference context: a model, its KV cache, and batched decoding of one or more sequences."""

from __future__ import annotations

import numpy as np

from .batch import Batch, ForwardState
from .kv_cache import ContextFullError, KVCache


class InvalidTokenError(ValueError):
    """A token id outside the model's vocabulary was given for evaluation."""


class Context:
    """Evaluates batches of tokens against a KV cache of ``n_ctx`` cells.

    With ``n_seq_max`` > 1 the cells are split evenly between that many independent
    sequences (as llama.cpp does for a server's parallel slots); a batch may mix tokens
    of several sequences. Batches are split into micro-batches of ``n_ubatch`` tokens.
    """

    def __init__(self, model, n_ctx: int, n_batch: int = 512, n_ubatch: int = 512, n_seq_max: int = 1):
        if n_ctx < 1:
            raise ValueError(f"n_ctx must be positive, got {n_ctx}")
        if n_seq_max < 1 or n_ctx // n_seq_max < 1:
            raise ValueError(f"cannot split a context of {n_ctx} into {n_seq_max} sequences")
        self.model = model
        self.n_ctx = n_ctx
        self.n_batch = max(1, n_batch)
        self.n_ubatch = max(1, min(n_ubatch, self.n_batch))
        self.n_seq_max = n_seq_max
        self.kv = KVCache(model.kv_shapes(), n_ctx // n_seq_max, n_seq_max)

    @property
    def n_ctx_seq(self) -> int:
        return self.kv.n_ctx_seq

    def seq_len(self, seq: int = 0) -> int:
        return int(self.kv.seq_len[seq])

    def decode(self, batch: Batch, embeddings: bool = False) -> np.ndarray:
        """Evaluate ``batch``; return the logits (n_outputs, n_vocab) of the rows whose ``output`` is set
        (with ``embeddings``, their final hidden states, (n_outputs, n_embd), instead).

        The whole batch is checked before anything runs: an invalid token or a sequence
        that would overflow its context raises without touching the cache.
        """
        n = len(batch)
        if n == 0:
            return np.zeros((0, self.model.n_vocab), dtype=np.float32)
        bad = (batch.tokens < 0) | (batch.tokens >= self.model.n_vocab)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidTokenError(f"token id {int(batch.tokens[i])} at batch index {i} is outside the vocabulary "
                                    f"(0..{self.model.n_vocab - 1})")
        for seq in np.unique(batch.seq_ids):
            rows = batch.seq_ids == seq
            positions = batch.positions[rows]
            if len(positions) and positions[-1] >= self.kv.n_ctx_seq:
                raise ContextFullError(
                    f"sequence {int(seq)} would reach {int(positions[-1]) + 1} tokens but the context holds "
                    f"{self.kv.n_ctx_seq} per sequence (n_ctx {self.n_ctx}); use a larger context (-c)")
            self.kv.check_room(int(seq), positions)
        outputs = []
        for start in range(0, n, self.n_ubatch):
            part = slice(start, min(n, start + self.n_ubatch))
            ub = Batch(batch.tokens[part], batch.positions[part], batch.seq_ids[part], batch.output[part])
            state = ForwardState.for_batch(ub, self.kv)
            out_rows = np.flatnonzero(ub.output)
            run = self.model.hidden if embeddings else self.model.forward
            logits = run(ub.tokens, state, out_rows)
            for g in state.groups:
                self.kv.commit(g.seq, g.positions)
            if len(out_rows):
                outputs.append(logits)
        if not outputs:
            return np.zeros((0, self.model.n_embd if embeddings else self.model.n_vocab), dtype=np.float32)
        return np.concatenate(outputs) if len(outputs) > 1 else outputs[0]

    def truncate(self, seq: int, n_keep: int) -> None:
        """Forget sequence ``seq`` from position ``n_keep`` on."""
        self.kv.truncate(seq, n_keep)

    def clear(self) -> None:
        self.kv.clear()

    def shift(self, seq: int, n_keep: int, n_discard: int) -> None:
        """Context shifting: drop ``n_discard`` tokens after the first ``n_keep`` and slide the rest down."""
        self.kv.shift(seq, n_keep, n_discard, self.model.rerope)

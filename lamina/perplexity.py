"""Perplexity exactly as llama-perplexity computes it.

The text is tokenized once (BOS added if the model adds one) and cut into chunks of
``n_ctx`` tokens; each chunk is evaluated from an empty cache with its first token
replaced by BOS when the model uses one, and only the second half of each chunk is
scored, so every scored token has at least ``n_ctx / 2`` tokens of context. Several
chunks run side by side as separate sequences when the batch allows (``n_batch /
n_ctx`` of them, as llama-perplexity does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lamina.engine.batch import Batch


class PerplexityError(ValueError):
    """The text is too short for the context size, or the settings are inconsistent."""


@dataclass
class PerplexityResult:
    ppl: float
    uncertainty: float
    n_chunks: int
    n_scored: int
    chunk_ppl: list[float] = field(default_factory=list)  # running estimate after each chunk


def chunk_log_probs(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log softmax(logits[i])[targets[i]] in double precision, as llama-perplexity's log_softmax."""
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - m).sum(axis=1)) + m[:, 0]
    return x[np.arange(len(targets)), targets] - lse


@dataclass
class ScoredChunk:
    """The logits of one chunk's scored positions and the tokens they predict."""
    index: int            # chunk number, from 0
    logits: np.ndarray    # (n_ctx - 1 - n_ctx // 2, n_vocab) float32
    targets: np.ndarray   # (n_ctx - 1 - n_ctx // 2,) int32: the token each logits row predicts


def evaluate_chunks(ctx, tokens: np.ndarray, n_ctx: int, bos: int | None, n_chunk: int):
    """Yield a ScoredChunk for each of the first ``n_chunk`` chunks of ``tokens``, in order.

    This is llama-perplexity's evaluation loop, shared by perplexity and KL-divergence so
    both score exactly the same positions: each chunk starts from an empty cache with its
    first token replaced by BOS (when the model uses one), ``ctx.n_batch // n_ctx`` chunks
    run side by side as separate sequences, and only positions ``n_ctx // 2`` onward are
    output; the last of them predicts nothing inside the chunk, so it is dropped. The
    yielded logits may be views into the engine's buffers: use them before asking for
    the next chunk.
    """
    tokens = np.asarray(tokens, dtype=np.int32)
    if ctx.n_ctx_seq < n_ctx:
        raise PerplexityError(f"the engine's sequences hold {ctx.n_ctx_seq} tokens, fewer than the context {n_ctx}")
    if len(tokens) < n_chunk * n_ctx:
        raise PerplexityError(f"{n_chunk} chunks of {n_ctx} tokens need {n_chunk * n_ctx} tokens; "
                              f"only {len(tokens)} were given")
    first = n_ctx // 2
    per_seq = n_ctx - first
    n_seq = max(1, min(ctx.n_seq_max, ctx.n_batch // n_ctx))
    for i in range(0, n_chunk, n_seq):
        seqs = range(min(n_seq, n_chunk - i))
        ctx.clear()
        parts = []
        for s in seqs:
            chunk = tokens[(i + s) * n_ctx:(i + s + 1) * n_ctx].copy()
            if bos is not None:
                chunk[0] = bos
            parts.append(Batch(chunk, np.arange(n_ctx, dtype=np.int32), np.full(n_ctx, s, dtype=np.int32),
                               np.arange(n_ctx) >= first))
        batch = Batch(*(np.concatenate([getattr(p, f) for p in parts])
                        for f in ("tokens", "positions", "seq_ids", "output")))
        logits = ctx.decode(batch)
        for k, s in enumerate(seqs):
            start = (i + s) * n_ctx
            yield ScoredChunk(i + s, logits[k * per_seq:(k + 1) * per_seq - 1],
                              tokens[start + first + 1:start + n_ctx])


def chunk_count(n_tokens: int, n_ctx: int, n_chunks: int = -1) -> int:
    """How many chunks llama-perplexity evaluates: all whole ones, or at most ``n_chunks`` when that is >= 0."""
    n_chunk_max = n_tokens // n_ctx
    return n_chunk_max if n_chunks < 0 else min(n_chunks, n_chunk_max)


def check_enough_tokens(n_tokens: int, n_ctx: int) -> None:
    if n_tokens < 2 * n_ctx:
        raise PerplexityError(f"you need at least {2 * n_ctx} tokens to evaluate perplexity with a context of "
                              f"{n_ctx}; the text tokenizes to only {n_tokens}")


def perplexity(ctx, tokens: list[int], n_ctx: int, bos: int | None, n_chunks: int = -1,
               progress: Callable[[int, float], None] | None = None,
               on_chunk: Callable[[ScoredChunk], None] | None = None) -> PerplexityResult:
    """Perplexity of ``tokens`` with the engine context ``ctx`` (whose sequences hold ``n_ctx`` each).

    ``on_chunk`` sees every scored chunk before it is summed (the KL-divergence base pass
    saves the base model's log-probabilities through it).
    """
    tokens = np.asarray(tokens, dtype=np.int32)
    check_enough_tokens(len(tokens), n_ctx)
    n_chunk = chunk_count(len(tokens), n_ctx, n_chunks)
    if n_chunk == 0:
        raise PerplexityError("no chunks to evaluate (the chunk limit is 0)")
    nll = nll2 = 0.0
    count = 0
    running = []
    for chunk in evaluate_chunks(ctx, tokens, n_ctx, bos, n_chunk):
        if on_chunk is not None:
            on_chunk(chunk)
        lp = chunk_log_probs(chunk.logits, chunk.targets)
        nll -= float(lp.sum())
        nll2 += float((lp * lp).sum())
        count += len(lp)
        running.append(math.exp(nll / count))
        if progress is not None:
            progress(chunk.index + 1, running[-1])
    mean = nll / count
    var = nll2 / count - mean * mean
    ppl = math.exp(mean)
    uncertainty = math.sqrt(var / (count - 1)) * ppl if var > 0 else float("nan")
    return PerplexityResult(ppl, uncertainty, n_chunk, count, running)

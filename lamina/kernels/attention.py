"""Causal grouped-query attention over one sequence's cached keys and values."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .common import F32, FAST
from .elementwise import f2h_round, h2f

# Bound on the float32 score matrix of one call; longer query batches are processed in slices.
MAX_SCORE_BYTES = 64 << 20


def attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, q_pos: np.ndarray,
              scale: float, window: int = 0, softcap: float = 0.0) -> np.ndarray:
    """softmax(q·Kᵀ·scale + mask)·V for queries ``q`` (tokens, n_head, head_dim_k).

    ``keys``/``values`` are (n_kv_head, n_cells, head_dim) with the cell index equal to the
    position; query head ``h`` reads key/value head ``h // (n_head // n_kv_head)``, as ggml
    broadcasts. A key is visible when its position is at most the query's and, with a
    sliding ``window``, less than ``window`` positions behind it. Returns (tokens, n_head * head_dim_v).

    The queries and the probabilities are rounded to float16 where ggml's attention rounds
    them (it multiplies f16 caches by f16 operands), which keeps the logits near llama.cpp's.
    """
    n_tok, n_head, head_dim = q.shape
    n_kv_head, n_cells, head_dim_v = values.shape
    group = n_head // n_kv_head
    # The visible keys of this slice of queries start at most ``window`` behind the first query.
    first = 0
    if window:
        first = max(0, int(q_pos.min()) - window + 1)
    k = keys[:, first:].astype(np.float32)
    v = values[:, first:].astype(np.float32)
    per_query = 4 * n_head * (n_cells - first)
    step = max(1, MAX_SCORE_BYTES // max(1, per_query))
    if n_tok > step:
        return np.concatenate([attention(q[i:i + step], keys, values, q_pos[i:i + step], scale, window, softcap)
                               for i in range(0, n_tok, step)])
    key_pos = np.arange(first, n_cells)
    hidden = key_pos[None, :] > q_pos[:, None]
    if window:
        hidden |= (q_pos[:, None] - key_pos[None, :]) >= window
    # (n_kv_head, tokens * group, head_dim): rows ordered (token, head within the group)
    # ggml multiplies the f16 key cache by the queries rounded to f16 ...
    q = q.astype(np.float16).astype(np.float32)
    qh = q.reshape(n_tok, n_kv_head, group, head_dim).transpose(1, 0, 2, 3).reshape(n_kv_head, n_tok * group, head_dim)
    scores = np.matmul(qh, k.transpose(0, 2, 1))
    scores *= np.float32(scale)
    if softcap:
        np.tanh(scores / softcap, out=scores)
        scores *= np.float32(softcap)
    scores = scores.reshape(n_kv_head, n_tok, group, -1)
    if hidden.any():
        scores += np.where(hidden, np.float32(-np.inf), np.float32(0.0))[None, :, None, :]
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    # ... and the f16 value cache by the probabilities rounded to f16.
    scores = scores.astype(np.float16).astype(np.float32)
    out = np.matmul(scores.reshape(n_kv_head, n_tok * group, -1), v)
    return out.reshape(n_kv_head, n_tok, group, head_dim_v).transpose(1, 0, 2, 3).reshape(n_tok, n_head * head_dim_v)


@njit(cache=True, parallel=True, fastmath=FAST, error_model="numpy")
def _attend_one(q, key_bits, value_bits, pos, scale, window, softcap, out):
    """One query token against a float16 cache (given as its bits): the same arithmetic as
    :func:`attention`, compiled, for generation where a step attends once per layer."""
    n_head, head_dim = q.shape
    n_kv_head, _, head_dim_v = value_bits.shape
    group = n_head // n_kv_head
    first = max(0, pos - window + 1) if window > 0 else 0
    n = pos + 1 - first
    for h in prange(n_head):
        kh = h // group
        qh = np.empty(head_dim, F32)
        for d in range(head_dim):
            qh[d] = f2h_round(q[h, d])
        scores = np.empty(n, F32)
        best = F32(-np.inf)
        for j in range(n):
            s = F32(0.0)
            for d in range(head_dim):
                s += qh[d] * h2f(key_bits[kh, first + j, d])
            s *= F32(scale)
            if softcap > 0:
                s = np.tanh(s / F32(softcap)) * F32(softcap)
            scores[j] = s
            if s > best:
                best = s
        total = F32(0.0)
        for j in range(n):
            scores[j] = np.exp(scores[j] - best)
            total += scores[j]
        acc = np.zeros(head_dim_v, F32)
        for j in range(n):
            p = f2h_round(scores[j] / total)
            for d in range(head_dim_v):
                acc[d] += p * h2f(value_bits[kh, first + j, d])
        for d in range(head_dim_v):
            out[h * head_dim_v + d] = acc[d]


def attend_one(q: np.ndarray, keys: np.ndarray, values: np.ndarray, pos: int, scale: float,
               window: int = 0, softcap: float = 0.0) -> np.ndarray:
    """Attention of the single query ``q`` (n_head, head_dim) at position ``pos`` over float16
    ``keys``/``values`` (n_kv_head, n_cells >= pos + 1, head_dim); returns (1, n_head * head_dim_v)."""
    out = np.empty((1, q.shape[0] * values.shape[2]), np.float32)
    _attend_one(np.ascontiguousarray(q, dtype=np.float32), keys.view(np.uint16), values.view(np.uint16),
                int(pos), float(scale), int(window), float(softcap), out[0])
    return out

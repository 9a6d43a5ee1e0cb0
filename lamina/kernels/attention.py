"""Causal grouped-query attention over one sequence's cached keys and values."""

from __future__ import annotations

import numpy as np


def attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, q_pos: np.ndarray,
              scale: float, window: int = 0, softcap: float = 0.0) -> np.ndarray:
    """softmax(q·Kᵀ·scale + mask)·V for queries ``q`` (tokens, n_head, head_dim_k).

    ``keys``/``values`` are (n_kv_head, n_cells, head_dim) with the cell index equal to the
    position; query head ``h`` reads key/value head ``h // (n_head // n_kv_head)``, as ggml
    broadcasts. A key is visible when its position is at most the query's and, with a
    sliding ``window``, less than ``window`` positions behind it. Returns (tokens, n_head * head_dim_v).
    """
    n_tok, n_head, _ = q.shape
    n_kv_head, n_cells, head_dim_v = values.shape
    group = n_head // n_kv_head
    key_pos = np.arange(n_cells)
    visible = key_pos[None, :] <= q_pos[:, None]
    if window:
        visible &= (q_pos[:, None] - key_pos[None, :]) < window
    bias = np.where(visible, np.float32(0.0), np.float32(-np.inf))
    out = np.empty((n_tok, n_head, head_dim_v), dtype=np.float32)
    for h in range(n_kv_head):
        k = keys[h].astype(np.float32)
        v = values[h].astype(np.float32)
        qh = q[:, h * group:(h + 1) * group, :]
        scores = np.einsum("tgd,kd->tgk", qh, k, optimize=True) * np.float32(scale)
        if softcap:
            scores = np.tanh(scores / softcap) * softcap
        scores += bias[:, None, :]
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        out[:, h * group:(h + 1) * group, :] = np.einsum("tgk,kd->tgd", scores, v, optimize=True)
    return out.reshape(n_tok, n_head * head_dim_v)

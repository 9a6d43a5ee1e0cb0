"""Embeddings from a model's final hidden states, pooled as llama.cpp pools them.

llama.cpp's pooling types (``llama.h``): NONE (one vector per token), MEAN (the average over the
input's tokens), CLS (the first token's), LAST (the last token's), RANK (a reranker's score, which
needs a classification head). A model's default is its GGUF ``<arch>.pooling_type``, else NONE,
as llama.cpp reads it. Vectors are the hidden states after the output norm, in float32; with
``normalize`` they are scaled to unit length (L2), as llama-cpp-python's ``embed(normalize=True)``.

Decoder models (llama, qwen2, qwen3, gemma3 ...) embed with their own causal attention, as
llama.cpp does; encoder-only families (bert, nomic-bert, jina-bert-v2) are not built yet.
"""

from __future__ import annotations

import numpy as np

POOLING_UNSPECIFIED, POOLING_NONE, POOLING_MEAN, POOLING_CLS, POOLING_LAST, POOLING_RANK = -1, 0, 1, 2, 3, 4
POOLING_NAMES = {"none": POOLING_NONE, "mean": POOLING_MEAN, "cls": POOLING_CLS, "last": POOLING_LAST,
                 "rank": POOLING_RANK}


def pooling_of(value, gguf_file, arch: str) -> int:
    """The pooling type to use: the one asked for (number or name), else the file's, else NONE."""
    if isinstance(value, str):
        if value not in POOLING_NAMES:
            raise ValueError(f"pooling_type {value!r} is not one of {', '.join(POOLING_NAMES)}")
        value = POOLING_NAMES[value]
    if value is None or value == POOLING_UNSPECIFIED:
        value = gguf_file.get_int(f"{arch}.pooling_type", POOLING_NONE)
    if value not in POOLING_NAMES.values():
        raise ValueError(f"pooling_type {value!r} is not one of -1 (the model's), 0 none, 1 mean, 2 cls, 3 last, "
                         "4 rank")
    if value == POOLING_RANK:
        raise ValueError("pooling_type rank needs a reranker's classification head, which lamina does not load yet")
    return value


def pool(hidden: np.ndarray, pooling: int) -> np.ndarray:
    """``hidden`` (n_tokens, n_embd) to one vector (or, for NONE, the rows themselves)."""
    if pooling == POOLING_NONE:
        return hidden
    if pooling == POOLING_MEAN:
        return hidden.astype(np.float32).mean(axis=0, dtype=np.float32)
    if pooling == POOLING_CLS:
        return hidden[0]
    if pooling == POOLING_LAST:
        return hidden[-1]
    raise ValueError(f"unknown pooling type {pooling}")


def normalized(v: np.ndarray) -> np.ndarray:
    """Each vector scaled to unit length (L2); a zero vector stays zero."""
    v = np.asarray(v, np.float32)
    norms = np.linalg.norm(v.astype(np.float64), axis=-1, keepdims=True)
    return np.where(norms > 0, v / np.where(norms > 0, norms, 1.0), v).astype(np.float32)


def normalize_like_llama_cpp(v: np.ndarray, mode: int) -> np.ndarray:
    """llama.cpp's ``common_embd_normalize``: -1 none, 0 max-abs scaled to int16's range,
    2 euclidean, any other p: the p-norm (1: taxicab). Sums in double, as llama.cpp does."""
    x = np.asarray(v, np.float32)
    ax = np.abs(x.astype(np.float64))
    if mode == -1:
        total = 1.0
    elif mode == 0:
        total = float(ax.max(initial=0.0)) / 32760.0
    elif mode == 2:
        total = float(np.sqrt(np.sum(ax * ax)))
    else:
        total = float(np.sum(ax ** mode) ** (1.0 / mode))
    norm = np.float32(1.0 / total) if total > 0.0 else np.float32(0.0)
    return (x * norm).astype(np.float32)


def cosine(a, b) -> float:
    """llama.cpp's ``common_embd_similarity_cos`` (1 for two zero vectors, 0 for one)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na, nb = float(np.sum(a * a)), float(np.sum(b * b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == 0.0 and nb == 0.0 else 0.0
    return float(np.float32(np.sum(a * b) / (np.sqrt(na) * np.sqrt(nb))))

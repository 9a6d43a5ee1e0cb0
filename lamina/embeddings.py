"""Embeddings from a model's final hidden states, pooled as llama.cpp pools them.

llama.cpp's pooling types (``llama.h``): NONE (one vector per token), MEAN (the average over the
input's tokens), CLS (the first token's), LAST (the last token's), RANK (a reranker's score, which
needs a classification head). A model's default is its GGUF ``<arch>.pooling_type``, else NONE,
as llama.cpp reads it. Vectors are the hidden states after the output norm, in float32; with
``normalize`` they are scaled to unit length (L2), as llama-cpp-python's ``embed(normalize=True)``.

Decoder models (llama, qwen2, qwen3, gemma3 ...) embed with their own causal attention, as
llama.cpp does; encoder models (bert, nomic-bert, jina-bert-v2: ``lamina.models.bert``) see the whole
input of their sequence.
Mean pooling is llama.cpp's matrix product of the hidden states' transpose with the mean matrix
(``1/n`` on each sequence's tokens), computed in ggml's order, so it is its vectors bit for bit.
RANK pooling gives a reranker's scores (its classification head on the first token).
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
    return value


def check_pooling(pooling: int, model) -> None:
    """A pooling the model can give: RANK needs a classification head."""
    if pooling == POOLING_RANK and not getattr(model, "has_rank_head", False):
        raise ValueError("pooling_type rank needs a reranker's classification head (cls.weight / cls.output.weight), "
                         "which this model does not have")


def pool(hidden: np.ndarray, pooling: int, model=None) -> np.ndarray:
    """``hidden`` (n_tokens, n_embd) of one sequence to one vector (or, for NONE, the rows themselves)."""
    return pool_sequences(hidden, [np.arange(hidden.shape[0])], pooling, model)[0]


def pool_sequences(hidden: np.ndarray, sequences: list[np.ndarray], pooling: int, model=None) -> list[np.ndarray]:
    """Each sequence's pooled vector, from the hidden states of the batch that held them all
    (``sequences``: each one's row indices, in order). RANK asks ``model.rank`` for the scores."""
    if pooling == POOLING_NONE:
        return [hidden[rows] for rows in sequences]
    if pooling == POOLING_MEAN:
        return list(mean_rows(hidden, sequences))
    if pooling in (POOLING_CLS, POOLING_RANK):
        firsts = hidden[[int(rows[0]) for rows in sequences]]
        return list(firsts if pooling == POOLING_CLS else model.rank(firsts))
    if pooling == POOLING_LAST:
        return [hidden[int(rows[-1])] for rows in sequences]
    raise ValueError(f"unknown pooling type {pooling}")


def mean_rows(hidden: np.ndarray, sequences: list[np.ndarray]) -> np.ndarray:
    """llama.cpp's mean pooling, (n_sequences, n_embd): ``ggml_mul_mat(transpose(hidden), inp_mean)``
    where ``inp_mean`` holds ``1.0f/n`` on each sequence's ``n`` tokens and 0 elsewhere, with ggml's
    float32 matrix product (its vec_dot for one sequence, tinyBLAS's order for several)."""
    from lamina.kernels.floats import PackedFloatExact

    n = hidden.shape[0]
    weights = np.zeros((len(sequences), n), np.float32)
    for i, rows in enumerate(sequences):
        weights[i, rows] = np.float32(1.0) / np.float32(len(rows))
    by_dimension = np.ascontiguousarray(np.asarray(hidden, np.float32).T)
    return PackedFloatExact([by_dimension], n, "F32").matmul(weights)


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


# An encoder's last layer may run for the pooled rows only (CLS, LAST, RANK) when there are at least
# this many: every ggml kernel then takes the same batched path it takes for the whole batch, so the
# kept rows' values are unchanged (ggml's order depends on the batch size only below ~8 rows).
MIN_KEPT_ROWS = 32


def encode(model, batch, sequences: list[np.ndarray], pooling: int) -> list[np.ndarray]:
    """Run an encoder batch and pool each sequence; the last layer skips rows no pooling reads."""
    from lamina.engine.batch import ForwardState

    kept = None
    if pooling in (POOLING_CLS, POOLING_RANK):
        kept = np.array([rows[0] for rows in sequences])
    elif pooling == POOLING_LAST:
        kept = np.array([rows[-1] for rows in sequences])
    state = ForwardState.for_batch(batch, None)
    if kept is not None and len(kept) >= MIN_KEPT_ROWS:
        hidden = model.hidden(batch.tokens, state, kept)
        return pool_sequences(hidden, [np.array([i]) for i in range(len(kept))], pooling, model)
    hidden = model.hidden(batch.tokens, state, np.arange(len(batch)))
    return pool_sequences(hidden, sequences, pooling, model)


def encoder_batches(token_lists: list[list[int]], n_batch: int, n_vocab: int):
    """``(Batch, sequences)`` pairs for an encoder: as many whole token lists per batch as fit in
    ``n_batch`` tokens, each a sequence of its own from position 0 (as llama-cpp-python's ``embed``
    packs them); ``sequences`` are each list's rows in the batch."""
    from lamina.engine.batch import Batch

    group: list[list[int]] = []
    for tokens in [*token_lists, None]:
        if group and (tokens is None or sum(map(len, group)) + len(tokens) > n_batch):
            ids = np.concatenate([np.asarray(t, np.int32) for t in group])
            bad = (ids < 0) | (ids >= n_vocab)
            if bad.any():
                raise ValueError(f"token id {int(ids[bad][0])} is outside the vocabulary (0..{n_vocab - 1})")
            positions = np.concatenate([np.arange(len(t), dtype=np.int32) for t in group])
            seq_ids = np.concatenate([np.full(len(t), i, np.int32) for i, t in enumerate(group)])
            starts = np.cumsum([0] + [len(t) for t in group])
            yield (Batch(ids, positions, seq_ids, np.ones(len(ids), bool)),
                   [np.arange(starts[i], starts[i + 1]) for i in range(len(group))])
            group = []
        if tokens is not None:
            group.append(tokens)


RERANK_TEMPLATE_KEY = "tokenizer.chat_template.rerank"


def rerank_tokens(tokenizer, query: str, document: str, template: str | None = None) -> list[int]:
    """A query/document pair as llama-server's ``format_prompt_rerank`` writes it: the model's
    rerank template (``tokenizer.chat_template.rerank``, ``{query}`` and ``{document}`` filled
    in, special tokens parsed) when it has one; else ``[BOS] query [EOS] [SEP] document [EOS]``,
    each special token only where the vocabulary adds it (EOS falling back to SEP)."""
    if template:
        prompt = template.replace("{query}", query).replace("{document}", document)
        return tokenizer.tokenize(prompt, add_special=False, parse_special=True)
    q = tokenizer.tokenize(query, add_special=False, parse_special=False)
    d = tokenizer.tokenize(document, add_special=False, parse_special=False)
    eos = tokenizer.eos_id if tokenizer.eos_id >= 0 else tokenizer.sep_id
    out = [tokenizer.bos_id] if tokenizer.add_bos else []
    out += q
    if tokenizer.add_eos:
        out.append(eos)
    if tokenizer.add_sep:
        out.append(tokenizer.sep_id)
    out += d
    if tokenizer.add_eos:
        out.append(eos)
    return out

"""Encoder-only embedding models: BERT (BGE, all-MiniLM, mxbai, bge-reranker), nomic-bert
(nomic-embed-text) and jina-bert-v2 (jina-embeddings-v2), as llama.cpp's ``src/models/bert.cpp``
builds them.

Every token sees every token of its own sequence (no causal mask, no KV cache: each batch is
evaluated whole). The input is the token embedding plus the first token-type row (llama.cpp
treats every token as "sentence A"), plus, for ``bert``, the learned position embedding, then a
LayerNorm. Each block is post-norm::

    x = norm(x + attn(x));  x = norm(x + ffn(x))

``bert``'s attention has biased q/k/v and output projections and its feed-forward is
``down(gelu(up(x)))`` with biases; ``nomic-bert`` has one fused ``attn_qkv``, NeoX rotary
embeddings and a SwiGLU feed-forward without biases; ``jina-bert-v2`` has no position embeddings
but ALiBi (each head's slope times ``-|distance|`` added to its scores, ggml's slopes for a
maximum bias of 8), a GEGLU feed-forward (``ffn_up`` holding gate and up, or a separate
``ffn_gate``), and optionally LayerNorms of q and k and a second attention norm. Keys and values
are rounded to float16 before attention, as llama.cpp's flash attention does with an uncached batch.

A reranker (``pooling_type`` rank) also has a classification head: the first token's state
through ``cls`` (with bias) and tanh, then ``cls.output``: one score per sequence.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from lamina.gguf import GGUFError
from lamina.kernels import embedding_rows
from lamina.kernels.attention import TILE as ATTENTION_TILE
from lamina.kernels.attention import attention, attention_within_sequences
from lamina.kernels.simd import f16_bits

from .base import AttentionShape, HParams, Weights, rope_from_metadata
from .blocks import FeedForward, GatedFeedForward
from .layer_norm_models import LayerNorm
from .layers import geglu


class EncoderAttention:
    def __init__(self, model: "BertModel", prefix: str):
        w, s = model.weights, model.attn_shape
        self.shape = s
        if w.has(f"{prefix}.attn_qkv.weight"):
            self.wqkv = w.linear(f"{prefix}.attn_qkv", s.n_embd, 3 * s.n_embd, bias=True)
            self.fused = True
        else:
            self.wqkv = w.fused([f"{prefix}.attn_q", f"{prefix}.attn_k", f"{prefix}.attn_v"], s.n_embd,
                                [s.n_embd] * 3, bias=True)
            self.fused = False
        self.wo = w.linear(f"{prefix}.attn_output", s.n_embd, s.n_embd, bias=True)
        self.rope = model.rope
        self.slopes = model.alibi_slopes
        self.scale = 1.0 / math.sqrt(s.head_dim_k)
        self.q_norm = LayerNorm(model, f"{prefix}.attn_q_norm") if w.has(f"{prefix}.attn_q_norm.weight") else None
        self.k_norm = LayerNorm(model, f"{prefix}.attn_k_norm") if w.has(f"{prefix}.attn_k_norm.weight") else None

    def __call__(self, x: np.ndarray, state, keep: np.ndarray | None = None) -> np.ndarray:
        """The attention's output for every row, or only for the rows ``keep`` (which still see all)."""
        s = self.shape
        n = x.shape[0]
        qkv = self.wqkv(x)
        if self.fused:
            q, k, v = qkv[:, :s.n_embd], qkv[:, s.n_embd:2 * s.n_embd], qkv[:, 2 * s.n_embd:]
        else:
            q, k, v = self.wqkv.split(qkv)
        if self.q_norm is not None:
            q = self.q_norm(np.ascontiguousarray(q))
        if self.k_norm is not None:
            k = self.k_norm(np.ascontiguousarray(k))
        q = np.ascontiguousarray(q).reshape(n, s.n_head, s.head_dim_k)
        k = np.ascontiguousarray(k).reshape(n, s.n_head_kv, s.head_dim_k)
        v = np.ascontiguousarray(v).reshape(n, s.n_head_kv, s.head_dim_v)
        if self.rope is not None:
            state.rope(self.rope, q)
            state.rope(self.rope, k)
        return self.wo(attend_within_sequences(state, q, k, v, self.scale, keep, self.slopes))


def attend_within_sequences(state, q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float,
                            keep: np.ndarray | None = None, slopes: np.ndarray | None = None) -> np.ndarray:
    """Non-causal attention of each sequence's rows over that sequence's keys and values only
    (for the rows ``keep`` only, when given: each query's result depends on no other query).

    Keys and values are float16 (llama.cpp casts them for its flash attention). From 64 tokens
    ggml runs its tiled kernel over the whole batch, other sequences' keys masked; below, its
    one-query kernel, which skips masked keys, so each sequence is run alone with every query
    given the sequence's last position (no key masked). ALiBi's distances are those of the
    tokens' positions in their sequence."""
    keys_all = heads_f16(k)  # (heads, tokens, head_dim) float16, once per batch
    values_all = heads_f16(v)
    rows_asked = np.arange(q.shape[0]) if keep is None else np.asarray(keep)
    if len(state.positions) >= ATTENTION_TILE:  # ggml's tiled kernel, over the whole batch and its mask
        return attention_within_sequences(q[rows_asked], keys_all, values_all, state.seq_ids[rows_asked],
                                          state.seq_ids, scale, slopes, state.positions[rows_asked], state.positions)
    out = np.empty((len(rows_asked), q.shape[1] * v.shape[2]), np.float32)
    n_threads = numba.get_num_threads()
    for g in state.groups:
        rows = g.rows
        asked = np.flatnonzero(np.isin(rows_asked, rows))
        if not len(asked):
            continue
        start, end = int(rows[0]), int(rows[-1]) + 1
        if end - start == len(rows):  # the usual case: a sequence's rows are one run of the batch
            keys, values = keys_all[:, start:end], values_all[:, start:end]
        else:
            keys, values = keys_all[:, rows], values_all[:, rows]
        sees_all = np.full(len(asked), len(rows) - 1, dtype=np.int64)
        out[asked] = attention(q[rows_asked[asked]], np.ascontiguousarray(keys), np.ascontiguousarray(values),
                               sees_all, scale, tiled=False, n_threads=n_threads, slopes=slopes,
                               alibi_pos=None if slopes is None else state.positions[rows_asked[asked]])
    return out


@njit(cache=True, parallel=True, error_model="numpy")
def _heads_f16(x, out):
    for h in prange(x.shape[1]):
        for t in range(x.shape[0]):
            for d in range(x.shape[2]):
                out[h, t, d] = f16_bits(x[t, h, d])


def heads_f16(x: np.ndarray) -> np.ndarray:
    """(tokens, heads, head_dim) float32 as (heads, tokens, head_dim) float16, rounded to nearest."""
    out = np.empty((x.shape[1], x.shape[0], x.shape[2]), np.uint16)
    _heads_f16(np.ascontiguousarray(x, dtype=np.float32), out)
    return out.view(np.float16)


class EncoderBlock:
    def __init__(self, model: "BertModel", i: int):
        p = f"blk.{i}"
        self.attn = EncoderAttention(model, p)
        self.attn_out_norm = LayerNorm(model, f"{p}.attn_output_norm")
        w = model.weights
        self.attn_norm_2 = LayerNorm(model, f"{p}.attn_norm_2") if w.has(f"{p}.attn_norm_2.weight") else None
        self.ffn = model.feed_forward(p)
        self.layer_out_norm = LayerNorm(model, f"{p}.layer_output_norm")

    def __call__(self, x: np.ndarray, state, output_rows=None) -> np.ndarray:
        h = self.attn(x, state, output_rows)
        if output_rows is not None:
            x = x[output_rows]
        out = self.attn_out_norm(h + x)
        if self.attn_norm_2 is not None:  # the layer's input added once more, normed again
            out = self.attn_norm_2(out + x)
        return self.layer_out_norm(self.ffn(out) + out)


class BertModel:
    """``bert``: see the module docstring."""

    arch = "bert"
    causal = False

    def __init__(self, gguf):
        self.gguf = gguf
        self.hp = hp = HParams(gguf, self.arch)
        self.weights = w = Weights(gguf)
        self.n_layer = hp.int("block_count")
        self.n_embd = hp.int("embedding_length")
        self.n_ctx_train = hp.int("context_length", default=512)
        self.n_ff = hp.int("feed_forward_length")
        self.eps = hp.float("attention.layer_norm_epsilon")
        if gguf.get_bool(hp.key("attention.causal"), False):
            raise GGUFError(f"{hp.key('attention.causal')} is true: causal {self.arch} models are not supported",
                            gguf.path)
        n_head = hp.int("attention.head_count")
        n_head_kv = hp.int("attention.head_count_kv", default=n_head)
        if n_head_kv != n_head or self.n_embd % n_head:
            raise GGUFError(f"{self.arch}: {self.n_embd} wide with {n_head} heads and {n_head_kv} key/value heads "
                            "is not an encoder lamina knows", gguf.path)
        head_dim = self.n_embd // n_head
        self.attn_shape = AttentionShape(self.n_embd, n_head, n_head, head_dim, head_dim)
        tok = w.get("token_embd.weight")
        if len(tok.shape) != 2 or tok.shape[0] != self.n_embd:
            raise GGUFError(f"token_embd.weight has shape {list(tok.shape)}, expected [{self.n_embd}, n_vocab]",
                            gguf.path)
        self.token_embd = tok
        self.n_vocab = int(tok.shape[1])
        n_types = gguf.get_int("tokenizer.ggml.token_type_count", 0)
        if not n_types:
            raise GGUFError(f"{self.arch} model needs tokenizer.ggml.token_type_count (its token type count)",
                            gguf.path)
        types = w.get("token_types.weight", (self.n_embd, n_types), required=False)
        self.type_row = None if types is None else embedding_rows(types, np.zeros(1, np.int64))[0]
        self.position_embd = self.read_position_embeddings()
        self.rope = self.read_rope()
        self.alibi_slopes = self.read_alibi_slopes()
        self.input_norm = LayerNorm(self, "token_embd_norm")
        self.blocks = [EncoderBlock(self, i) for i in range(self.n_layer)]
        self.cls = self.cls_out = None
        if w.has("cls.weight"):
            self.cls = w.linear("cls", self.n_embd, self.n_embd, bias=True)
        if w.has("cls.output.weight"):
            n_out = int(w.get("cls.output.weight").shape[1])
            self.cls_out = w.linear("cls.output", self.n_embd, n_out, bias=True)

    def read_position_embeddings(self):
        return self.weights.get("position_embd.weight", (self.n_embd, self.n_ctx_train))

    def read_rope(self):
        return None

    def read_alibi_slopes(self):
        return None

    def feed_forward(self, prefix: str):
        return FeedForward(self.weights, prefix, self.n_embd, self.n_ff)

    def kv_shapes(self) -> list:
        return []  # nothing is cached: every batch is evaluated whole

    @property
    def has_rank_head(self) -> bool:
        return self.cls is not None or self.cls_out is not None

    def embed(self, tokens: np.ndarray, positions: np.ndarray) -> np.ndarray:
        x = embedding_rows(self.token_embd, tokens)
        if self.type_row is not None:
            x = x + self.type_row
        if self.position_embd is not None:
            x = embedding_rows(self.position_embd, positions) + x
        return self.input_norm(x)

    def hidden(self, tokens: np.ndarray, state, output_rows: np.ndarray) -> np.ndarray:
        """The output rows' final hidden states (llama.cpp's embeddings, before pooling)."""
        positions = state.positions
        if len(positions) and int(positions.max()) >= self.n_ctx_train and self.position_embd is not None:
            raise ValueError(f"position {int(positions.max())} is past the {self.n_ctx_train} positions "
                             f"{self.arch} was trained with")
        x = self.embed(tokens, positions)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            keep = output_rows if i == last and len(output_rows) != len(tokens) else None
            x = block(x, state, keep)
        return x

    def forward(self, tokens, state, output_rows):
        raise ValueError(f"{self.arch} is an embedding model: it gives embeddings (embedding=True), not logits")

    def rank(self, first_rows: np.ndarray) -> np.ndarray:
        """Reranker scores (n_sequences, n_cls_out) from each sequence's first-token state."""
        if not self.has_rank_head:
            raise ValueError(f"this {self.arch} model has no classification head (cls.weight), so it cannot rerank")
        x = first_rows
        if self.cls is not None:
            x = np.tanh(self.cls(x)).astype(np.float32)
        if self.cls_out is not None:
            x = self.cls_out(x)
        return x


class NomicBertModel(BertModel):
    """``nomic-bert``: see the module docstring."""

    arch = "nomic-bert"

    def read_position_embeddings(self):
        return None

    def read_rope(self):
        return rope_from_metadata(self.hp, self.attn_shape.head_dim_k, neox=True)

    def feed_forward(self, prefix: str):
        return GatedFeedForward(self.weights, prefix, self.n_embd, self.n_ff, "silu")


class JinaBertV2Model(BertModel):
    """``jina-bert-v2``: see the module docstring."""

    arch = "jina-bert-v2"
    MAX_ALIBI_BIAS = 8.0  # llama.cpp's f_max_alibi_bias for this architecture

    def read_position_embeddings(self):
        return None

    def read_alibi_slopes(self):
        return alibi_slopes(self.attn_shape.n_head, self.MAX_ALIBI_BIAS)

    def feed_forward(self, prefix: str):
        w = self.weights
        if w.has(f"{prefix}.ffn_gate.weight"):
            return GatedFeedForward(w, prefix, self.n_embd, self.n_ff, "gelu")
        return MergedGeglu(w, prefix, self.n_embd, self.n_ff)


class MergedGeglu:
    """``down(gelu(a) * b) + bias`` where ``ffn_up`` (with its bias) gives ``[a | b]``: ggml_geglu."""

    def __init__(self, w, prefix: str, n_embd: int, n_ff: int):
        up = w.get(f"{prefix}.ffn_up.weight")
        if up.shape[1] != 2 * n_ff:
            raise GGUFError(f"{prefix}.ffn_up.weight has {up.shape[1]} rows; a GEGLU feed-forward needs "
                            f"2 x feed_forward_length = {2 * n_ff} (or a separate ffn_gate)", w.gguf.path)
        self.up = w.linear(f"{prefix}.ffn_up", n_embd, 2 * n_ff, bias=True)
        self.down = w.linear(f"{prefix}.ffn_down", n_ff, n_embd, bias=True)
        self.n_ff = n_ff

    def __call__(self, x: np.ndarray) -> np.ndarray:
        u = self.up(x)
        return self.down(geglu(u, self.n_ff))


def alibi_slopes(n_head: int, max_bias: float) -> np.ndarray:
    """ggml's ALiBi slope of each head, in float32 with the C library's powf (as ggml computes them)."""
    powf = _c_powf()
    n_log2 = 1 << int(math.floor(math.log2(n_head)))
    m0 = powf(2.0, -max_bias / n_log2)
    m1 = powf(2.0, -(max_bias / 2.0) / n_log2)
    return np.array([powf(m0, h + 1) if h < n_log2 else powf(m1, 2 * (h - n_log2) + 1) for h in range(n_head)],
                    np.float32)


def _c_powf():
    import ctypes
    import ctypes.util

    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        libm.powf.restype = ctypes.c_float
        libm.powf.argtypes = [ctypes.c_float, ctypes.c_float]
        return lambda a, b: float(libm.powf(a, b))
    except (OSError, AttributeError):  # no C library to ask: float32 rounding of the exact power
        return lambda a, b: float(np.float32(float(np.float32(a)) ** float(np.float32(b))))

"""Llama (Llama 2/3, Mistral, Mixtral, TinyLlama, SmolLM2): pre-norm blocks of grouped-query
attention with rotary embeddings in the adjacent-pair layout, and a SwiGLU feed-forward (or, when
the file has experts, a mixture of SwiGLU experts).

Llama 3's rope-frequency scaling arrives as the ``rope_freqs.weight`` tensor, which
divides each rotary frequency. Architectures that differ from llama only in a few switches
(qwen2, qwen3, granite) subclass :class:`LlamaModel` and set them.
"""

from __future__ import annotations

import math

import numpy as np

from .base import DecoderModel, rope_from_metadata
from .blocks import Attention, GatedFeedForward, MixtureOfExperts
from .layers import rms_norm


class LlamaBlock:
    def __init__(self, model: "LlamaModel", i: int):
        p = f"blk.{i}"
        w = model.weights
        self.eps = model.eps
        self.attn_norm = w.vector(f"{p}.attn_norm.weight", model.n_embd)
        self.attn = Attention(w, p, model.attn_shapes[i], model.rope, model.kq_scale,
                              qk_norm_eps=model.eps if model.qk_norm else None)
        self.ffn_norm = w.vector(f"{p}.ffn_norm.weight", model.n_embd)
        self.ffn = model.feed_forward(p)
        self.residual_scale = model.residual_scale

    def __call__(self, x: np.ndarray, state, layer: int, output_rows=None) -> np.ndarray:
        h = self.attn(rms_norm(x, self.attn_norm, self.eps), state, layer)
        if output_rows is not None:
            h, x = h[output_rows], x[output_rows]
        if self.residual_scale:
            h *= np.float32(self.residual_scale)
        x = x + h
        h = self.ffn(rms_norm(x, self.ffn_norm, self.eps))
        if self.residual_scale:
            h *= np.float32(self.residual_scale)
        return x + h


class LlamaModel(DecoderModel):
    arch = "llama"
    rope_neox = False  # ggml's LLAMA_ROPE_TYPE_NORM: rotate adjacent pairs
    qk_norm = False  # RMS norms on each head's query and key (qwen3)
    residual_scale = 0.0  # granite scales each block's outputs before adding them

    def __init__(self, gguf):
        super().__init__(gguf)
        hp = self.hp
        self.eps = hp.float("attention.layer_norm_rms_epsilon")
        self.n_ff = hp.int("feed_forward_length", default=0, minimum=0)
        self.n_expert = hp.int("expert_count", default=0, minimum=0)
        self.attn_shapes = self.read_attention_shapes()
        head_dim_k = self.attn_shapes[0].head_dim_k
        n_rot = hp.int("rope.dimension_count", default=head_dim_k)
        factors = self.weights.get("rope_freqs.weight", (n_rot // 2,), required=False)
        self.rope = rope_from_metadata(hp, n_rot, self.rope_neox,
                                       freq_factors=None if factors is None else np.asarray(factors.data, np.float32))
        self.kq_scale = self.attention_scale(head_dim_k)
        self.blocks = [LlamaBlock(self, i) for i in range(self.n_layer)]

    def attention_scale(self, head_dim: int) -> float:
        return 1.0 / math.sqrt(head_dim)

    def feed_forward(self, prefix: str):
        """The block's feed-forward: SwiGLU, or a mixture of SwiGLU experts when the file has them."""
        hp = self.hp
        if self.n_expert:
            n_ff = hp.int("expert_feed_forward_length", default=self.n_ff or None)
            return MixtureOfExperts(self.weights, prefix, self.n_embd, n_ff, self.n_expert,
                                    hp.int("expert_used_count"),
                                    hp.gguf.get_float(hp.key("expert_weights_scale"), 0.0) or 0.0)
        return GatedFeedForward(self.weights, prefix, self.n_embd, hp.int("feed_forward_length"), "silu")

    def final_norm(self, x: np.ndarray) -> np.ndarray:
        return rms_norm(x, self.output_norm, self.eps)

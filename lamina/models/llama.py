"""Llama (Llama 2/3, Mistral, TinyLlama, SmolLM2): pre-norm blocks of grouped-query attention
with rotary embeddings in the adjacent-pair layout, and a SwiGLU feed-forward.

Llama 3's rope-frequency scaling arrives as the ``rope_freqs.weight`` tensor, which
divides each rotary frequency.
"""

from __future__ import annotations

import math

import numpy as np

from lamina.engine.kv_cache import LayerKVShape

from .base import DecoderModel, rope_from_metadata
from .blocks import Attention, AttentionShape, GatedFeedForward
from .layers import rms_norm


class LlamaBlock:
    def __init__(self, model: "LlamaModel", i: int):
        p = f"blk.{i}"
        w = model.weights
        self.eps = model.eps
        self.attn_norm = w.vector(f"{p}.attn_norm.weight", model.n_embd)
        self.attn = Attention(w, p, model.attn_shapes[i], model.rope, model.kq_scale)
        self.ffn_norm = w.vector(f"{p}.ffn_norm.weight", model.n_embd)
        self.ffn = GatedFeedForward(w, p, model.n_embd, model.n_ff, "silu")

    def __call__(self, x: np.ndarray, state, layer: int, output_rows=None) -> np.ndarray:
        h = self.attn(rms_norm(x, self.attn_norm, self.eps), state, layer)
        if output_rows is not None:
            h, x = h[output_rows], x[output_rows]
        x = x + h
        return x + self.ffn(rms_norm(x, self.ffn_norm, self.eps))


class LlamaModel(DecoderModel):
    arch = "llama"
    rope_neox = False  # ggml's LLAMA_ROPE_TYPE_NORM: rotate adjacent pairs

    def __init__(self, gguf):
        super().__init__(gguf)
        hp = self.hp
        if hp.gguf.get_int(hp.key("expert_count"), 0):
            raise NotImplementedError(f"{self.arch} with mixture-of-experts layers is not supported yet")
        self.eps = hp.float("attention.layer_norm_rms_epsilon")
        self.n_ff = hp.int("feed_forward_length")
        n_head = hp.per_layer_int("attention.head_count", self.n_layer)
        n_head_kv = hp.per_layer_int("attention.head_count_kv", self.n_layer, default=n_head[0])
        head_dim_k = hp.int("attention.key_length", default=self.n_embd // n_head[0])
        head_dim_v = hp.int("attention.value_length", default=self.n_embd // n_head[0])
        self.attn_shapes = []
        for h, hkv in zip(n_head, n_head_kv):
            if h % hkv:
                raise ValueError(f"{self.arch}: {h} attention heads cannot share {hkv} key/value heads")
            self.attn_shapes.append(AttentionShape(self.n_embd, h, hkv, head_dim_k, head_dim_v))
        n_rot = hp.int("rope.dimension_count", default=head_dim_k)
        factors = self.weights.get("rope_freqs.weight", (n_rot // 2,), required=False)
        self.rope = rope_from_metadata(hp, n_rot, self.rope_neox,
                                       freq_factors=None if factors is None else np.asarray(factors.data, np.float32))
        self.kq_scale = 1.0 / math.sqrt(head_dim_k)
        self.blocks = [LlamaBlock(self, i) for i in range(self.n_layer)]

    def kv_shapes(self) -> list[LayerKVShape]:
        return [LayerKVShape(s.n_head_kv, s.head_dim_k, s.head_dim_v) for s in self.attn_shapes]

    def final_norm(self, x: np.ndarray) -> np.ndarray:
        return rms_norm(x, self.output_norm, self.eps)

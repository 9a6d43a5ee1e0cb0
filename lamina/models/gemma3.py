"""Gemma 3: embeddings scaled by √n_embd, RMS norms on the queries and keys of each head,
norms after attention and after the feed-forward as well as before, a GELU-gated
feed-forward, and sliding-window attention on local layers with a global layer every
sixth; local layers use their own rotary base (10,000 unless the file says otherwise).

The file's norm weights already include gemma's ``1 +`` offset (the converter adds it).
"""

from __future__ import annotations

import math

import numpy as np

from .base import DecoderModel, rope_from_metadata
from .blocks import Attention, GatedFeedForward
from .layers import rms_norm

SWA_PATTERN = 6  # every sixth layer attends globally
LOCAL_ROPE_BASE = 10000.0


class Gemma3Block:
    def __init__(self, model: "Gemma3Model", i: int):
        p = f"blk.{i}"
        w = model.weights
        n = model.n_embd
        self.eps = model.eps
        local = model.is_local[i]
        self.attn_norm = w.vector(f"{p}.attn_norm.weight", n)
        self.attn = Attention(w, p, model.attn_shapes[i], model.rope_local if local else model.rope_global,
                              model.attention_scale, window=model.n_swa if local else 0, qk_norm_eps=model.eps,
                              scale_queries=True)
        self.attn_post_norm = w.vector(f"{p}.post_attention_norm.weight", n)
        self.ffn_norm = w.vector(f"{p}.ffn_norm.weight", n)
        self.ffn = GatedFeedForward(w, p, n, model.n_ff, "gelu")
        self.ffn_post_norm = w.vector(f"{p}.post_ffw_norm.weight", n)

    def __call__(self, x: np.ndarray, state, layer: int, output_rows=None) -> np.ndarray:
        h = self.attn(rms_norm(x, self.attn_norm, self.eps), state, layer)
        if output_rows is not None:
            h, x = h[output_rows], x[output_rows]
        x = x + rms_norm(h, self.attn_post_norm, self.eps)
        h = self.ffn(rms_norm(x, self.ffn_norm, self.eps))
        return x + rms_norm(h, self.ffn_post_norm, self.eps)


class Gemma3Model(DecoderModel):
    arch = "gemma3"

    def __init__(self, gguf):
        super().__init__(gguf)
        hp = self.hp
        self.eps = hp.float("attention.layer_norm_rms_epsilon")
        self.n_ff = hp.int("feed_forward_length")
        self.attn_shapes = self.read_attention_shapes()
        n_head, head_dim_k = self.attn_shapes[0].n_head, self.attn_shapes[0].head_dim_k
        self.n_swa = hp.int("attention.sliding_window", default=0, minimum=0)
        pattern = hp.int("attention.sliding_window_pattern", default=SWA_PATTERN, minimum=0)
        self.is_local = [bool(self.n_swa) and (pattern == 0 or i % pattern < pattern - 1)
                         for i in range(self.n_layer)]
        n_rot = hp.int("rope.dimension_count", default=head_dim_k)
        self.rope_global = rope_from_metadata(hp, n_rot, neox=True)
        self.rope_local = rope_from_metadata(hp, n_rot, neox=True,
                                             base=hp.float("rope.freq_base_swa", LOCAL_ROPE_BASE))
        # gemma_pytorch: queries are scaled by 1/sqrt(query_pre_attn_scalar); 27B uses n_embd / n_head.
        big = self.n_layer == 62
        self.attention_scale = 1.0 / math.sqrt(self.n_embd / n_head if big else head_dim_k)
        self.embed_scale = np.float32(math.sqrt(self.n_embd))
        self.softcap = hp.gguf.get_float(hp.key("final_logit_softcapping"), 0.0) or 0.0
        self.blocks = [Gemma3Block(self, i) for i in range(self.n_layer)]

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        return super().embed(tokens) * self.embed_scale

    def final_norm(self, x: np.ndarray) -> np.ndarray:
        return rms_norm(x, self.output_norm, self.eps)

    def forward(self, tokens, state, output_rows):
        logits = super().forward(tokens, state, output_rows)
        if self.softcap:
            logits = np.tanh(logits / self.softcap) * self.softcap
        return logits

"""OLMo 2: no norms before attention and feed-forward, RMS norms after each instead (on the
sub-block's output, before it joins the residual stream); RMS norms over the whole query and key
projections (not per head); NeoX rotary layout; untied output."""

from __future__ import annotations

import math

import numpy as np

from lamina.gguf import GGUFError

from .base import DecoderModel, rope_from_metadata
from .blocks import Attention, GatedFeedForward
from .layers import rms_norm


class Olmo2Block:
    def __init__(self, model: "Olmo2Model", i: int):
        p = f"blk.{i}"
        w = model.weights
        n = model.n_embd
        self.eps = model.eps
        self.attn = Attention(w, p, model.attn_shapes[i], model.rope, model.kq_scale, qk_norm_eps=model.eps,
                              qk_norm_per_head=False)
        self.attn_post_norm = w.vector(f"{p}.post_attention_norm.weight", n)
        self.ffn = GatedFeedForward(w, p, n, model.n_ff, "silu")
        self.ffn_post_norm = w.vector(f"{p}.post_ffw_norm.weight", n)

    def __call__(self, x: np.ndarray, state, layer: int, output_rows=None) -> np.ndarray:
        h = self.attn(x, state, layer)
        if output_rows is not None:
            h, x = h[output_rows], x[output_rows]
        x = x + rms_norm(h, self.attn_post_norm, self.eps)
        return x + rms_norm(self.ffn(x), self.ffn_post_norm, self.eps)


class Olmo2Model(DecoderModel):
    arch = "olmo2"

    def __init__(self, gguf):
        super().__init__(gguf)
        hp = self.hp
        if hp.gguf.get_int(hp.key("attention.sliding_window"), 0):
            raise GGUFError(f"{hp.key('attention.sliding_window')}: OLMo's sliding-window layers (OLMo 3) "
                            "are not supported yet", gguf.path)
        self.eps = hp.float("attention.layer_norm_rms_epsilon")
        self.n_ff = hp.int("feed_forward_length")
        self.attn_shapes = self.read_attention_shapes()
        head_dim = self.attn_shapes[0].head_dim_k
        self.rope = rope_from_metadata(hp, hp.int("rope.dimension_count", default=head_dim), neox=True)
        self.kq_scale = 1.0 / math.sqrt(head_dim)
        self.blocks = [Olmo2Block(self, i) for i in range(self.n_layer)]

    def final_norm(self, x: np.ndarray) -> np.ndarray:
        return rms_norm(x, self.output_norm, self.eps)

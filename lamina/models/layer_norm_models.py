"""StableLM and StarCoder2: the two pre-norm architectures with LayerNorm (mean and variance,
weight and bias) instead of RMS norm, and NeoX rotary embeddings.

* **stablelm**: rotary embeddings on the first ``rope.dimension_count`` values of each head only
  (a quarter, in StableLM 2), q/k/v biases when the file has them, a SwiGLU feed-forward, an
  untied output; without ``ffn_norm`` tensors the block is "parallel": the feed-forward reads the
  attention's normed input, and both outputs join the residual stream together.
* **starcoder2**: biases on every projection, a plain GELU MLP (``down(gelu(up(x)))``), the output
  tied to the embeddings.
"""

from __future__ import annotations

import math

import numpy as np

from lamina.gguf import GGUFError

from .base import DecoderModel, rope_from_metadata
from .blocks import Attention, FeedForward, GatedFeedForward
from .layers import layer_norm


class LayerNorm:
    """A LayerNorm's weight and (optional) bias, applied with ggml_norm's arithmetic."""

    def __init__(self, model: DecoderModel, name: str):
        self.weight = model.weights.vector(f"{name}.weight", model.n_embd)
        self.bias = model.weights.vector(f"{name}.bias", model.n_embd, required=False)
        self.eps = model.eps

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return layer_norm(x, self.weight, self.bias, self.eps)


class LayerNormBlock:
    def __init__(self, model: "LayerNormModel", i: int):
        p = f"blk.{i}"
        w = model.weights
        self.attn_norm = LayerNorm(model, f"{p}.attn_norm")
        self.attn = Attention(w, p, model.attn_shapes[i], model.rope, model.kq_scale)
        self.ffn_norm = LayerNorm(model, f"{p}.ffn_norm") if w.has(f"{p}.ffn_norm.weight") else None
        self.ffn = model.feed_forward(p)

    def __call__(self, x: np.ndarray, state, layer: int, output_rows=None) -> np.ndarray:
        normed = self.attn_norm(x)
        h = self.attn(normed, state, layer)
        if output_rows is not None:
            h, x, normed = h[output_rows], x[output_rows], normed[output_rows]
        x = x + h
        return x + self.ffn(self.ffn_norm(x) if self.ffn_norm is not None else normed)


class LayerNormModel(DecoderModel):
    def __init__(self, gguf):
        super().__init__(gguf)
        hp = self.hp
        self.eps = hp.float("attention.layer_norm_epsilon")
        self.n_ff = hp.int("feed_forward_length")
        self.attn_shapes = self.read_attention_shapes()
        head_dim = self.attn_shapes[0].head_dim_k
        self.rope = rope_from_metadata(hp, hp.int("rope.dimension_count", default=head_dim), neox=True)
        self.kq_scale = 1.0 / math.sqrt(head_dim)
        if self.weights.has("blk.0.attn_q_norm.weight"):
            raise GGUFError(f"{self.arch}: per-head query/key LayerNorms (blk.N.attn_q_norm) are not supported yet",
                            gguf.path)
        self.output_norm_layer = LayerNorm(self, "output_norm")
        self.blocks = [LayerNormBlock(self, i) for i in range(self.n_layer)]

    def feed_forward(self, prefix: str):
        raise NotImplementedError

    def final_norm(self, x: np.ndarray) -> np.ndarray:
        return self.output_norm_layer(x)


class StableLMModel(LayerNormModel):
    arch = "stablelm"

    def feed_forward(self, prefix: str):
        return GatedFeedForward(self.weights, prefix, self.n_embd, self.n_ff, "silu")


class StarCoder2Model(LayerNormModel):
    arch = "starcoder2"

    def feed_forward(self, prefix: str):
        return FeedForward(self.weights, prefix, self.n_embd, self.n_ff)

"""Granite (IBM Granite 3): the llama block with four multipliers from the file — the
embeddings scaled by ``embedding_scale``, attention scores by ``attention.scale`` (instead of
1/√head_dim), each block's attention and feed-forward outputs by ``residual_scale`` before they
join the residual stream, and the logits divided by ``logit_scale``."""

from __future__ import annotations

import numpy as np

from .llama import LlamaModel


class GraniteModel(LlamaModel):
    arch = "granite"

    def __init__(self, gguf):
        get = gguf.get_float
        self.residual_scale = get(f"{self.arch}.residual_scale", 0.0) or 0.0
        self.embedding_scale = np.float32(get(f"{self.arch}.embedding_scale", 0.0) or 0.0)
        self.logit_scale = np.float32(get(f"{self.arch}.logit_scale", 1.0) or 1.0)
        self._attention_scale = get(f"{self.arch}.attention.scale", 0.0) or 0.0
        super().__init__(gguf)

    def attention_scale(self, head_dim: int) -> float:
        return self._attention_scale or super().attention_scale(head_dim)

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        x = super().embed(tokens)
        return x * self.embedding_scale if self.embedding_scale else x

    def forward(self, tokens, state, output_rows):
        return super().forward(tokens, state, output_rows) * (np.float32(1.0) / self.logit_scale)

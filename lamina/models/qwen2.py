"""Qwen2 (Qwen2, Qwen2.5, Qwen2.5-Coder): the llama block with biases on the q/k/v
projections and rotary embeddings in the NeoX (rotate-halves) layout."""

from __future__ import annotations

from .llama import LlamaModel


class Qwen2Model(LlamaModel):
    arch = "qwen2"
    rope_neox = True

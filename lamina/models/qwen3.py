"""Qwen3 and Qwen3-MoE: the llama block without attention biases, with RMS norms on each
head's query and key before the rotation, NeoX rotary layout, and a head size set by
``attention.key_length`` rather than n_embd / n_head. Qwen3-MoE replaces the feed-forward with a
mixture of experts (``expert_feed_forward_length`` wide)."""

from __future__ import annotations

from .llama import LlamaModel


class Qwen3Model(LlamaModel):
    arch = "qwen3"
    rope_neox = True
    qk_norm = True


class Qwen3MoeModel(Qwen3Model):
    arch = "qwen3moe"

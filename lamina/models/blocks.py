"""Attention and feed-forward sub-blocks, assembled by each architecture file."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Weights
from .layers import RopeConfig, geglu, rms_norm, swiglu


@dataclass(frozen=True)
class AttentionShape:
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int


class Attention:
    """Grouped-query self-attention: q/k/v projections (optional biases), optional per-head
    q/k RMS norms, rotary embeddings, attention over the KV cache, output projection."""

    def __init__(self, w: Weights, prefix: str, shape: AttentionShape, rope: RopeConfig, scale: float,
                 window: int = 0, qk_norm_eps: float | None = None, biases: bool = True,
                 scale_queries: bool = False):
        self.shape = shape
        s = shape
        self.wqkv = w.fused([f"{prefix}.attn_q", f"{prefix}.attn_k", f"{prefix}.attn_v"], s.n_embd,
                            [s.n_head * s.head_dim_k, s.n_head_kv * s.head_dim_k, s.n_head_kv * s.head_dim_v],
                            bias=biases)
        self.wo = w.linear(f"{prefix}.attn_output", s.n_head * s.head_dim_v, s.n_embd, bias=biases)
        self.q_norm = self.k_norm = None
        if qk_norm_eps is not None:
            self.q_norm = w.vector(f"{prefix}.attn_q_norm.weight", s.head_dim_k)
            self.k_norm = w.vector(f"{prefix}.attn_k_norm.weight", s.head_dim_k)
        self.qk_norm_eps = qk_norm_eps
        self.rope = rope
        self.scale = scale
        self.scale_queries = scale_queries  # scale the queries first (gemma) rather than the scores
        self.window = window

    def __call__(self, x: np.ndarray, state, layer: int) -> np.ndarray:
        s = self.shape
        n = x.shape[0]
        q, k, v = self.wqkv.split(self.wqkv(x))
        q = q.reshape(n, s.n_head, s.head_dim_k)
        k = k.reshape(n, s.n_head_kv, s.head_dim_k)
        v = v.reshape(n, s.n_head_kv, s.head_dim_v)
        if self.q_norm is not None:
            q = rms_norm(q, self.q_norm, self.qk_norm_eps)
            k = rms_norm(k, self.k_norm, self.qk_norm_eps)
        state.rope(self.rope, q)
        state.rope(self.rope, k)
        scale = self.scale
        if self.scale_queries:
            q *= np.float32(scale)
            scale = 1.0
        out = state.attend(layer, q, k, v, scale, self.window)
        return self.wo(out)


class GatedFeedForward:
    """``down(act(gate(x)) * up(x))`` with SiLU (llama, qwen2) or GELU (gemma)."""

    def __init__(self, w: Weights, prefix: str, n_embd: int, n_ff: int, activation: str = "silu"):
        self.gate_up = w.fused([f"{prefix}.ffn_gate", f"{prefix}.ffn_up"], n_embd, [n_ff, n_ff], bias=True)
        self.down = w.linear(f"{prefix}.ffn_down", n_ff, n_embd, bias=True)
        self.act = {"silu": swiglu, "gelu": geglu}[activation]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        gate, up = self.gate_up.split(self.gate_up(x))
        return self.down(self.act(gate, up))

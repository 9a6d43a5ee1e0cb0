"""Attention and feed-forward sub-blocks, assembled by each architecture file."""

from __future__ import annotations

import numpy as np

from lamina.gguf import GGUFError

from .base import AttentionShape, Weights
from .layers import RopeConfig, geglu, gelu, rms_norm, softmax, swiglu


class Attention:
    """Grouped-query self-attention: q/k/v projections (optional biases), optional per-head
    q/k RMS norms, rotary embeddings, attention over the KV cache, output projection."""

    def __init__(self, w: Weights, prefix: str, shape: AttentionShape, rope: RopeConfig, scale: float,
                 window: int = 0, qk_norm_eps: float | None = None, biases: bool = True,
                 scale_queries: bool = False, qk_norm_per_head: bool = True):
        self.shape = shape
        s = shape
        self.wqkv = w.fused([f"{prefix}.attn_q", f"{prefix}.attn_k", f"{prefix}.attn_v"], s.n_embd,
                            [s.n_head * s.head_dim_k, s.n_head_kv * s.head_dim_k, s.n_head_kv * s.head_dim_v],
                            bias=biases)
        self.wo = w.linear(f"{prefix}.attn_output", s.n_head * s.head_dim_v, s.n_embd, bias=biases)
        self.q_norm = self.k_norm = None
        if qk_norm_eps is not None:  # RMS norms of each head's query and key, or of the whole projections
            self.q_norm = w.vector(f"{prefix}.attn_q_norm.weight",
                                   s.head_dim_k * (1 if qk_norm_per_head else s.n_head))
            self.k_norm = w.vector(f"{prefix}.attn_k_norm.weight",
                                   s.head_dim_k * (1 if qk_norm_per_head else s.n_head_kv))
        self.qk_norm_eps = qk_norm_eps
        self.qk_norm_per_head = qk_norm_per_head
        self.rope = rope
        self.scale = scale
        self.scale_queries = scale_queries  # scale the queries first (gemma) rather than the scores
        self.window = window

    def __call__(self, x: np.ndarray, state, layer: int) -> np.ndarray:
        s = self.shape
        n = x.shape[0]
        q, k, v = self.wqkv.split(self.wqkv(x))
        if self.q_norm is not None and not self.qk_norm_per_head:
            q = rms_norm(q, self.q_norm, self.qk_norm_eps)
            k = rms_norm(k, self.k_norm, self.qk_norm_eps)
        q = q.reshape(n, s.n_head, s.head_dim_k)
        k = k.reshape(n, s.n_head_kv, s.head_dim_k)
        v = v.reshape(n, s.n_head_kv, s.head_dim_v)
        if self.q_norm is not None and self.qk_norm_per_head:
            q = rms_norm(q, self.q_norm, self.qk_norm_eps)
            k = rms_norm(k, self.k_norm, self.qk_norm_eps)
        if self.scale_queries:  # gemma: the rotated queries times the scale, the scores unscaled
            out = state.rope_and_attend(layer, self.rope, q, k, v, 1.0, self.window, q_scale=self.scale)
        else:
            out = state.rope_and_attend(layer, self.rope, q, k, v, self.scale, self.window)
        return self.wo(out)


class GatedFeedForward:
    """``down(act(gate(x)) * up(x))`` with SiLU (llama, qwen2) or GELU (gemma)."""

    def __init__(self, w: Weights, prefix: str, n_embd: int, n_ff: int, activation: str = "silu"):
        self.gate_up = w.fused([f"{prefix}.ffn_gate", f"{prefix}.ffn_up"], n_embd, [n_ff, n_ff], bias=True)
        self.down = w.linear(f"{prefix}.ffn_down", n_ff, n_embd, bias=True)
        self.act = {"silu": swiglu, "gelu": geglu}[activation]
        self.n_ff = n_ff

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.down(self.act(self.gate_up(x), self.n_ff))  # the fused output: gate | up per row


class FeedForward:
    """``down(gelu(up(x)))`` with biases, no gate (starcoder2's MLP)."""

    def __init__(self, w: Weights, prefix: str, n_embd: int, n_ff: int):
        self.up = w.linear(f"{prefix}.ffn_up", n_embd, n_ff, bias=True)
        self.down = w.linear(f"{prefix}.ffn_down", n_ff, n_embd, bias=True)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.down(gelu(self.up(x)))


class MixtureOfExperts:
    """A routed feed-forward (Mixtral, Qwen3-MoE), as llama.cpp's build_moe_ffn computes it: the
    router's softmax over ``n_expert`` experts, the ``n_used`` most probable kept and their
    probabilities renormalised to sum to one, each kept expert's SwiGLU feed-forward weighted by
    its probability, and the weighted outputs summed.

    The expert weights are 3-D tensors (n_embd, n_ff, n_expert); each expert is one slice of
    them, with its own kernel. Tokens are grouped by expert, so an expert runs once per batch
    on the rows that chose it.
    """

    def __init__(self, w: Weights, prefix: str, n_embd: int, n_ff: int, n_expert: int, n_used: int,
                 weights_scale: float = 0.0):
        if not 0 < n_used <= n_expert:
            raise GGUFError(f"{n_used} experts used per token out of {n_expert} is impossible", w.gguf.path)
        self.router = w.linear(f"{prefix}.ffn_gate_inp", n_embd, n_expert)
        self.n_used = n_used
        self.weights_scale = weights_scale
        gates = w.expert_slices(f"{prefix}.ffn_gate_exps.weight", n_embd, n_ff, n_expert)
        ups = w.expert_slices(f"{prefix}.ffn_up_exps.weight", n_embd, n_ff, n_expert)
        downs = w.expert_slices(f"{prefix}.ffn_down_exps.weight", n_ff, n_embd, n_expert)
        self.experts = [(w.fused_tensors([g, u], [None, None]), w.fused_tensors([d], [None]))
                        for g, u, d in zip(gates, ups, downs)]
        for gate_up, down in self.experts:
            gate_up.as_expert()
            down.as_expert()

    def route(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each token, the chosen experts (most probable first) and their weights."""
        probs = softmax(self.router(x))  # ggml_soft_max, as the kernel family's build computes it
        chosen = np.argsort(-probs, axis=1, kind="stable")[:, :self.n_used]
        weights = np.take_along_axis(probs, chosen, axis=1)
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), np.float32(6.103515625e-5))
        if self.weights_scale not in (0.0, 1.0):
            weights *= np.float32(self.weights_scale)
        return chosen, weights.astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        chosen, weights = self.route(x)
        per_slot = np.empty((self.n_used,) + x.shape, np.float32)
        for e in np.unique(chosen):
            rows, slot = np.nonzero(chosen == e)
            gate_up, down = self.experts[int(e)]
            y = gate_up(x[rows])
            per_slot[slot, rows] = down(swiglu(y, y.shape[1] // 2)) * weights[rows, slot][:, None]
        out = per_slot[0]
        for k in range(1, self.n_used):  # summed slot by slot, most probable expert first, as ggml adds them
            out = out + per_slot[k]
        return out

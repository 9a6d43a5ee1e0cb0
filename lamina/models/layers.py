"""Building blocks shared by the architectures: norms, rotary embeddings, activations.

Each follows the ggml operation llama.cpp's graphs use, including where ggml
rounds through float16 (GELU's lookup table), so lamina's logits land close to
llama.cpp's. The arithmetic runs in compiled passes (:mod:`lamina.kernels.elementwise`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamina.kernels.elementwise import layer_norm_rows, rms_norm_rows, rope_cache, rope_rows
from lamina.kernels.glu import geglu_rows, gelu_rows, softmax_rows, swiglu_rows


def rms_norm(x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    """ggml_rms_norm then ggml_mul: ``x / sqrt(mean(x²) + eps) * weight`` over the last axis.

    The mean of squares is accumulated in double precision, as ggml does.
    """
    rows = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
    out = np.empty_like(rows)
    w = np.ones(x.shape[-1], np.float32) if weight is None else weight
    rms_norm_rows(rows, w, float(eps), out)
    return out.reshape(x.shape)


def layer_norm(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float) -> np.ndarray:
    """ggml_norm (mean and variance over the last axis), then the optional scale and shift, with
    ggml's arithmetic (see ``layer_norm_rows``)."""
    n = x.shape[-1]
    rows = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, n)
    out = np.empty_like(rows)
    w = np.ones(n, np.float32) if weight is None else np.asarray(weight, np.float32)
    b = np.zeros(n, np.float32) if bias is None else np.asarray(bias, np.float32)
    layer_norm_rows(rows, w, b, float(eps), out)
    return out.reshape(x.shape)


def swiglu(gate_up: np.ndarray, n_ff: int) -> np.ndarray:
    """SiLU-gated feed-forward activation (llama, qwen2): ``gate / (1 + exp(-gate)) * up``, from a
    fused gate/up output whose rows are ``n_ff`` gate values then ``n_ff`` up values."""
    gate_up = np.ascontiguousarray(gate_up, dtype=np.float32)
    out = np.empty((gate_up.shape[0], n_ff), np.float32)
    swiglu_rows(gate_up, n_ff, out)
    return out


def gelu(x: np.ndarray) -> np.ndarray:
    """ggml_gelu (float16 table, as ggml_vec_gelu_f32)."""
    x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
    out = np.empty_like(x2)
    gelu_rows(x2, out)
    return out.reshape(x.shape)


def softmax(x: np.ndarray) -> np.ndarray:
    """ggml_soft_max over the last axis (a mixture of experts' router): exp(x - max) / sum."""
    return softmax_rows(np.ascontiguousarray(x, dtype=np.float32))


def geglu(gate_up: np.ndarray, n_ff: int) -> np.ndarray:
    """GELU-gated feed-forward activation (gemma): ``gelu(gate) * up``, as ggml_vec_geglu_f32, from a
    fused gate/up output as :func:`swiglu` takes it."""
    gate_up = np.ascontiguousarray(gate_up, dtype=np.float32)
    out = np.empty((gate_up.shape[0], n_ff), np.float32)
    geglu_rows(gate_up, n_ff, out)
    return out


@dataclass(frozen=True)
class RopeConfig:
    """Rotary position embedding settings, as ggml_rope_ext takes them.

    ``neox`` selects the layout: rotate the two halves of the head (GPT-NeoX, qwen2,
    gemma) or adjacent pairs (original llama). ``freq_factors`` (llama 3's
    ``rope_freqs.weight``) divide each frequency.
    """

    n_rot: int
    base: float
    neox: bool
    freq_scale: float = 1.0
    freq_factors: np.ndarray | None = None
    ext_factor: float = 0.0  # YaRN
    attn_factor: float = 1.0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    n_ctx_orig: int = 0

    def cos_sin(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """cos and sin tables of shape (len(positions), n_rot // 2), computed as ggml's rope cache."""
        half = self.n_rot // 2
        cos = np.empty((len(positions), half), np.float32)
        sin = np.empty((len(positions), half), np.float32)
        factors = np.zeros(0, np.float32) if self.freq_factors is None else self.freq_factors.astype(np.float32)
        low, high = self._yarn_corr_dims() if self.ext_factor != 0.0 else (0.0, 0.0)
        rope_cache(np.asarray(positions, np.int64), float(self.base), self.n_rot, float(self.freq_scale), factors,
                   float(self.ext_factor), float(low), float(high), float(self.attn_factor), cos, sin)
        return cos, sin

    def _yarn_corr_dims(self) -> tuple[float, float]:
        def corr_dim(n_rot_frac):
            return self.n_rot * np.log(self.n_ctx_orig / (n_rot_frac * 2 * np.pi)) / (2 * np.log(self.base))

        low = max(0.0, np.floor(corr_dim(self.beta_fast)))
        high = min(self.n_rot - 1.0, np.ceil(corr_dim(self.beta_slow)))
        return low, high


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, n_rot: int, neox: bool) -> np.ndarray:
    """Rotate the first ``n_rot`` values of each head of ``x`` (tokens, heads, head_dim) in place:
    pairs (i, i + n_rot/2) in the NeoX layout, (2i, 2i + 1) otherwise."""
    rope_rows(x, cos, sin, n_rot, neox)
    return x

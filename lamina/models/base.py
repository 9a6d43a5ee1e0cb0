"""What every architecture shares: reading hyperparameters and weights from a GGUF file,
and the embed → blocks → norm → output skeleton of a decoder-only transformer.

Hyperparameters come only from the file's ``<arch>.*`` metadata; a missing or
impossible value, or a tensor that is absent or of the wrong shape, is a
:class:`~lamina.gguf.GGUFError` that names it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamina.engine.kv_cache import LayerKVShape
from lamina.gguf import GGUFError, GGUFFile, TensorInfo
from lamina.kernels import Linear, embedding_rows, fused_linear
from lamina.quants import dequantize


@dataclass(frozen=True)
class AttentionShape:
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int


class HParams:
    """Typed, validated access to ``<arch>.<name>`` metadata."""

    def __init__(self, gguf: GGUFFile, arch: str):
        self.gguf = gguf
        self.arch = arch

    def key(self, name: str) -> str:
        return f"{self.arch}.{name}"

    def int(self, name: str, default=None, minimum: int = 1) -> int:
        value = self.gguf.get_int(self.key(name), default)
        if value is None:
            raise GGUFError(f"required metadata key {self.key(name)!r} is missing", self.gguf.path)
        if value < minimum:
            raise GGUFError(f"metadata {self.key(name)!r} is {value}, must be at least {minimum}", self.gguf.path)
        return int(value)

    def float(self, name: str, default=None, positive: bool = True) -> float:
        value = self.gguf.get_float(self.key(name), default)
        if value is None:
            raise GGUFError(f"required metadata key {self.key(name)!r} is missing", self.gguf.path)
        if not np.isfinite(value) or (positive and value <= 0):
            raise GGUFError(f"metadata {self.key(name)!r} is {value}, must be a positive number", self.gguf.path)
        return float(value)

    def str(self, name: str, default=None) -> str | None:
        return self.gguf.get_str(self.key(name), default)

    def per_layer_int(self, name: str, n_layer: int, default=None) -> list[int]:
        """A value that may be one integer or an array with one entry per layer (e.g. head_count_kv)."""
        field = self.gguf.fields.get(self.key(name))
        if field is not None and field.element_type is not None:
            values = [int(v) for v in self.gguf.get_array(self.key(name), element="int")]
            if len(values) != n_layer:
                raise GGUFError(f"metadata {self.key(name)!r} has {len(values)} entries for {n_layer} layers",
                                self.gguf.path)
            return values
        return [self.int(name, default)] * n_layer


class Weights:
    """Tensors of a model, looked up by name with their expected ggml shapes checked."""

    def __init__(self, gguf: GGUFFile):
        self.gguf = gguf
        self.tensors = gguf.tensors

    def has(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str, shape: tuple[int, ...] | None = None, required: bool = True) -> TensorInfo | None:
        t = self.tensors.get(name)
        if t is None:
            if required:
                raise GGUFError(f"tensor {name!r} is missing", self.gguf.path)
            return None
        if shape is not None and tuple(t.shape) != tuple(shape):
            raise GGUFError(f"tensor {name!r} has shape {list(t.shape)}, expected {list(shape)}", self.gguf.path)
        return t

    def vector(self, name: str, n: int, required: bool = True) -> np.ndarray | None:
        """A 1-D tensor (norm weight, bias) as float32."""
        t = self.get(name, (n,), required)
        return None if t is None else dequantize(t.data, t.type, (n,))

    def linear(self, name: str, n_in: int, n_out: int, bias: bool = False) -> Linear:
        """``<name>.weight`` (and ``<name>.bias`` when present and asked for) as a Linear layer."""
        return self.fused([name], n_in, [n_out], bias)

    def fused(self, names: list[str], n_in: int, n_outs: list[int], bias: bool = False):
        """Several projections of the same input as one layer (its output is their concatenation)."""
        weights = [self.get(f"{name}.weight", (n_in, n_out)) for name, n_out in zip(names, n_outs)]
        biases = [self.vector(f"{name}.bias", n_out, required=False) if bias else None
                  for name, n_out in zip(names, n_outs)]
        return self.fused_tensors(weights, biases)

    def fused_tensors(self, weights: list[TensorInfo], biases: list[np.ndarray | None]):
        """:meth:`fused` for tensors already looked up (expert slices among them)."""
        layer = fused_linear(weights, biases)
        if layer.owns_copy:  # the kernels keep their own copy: let the file's pages go
            for w in weights:
                self.gguf.release(w)
        return layer

    def expert_slices(self, name: str, n_in: int, n_out: int, n_expert: int) -> list[TensorInfo]:
        """A mixture-of-experts tensor (n_in, n_out, n_expert) as one 2-D weight per expert."""
        t = self.get(name, (n_in, n_out, n_expert))
        size = t.n_bytes // n_expert
        return [TensorInfo(f"{name}[{e}]", (n_in, n_out), t.type, t.offset + e * size, t.data[e])
                for e in range(n_expert)]


class DecoderModel:
    """A decoder-only transformer: subclasses build ``self.blocks`` and set the fields below."""

    arch: str = ""

    def __init__(self, gguf: GGUFFile):
        self.gguf = gguf
        self.hp = HParams(gguf, self.arch)
        self.weights = Weights(gguf)
        self.n_layer = self.hp.int("block_count")
        self.n_embd = self.hp.int("embedding_length")
        self.n_ctx_train = self.hp.int("context_length", default=2048)
        tok = self.weights.get("token_embd.weight")
        if len(tok.shape) != 2 or tok.shape[0] != self.n_embd:
            raise GGUFError(f"token_embd.weight has shape {list(tok.shape)}, expected [{self.n_embd}, n_vocab]",
                            gguf.path)
        self.token_embd = tok
        self.n_vocab = int(tok.shape[1])
        self.output_norm = self.weights.vector("output_norm.weight", self.n_embd)
        # no output tensor: the embeddings are tied
        name = "output" if self.weights.has("output.weight") else "token_embd"
        self.output = self.weights.linear(name, self.n_embd, self.n_vocab, bias=True)
        self._check_block_count()

    def _check_block_count(self) -> None:
        present = {int(name.split(".")[1]) for name in self.weights.tensors
                   if name.startswith("blk.") and name.split(".")[1].isdigit()}
        if present and (max(present) + 1 != self.n_layer or len(present) != self.n_layer):
            raise GGUFError(f"{self.arch}.block_count is {self.n_layer} but the file has tensors for "
                            f"{len(present)} blocks (blk.{min(present)} to blk.{max(present)})", self.gguf.path)

    def read_attention_shapes(self) -> list[AttentionShape]:
        """Each layer's attention shape, as llama.cpp's loader reads it: ``attention.head_count`` and
        ``head_count_kv`` (one value, or one per layer), ``key_length``/``value_length`` (default
        n_embd / n_head). Subclasses keep the result in ``self.attn_shapes``."""
        hp = self.hp
        n_head = hp.per_layer_int("attention.head_count", self.n_layer)
        n_head_kv = hp.per_layer_int("attention.head_count_kv", self.n_layer, default=n_head[0])
        head_dim_k = hp.int("attention.key_length", default=self.n_embd // n_head[0])
        head_dim_v = hp.int("attention.value_length", default=self.n_embd // n_head[0])
        shapes = []
        for h, hkv in zip(n_head, n_head_kv):
            if h % hkv:
                raise ValueError(f"{self.arch}: {h} attention heads cannot share {hkv} key/value heads")
            shapes.append(AttentionShape(self.n_embd, h, hkv, head_dim_k, head_dim_v))
        return shapes

    def kv_shapes(self) -> list[LayerKVShape]:
        """The KV cache each layer needs (from ``self.attn_shapes``)."""
        return [LayerKVShape(s.n_head_kv, s.head_dim_k, s.head_dim_v) for s in self.attn_shapes]

    # -- what subclasses provide ---------------------------------------------------------

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        return embedding_rows(self.token_embd, tokens)

    def final_norm(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- the forward pass --------------------------------------------------------------------
    def forward(self, tokens: np.ndarray, state, output_rows: np.ndarray) -> np.ndarray:
        """Logits (len(output_rows), n_vocab) for the batch ``tokens`` described by ``state``."""
        return self.output(self.hidden(tokens, state, output_rows))

    def hidden(self, tokens: np.ndarray, state, output_rows: np.ndarray) -> np.ndarray:
        """The output rows' final hidden states (after the output norm): llama.cpp's embeddings."""
        x = self.embed(tokens)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, state, i, output_rows if i == last else None)
        # the last block already kept only the output rows
        return self.final_norm(x)

    def rerope(self, layer: int, keys: np.ndarray, positions: np.ndarray, delta: int) -> np.ndarray:
        """Rotate cached keys (n_kv_head, n, head_dim) of ``layer`` by ``delta`` positions (context shift)."""
        from .layers import apply_rope

        cfg = self.blocks[layer].attn.rope
        cos, sin = cfg.cos_sin(np.full(len(positions), delta))
        x = np.ascontiguousarray(keys.transpose(1, 0, 2))
        apply_rope(x, cos, sin, cfg.n_rot, cfg.neox)
        return x.transpose(1, 0, 2)


def rope_from_metadata(hp: HParams, n_rot: int, neox: bool, base: float | None = None,
                       freq_factors: np.ndarray | None = None):
    """Rotary settings from ``<arch>.rope.*``: base frequency, linear or YaRN scaling."""
    from .layers import RopeConfig

    scaling = hp.str("rope.scaling.type", "none") or "none"
    factor = hp.gguf.get_float(hp.key("rope.scaling.factor"), None)
    if factor is None:
        factor = hp.gguf.get_float(hp.key("rope.scale_linear"), 0.0)
    if scaling not in ("none", "linear", "yarn"):
        raise GGUFError(f"{hp.key('rope.scaling.type')} {scaling!r} is not supported (none, linear, yarn)", hp.gguf.path)
    freq_scale = 1.0 if not factor or scaling == "none" else 1.0 / factor
    return RopeConfig(
        n_rot=n_rot,
        base=hp.float("rope.freq_base", 10000.0) if base is None else base,
        neox=neox,
        freq_scale=freq_scale,
        freq_factors=freq_factors,
        ext_factor=1.0 if scaling == "yarn" else 0.0,
        attn_factor=hp.gguf.get_float(hp.key("rope.scaling.attn_factor"), 1.0),
        n_ctx_orig=hp.gguf.get_int(hp.key("rope.scaling.original_context_length"), None) or hp.int("context_length", 2048),
    )

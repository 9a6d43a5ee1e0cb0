"""Random-weight encoder models in the shapes of real embedding files, for tests and benchmarks.

Each model is fully determined by its name: the same arrays on every machine (NumPy's PCG64
normal draws from a fixed seed), with the WordPiece tokenizer of llama.cpp's
``ggml-vocab-bert-bge.gguf`` (``../shared/refdata/vocab``), as BGE and all-MiniLM have it.

* ``bert``: BGE / all-MiniLM / mxbai's layout: token, token-type and learned position
  embeddings, post-norm blocks with biased q/k/v, GELU feed-forward;
* ``nomic-bert``: nomic-embed-text's: one fused ``attn_qkv``, rotary embeddings (NeoX), SwiGLU,
  no biases, no position embeddings;
* ``jina-bert-v2``: jina-embeddings-v2-base-en's: no position embeddings (ALiBi instead), biased
  q/k/v, a GEGLU feed-forward whose ``ffn_up`` holds gate and up;
* ``bert-rerank``: ``bert`` with bge-reranker's classification head (``cls``, ``cls.output``) and
  ``pooling_type`` rank.
* ``bert-base``: ``bert`` at bge-base's size (768 wide, 12 layers, 110M parameters), for the
  throughput benchmark.

``tests/data/make_llamacpp_encoder_embeddings.py`` writes the same models with llama.cpp's own
``gguf`` package and asks the reference llama-server for their embeddings; the tests write them
with :func:`write_encoder_model` and check each tensor's bytes against the reference's hashes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from lamina.gguf import MetadataValue, ValueType
from lamina.gguf.writer import tensor_from_array, write
from lamina.testing.models import shared_dir


@dataclass(frozen=True)
class EncoderSpec:
    arch: str
    n_embd: int
    n_head: int
    n_ff: int
    n_layer: int
    pooling: int          # the file's <arch>.pooling_type (1 mean, 2 cls, 4 rank)
    seed: int
    rerank: bool = False
    n_ctx: int = 512
    weight_type: str = "F16"


SPECS = {
    "bert": EncoderSpec("bert", 128, 4, 512, 2, pooling=1, seed=1),
    "nomic-bert": EncoderSpec("nomic-bert", 128, 4, 384, 2, pooling=1, seed=2),
    "jina-bert-v2": EncoderSpec("jina-bert-v2", 128, 4, 256, 2, pooling=1, seed=5),
    "bert-rerank": EncoderSpec("bert", 128, 4, 512, 2, pooling=4, seed=3, rerank=True),
    "bert-base": EncoderSpec("bert", 768, 12, 3072, 12, pooling=2, seed=4),
}

VOCAB_FILE = "refdata/vocab/ggml-vocab-bert-bge.gguf"


def _u32(v: int) -> MetadataValue:
    return MetadataValue(int(v), ValueType.UINT32)


def _f32(v: float) -> MetadataValue:
    return MetadataValue(float(v), ValueType.FLOAT32)


def encoder_metadata(name: str) -> dict[str, MetadataValue]:
    """The model's metadata, each value with its GGUF type, in the order it is written."""
    from lamina.gguf import read

    s = SPECS[name]
    a = s.arch
    meta = {
        "general.architecture": MetadataValue(a, ValueType.STRING),
        "general.name": MetadataValue(f"tiny-{name}", ValueType.STRING),
        f"{a}.context_length": _u32(s.n_ctx),
        f"{a}.embedding_length": _u32(s.n_embd),
        f"{a}.feed_forward_length": _u32(s.n_ff),
        f"{a}.block_count": _u32(s.n_layer),
        f"{a}.attention.head_count": _u32(s.n_head),
        f"{a}.attention.layer_norm_epsilon": _f32(1e-12),
        f"{a}.attention.causal": MetadataValue(False, ValueType.BOOL),
        f"{a}.pooling_type": _u32(s.pooling),
    }
    if a == "nomic-bert":
        meta[f"{a}.rope.freq_base"] = _f32(1000.0)
    if s.rerank:
        meta[f"{a}.classifier.output_labels"] = MetadataValue(["score"], ValueType.ARRAY, ValueType.STRING)
    vocab = read(os.path.join(shared_dir(), VOCAB_FILE))
    for key in vocab.metadata:
        if key.startswith("tokenizer."):
            meta[key] = vocab.metadata.typed(key)
    return meta


def encoder_arrays(name: str) -> list[tuple[str, np.ndarray, str]]:
    """(tensor name, float32 array in NumPy order, GGML type) for every tensor, in file order."""
    from lamina.gguf import read

    s = SPECS[name]
    rng = np.random.default_rng(s.seed)
    n_vocab = len(read(os.path.join(shared_dir(), VOCAB_FILE)).metadata["tokenizer.ggml.tokens"])
    e, f = s.n_embd, s.n_ff

    def normal(*shape, scale=1.0):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)).astype(np.float32)

    def matrix(n_out, n_in):
        return normal(n_out, n_in, scale=1.0 / np.sqrt(n_in)), s.weight_type

    def norm_pair(prefix):
        return [(f"{prefix}.weight", 1.0 + normal(e, scale=0.1), "F32"), (f"{prefix}.bias", normal(e, scale=0.05),
                                                                          "F32")]

    out = [("token_embd.weight", normal(n_vocab, e, scale=0.5), s.weight_type),
           ("token_types.weight", normal(2, e, scale=0.1), "F32")]
    if s.arch == "bert":
        out.append(("position_embd.weight", normal(s.n_ctx, e, scale=0.1), "F32"))
    out += norm_pair("token_embd_norm")
    for i in range(s.n_layer):
        p = f"blk.{i}"
        if s.arch == "nomic-bert":
            out.append((f"{p}.attn_qkv.weight", *matrix(3 * e, e)))
            out.append((f"{p}.attn_output.weight", *matrix(e, e)))
        else:
            for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
                out.append((f"{p}.{part}.weight", *matrix(e, e)))
                out.append((f"{p}.{part}.bias", normal(e, scale=0.05), "F32"))
        out += norm_pair(f"{p}.attn_output_norm")
        if s.arch == "nomic-bert":
            out.append((f"{p}.ffn_up.weight", *matrix(f, e)))
            out.append((f"{p}.ffn_gate.weight", *matrix(f, e)))
            out.append((f"{p}.ffn_down.weight", *matrix(e, f)))
        elif s.arch == "jina-bert-v2":  # gate and up in one tensor, GEGLU
            out.append((f"{p}.ffn_up.weight", *matrix(2 * f, e)))
            out.append((f"{p}.ffn_up.bias", normal(2 * f, scale=0.05), "F32"))
            out.append((f"{p}.ffn_down.weight", *matrix(e, f)))
            out.append((f"{p}.ffn_down.bias", normal(e, scale=0.05), "F32"))
        else:
            out.append((f"{p}.ffn_up.weight", *matrix(f, e)))
            out.append((f"{p}.ffn_up.bias", normal(f, scale=0.05), "F32"))
            out.append((f"{p}.ffn_down.weight", *matrix(e, f)))
            out.append((f"{p}.ffn_down.bias", normal(e, scale=0.05), "F32"))
        out += norm_pair(f"{p}.layer_output_norm")
    if s.rerank:
        out.append(("cls.weight", *matrix(e, e)))
        out.append(("cls.bias", normal(e, scale=0.05), "F32"))
        out.append(("cls.output.weight", *matrix(1, e)))
        out.append(("cls.output.bias", normal(1, scale=0.05), "F32"))
    return out


def tensor_digests(name: str) -> dict[str, str]:
    """sha256 of each tensor's stored bytes, as the reference records them."""
    return {t.name: hashlib.sha256(np.ascontiguousarray(t.data).tobytes()).hexdigest()
            for t in (tensor_from_array(n, a, ty) for n, a, ty in encoder_arrays(name))}


def write_encoder_model(name: str, path: str | os.PathLike) -> str:
    """Write the model to ``path`` (atomically) and return the path."""
    tensors = [tensor_from_array(n, a, ty) for n, a, ty in encoder_arrays(name)]
    write(path, encoder_metadata(name), tensors)
    return os.fspath(path)

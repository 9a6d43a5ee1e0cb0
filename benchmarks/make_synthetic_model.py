"""A 7B-class GGUF of random weights in a real model's shapes, for measuring speed and memory at scale.

    python benchmarks/make_synthetic_model.py OUT.gguf [--shape mistral-7b|tiny]

``mistral-7b`` is Mistral-7B's blocks (4096 wide, 32 layers, 32 query and 8 key/value heads of 128,
feed-forward 14336, a 32,000-token vocabulary) in Q4_K_M's types: Q4_K, with Q6_K for attn_v,
ffn_down and the output matrix; norms in F32. ``tiny`` is the same recipe 256 wide, for trying the
script. The weights are random blocks, not quantized floats: scales are small float16 values (so
activations stay in range through the layers) and the codes random bytes, which is what a kernel
reads either way; generating 4.4 GB this way takes seconds, not the minutes quantizing would. The
vocabulary is a SentencePiece-style list (``<unk>``, ``<s>``, ``</s>``, the 256 byte tokens, then
``▁tok<i>``), enough for llama.cpp and lamina to load the file; the benchmarks feed random token ids.
The file is written by lamina's GGUF writer, one tensor at a time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lamina.gguf.constants import ValueType
from lamina.gguf.reader import MetadataValue
from lamina.gguf.types import ggml_type
from lamina.gguf.writer import DeferredTensor, write

SHAPES = {  # width, layers, heads, kv heads, head size, feed-forward, vocabulary
    "mistral-7b": (4096, 32, 32, 8, 128, 14336, 32000),
    "tiny": (256, 2, 4, 2, 64, 512, 1024),
}


def _blocks(type_name: str, rows: int, n: int, seed: int) -> np.ndarray:
    """Random blocks of a Q4_K/Q6_K weight: random code bytes, small positive float16 scales."""
    gtype = ggml_type(type_name)
    nb = n // gtype.block_size
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(rows, nb, gtype.type_size), dtype=np.uint8)
    if type_name == "Q4_K":  # d, dmin (f16) first; 12 bytes of 6-bit scales and mins
        raw[:, :, 0:2] = np.array([2e-5], np.float16).view(np.uint8)
        raw[:, :, 2:4] = np.array([1e-5], np.float16).view(np.uint8)
    elif type_name == "Q6_K":  # 16 int8 scales, then d (f16) last
        raw[:, :, 192:208] = rng.integers(-32, 32, size=(rows, nb, 16), dtype=np.int8).view(np.uint8)
        raw[:, :, 208:210] = np.array([2e-4], np.float16).view(np.uint8)
    else:
        raise ValueError(type_name)
    return raw.reshape(-1)


def tensors(shape: str) -> list[DeferredTensor]:
    width, layers, heads, kv_heads, head, ff, vocab = SHAPES[shape]
    plan = [("token_embd.weight", "Q4_K", width, vocab)]
    for b in range(layers):
        plan += [(f"blk.{b}.attn_norm.weight", "F32", width, 1), (f"blk.{b}.attn_q.weight", "Q4_K", width, heads * head),
                 (f"blk.{b}.attn_k.weight", "Q4_K", width, kv_heads * head),
                 (f"blk.{b}.attn_v.weight", "Q6_K", width, kv_heads * head),
                 (f"blk.{b}.attn_output.weight", "Q4_K", heads * head, width),
                 (f"blk.{b}.ffn_norm.weight", "F32", width, 1), (f"blk.{b}.ffn_gate.weight", "Q4_K", width, ff),
                 (f"blk.{b}.ffn_up.weight", "Q4_K", width, ff), (f"blk.{b}.ffn_down.weight", "Q6_K", ff, width)]
    plan += [("output_norm.weight", "F32", width, 1), ("output.weight", "Q6_K", width, vocab)]
    out = []
    for seed, (name, type_name, n, rows) in enumerate(plan):
        if type_name == "F32":
            out.append(DeferredTensor(name, (n,), "F32", lambda n=n: np.ones(n, np.float32)))
        else:
            out.append(DeferredTensor(name, (n, rows), type_name,
                                      lambda t=type_name, r=rows, n=n, s=seed: _blocks(t, r, n, s)))
    return out


def metadata(shape: str, name: str) -> dict:
    width, layers, heads, kv_heads, head, ff, vocab = SHAPES[shape]
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces += [f"\u2581tok{i}" for i in range(vocab - len(pieces))]
    types = [2, 3, 3] + [6] * 256 + [1] * (vocab - 259)
    u32 = lambda v: MetadataValue(v, ValueType.UINT32)  # noqa: E731
    return {
        "general.architecture": "llama", "general.name": name, "general.file_type": u32(15),
        "llama.context_length": u32(32768), "llama.embedding_length": u32(width), "llama.block_count": u32(layers),
        "llama.feed_forward_length": u32(ff), "llama.rope.dimension_count": u32(head),
        "llama.attention.head_count": u32(heads), "llama.attention.head_count_kv": u32(kv_heads),
        "llama.attention.layer_norm_rms_epsilon": MetadataValue(1e-5, ValueType.FLOAT32),
        "llama.rope.freq_base": MetadataValue(1e6, ValueType.FLOAT32), "llama.vocab_size": u32(vocab),
        "general.quantization_version": u32(2),
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": MetadataValue(pieces, ValueType.ARRAY, ValueType.STRING),
        "tokenizer.ggml.scores": MetadataValue(np.linspace(0, -1, vocab, dtype=np.float32), ValueType.ARRAY,
                                               ValueType.FLOAT32),
        "tokenizer.ggml.token_type": MetadataValue(np.array(types, np.int32), ValueType.ARRAY, ValueType.INT32),
        "tokenizer.ggml.bos_token_id": u32(1), "tokenizer.ggml.eos_token_id": u32(2),
        "tokenizer.ggml.unknown_token_id": u32(0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mistral-7b")
    args = parser.parse_args()
    write(args.out, metadata(args.shape, f"synthetic {args.shape}"), tensors(args.shape))
    print(f"{args.out}: {args.out.stat().st_size / 1e9:.2f} GB")


if __name__ == "__main__":
    main()

"""Tiny Hugging Face checkpoints for the converter's tests, made the same way by the tests and by the
script that converted them with llama.cpp (``tests/data/make_convert_references.py``).

Each case is a ``config.json`` (written as the Hub's models write theirs, some leaving keys to
transformers' defaults), the tensors its architecture has in transformers (names and shapes; the
reference script checks them against transformers' own model), random weights drawn from a
seeded NumPy ``RandomState`` (a generator whose stream NumPy keeps stable), and a real tokenizer:
SmolLM2's BPE ``tokenizer.json`` from ``../shared/refdata/convert`` or a small SentencePiece
``tokenizer.model`` kept in ``tests/data/convert``. The safetensors files are written here, so
every byte of a checkpoint is fixed by this file.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "refdata" / "convert"
DATA = Path(__file__).resolve().parent / "data" / "convert"
H, FF, HEADS, KV_HEADS, D, LAYERS = 64, 128, 4, 2, 16, 2
BPE_VOCAB, SPM_VOCAB, QWEN2_VOCAB = 49152, 512, 151936
SMOLLM_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                   "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                   "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                   "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                   "{% endif %}")


def _attention(prefix: str, q_dim: int = HEADS * D, kv_dim: int = KV_HEADS * D, bias: bool = False) -> list:
    out = [(f"{prefix}.self_attn.q_proj.weight", (q_dim, H)), (f"{prefix}.self_attn.k_proj.weight", (kv_dim, H)),
           (f"{prefix}.self_attn.v_proj.weight", (kv_dim, H)), (f"{prefix}.self_attn.o_proj.weight", (H, q_dim))]
    if bias:
        out += [(f"{prefix}.self_attn.q_proj.bias", (q_dim,)), (f"{prefix}.self_attn.k_proj.bias", (kv_dim,)),
                (f"{prefix}.self_attn.v_proj.bias", (kv_dim,))]
    return out


def _mlp(prefix: str) -> list:
    return [(f"{prefix}.mlp.gate_proj.weight", (FF, H)), (f"{prefix}.mlp.up_proj.weight", (FF, H)),
            (f"{prefix}.mlp.down_proj.weight", (H, FF))]


def _layers(per_layer) -> list:
    return [t for b in range(LAYERS) for t in per_layer(f"model.layers.{b}")]


def _embedding(vocab: int, untied: bool = False) -> list:
    return [("model.embed_tokens.weight", (vocab, H)), ("model.norm.weight", (H,))] + \
        ([("lm_head.weight", (vocab, H))] if untied else [])


def _base_config(arch: str, model_type: str, vocab: int, **extra) -> dict:
    config = {"architectures": [arch], "model_type": model_type, "hidden_size": H, "intermediate_size": FF,
              "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "num_hidden_layers": LAYERS,
              "vocab_size": vocab, "max_position_embeddings": 4096, "bos_token_id": 1, "eos_token_id": 2,
              "tie_word_embeddings": True, "torch_dtype": "float32"}
    config.update(extra)
    return {k: v for k, v in config.items() if v is not None}


def _cases() -> dict[str, dict]:
    qwen3moe_experts = 4
    return {
        "qwen2": dict(
            config=_base_config("Qwen2ForCausalLM", "qwen2", QWEN2_VOCAB, rms_norm_eps=1e-6, rope_theta=1000000.0,
                                bos_token_id=151643, eos_token_id=151645),
            tensors=_embedding(QWEN2_VOCAB) + _layers(lambda p: [(f"{p}.input_layernorm.weight", (H,)),
                                                              (f"{p}.post_attention_layernorm.weight", (H,))]
                                                    + _attention(p, bias=True) + _mlp(p)),
            tokenizer="qwen2-bpe", dtype="F32", outtypes=("f16", "q8_0", "bf16")),
        "qwen3moe": dict(
            config=_base_config("Qwen3MoeForCausalLM", "qwen3_moe", BPE_VOCAB, head_dim=D, num_experts=qwen3moe_experts,
                                num_experts_per_tok=2, moe_intermediate_size=64, norm_topk_prob=True,
                                rms_norm_eps=1e-6, decoder_sparse_step=1),
            tensors=_embedding(BPE_VOCAB) + _layers(lambda p: [
                (f"{p}.input_layernorm.weight", (H,)), (f"{p}.post_attention_layernorm.weight", (H,)),
                (f"{p}.self_attn.q_norm.weight", (D,)), (f"{p}.self_attn.k_norm.weight", (D,)),
                (f"{p}.mlp.gate.weight", (qwen3moe_experts, H))] + _attention(p) + [
                (f"{p}.mlp.experts.{e}.{w}.weight", (H, 64) if w == "down_proj" else (64, H))
                for e in range(qwen3moe_experts) for w in ("gate_proj", "up_proj", "down_proj")]),
            tokenizer="bpe", dtype="BF16", outtypes=("auto", "q8_0")),
        "gemma3": dict(
            config=_base_config("Gemma3ForCausalLM", "gemma3_text", SPM_VOCAB, head_dim=D, bos_token_id=2,
                                eos_token_id=1, pad_token_id=0, query_pre_attn_scalar=D, sliding_window=512,
                                rope_local_base_freq=10000.0, rope_theta=1000000.0, rms_norm_eps=1e-6,
                                hidden_activation="gelu_pytorch_tanh"),
            tensors=_embedding(SPM_VOCAB) + _layers(lambda p: [
                (f"{p}.input_layernorm.weight", (H,)), (f"{p}.post_attention_layernorm.weight", (H,)),
                (f"{p}.pre_feedforward_layernorm.weight", (H,)), (f"{p}.post_feedforward_layernorm.weight", (H,)),
                (f"{p}.self_attn.q_norm.weight", (D,)), (f"{p}.self_attn.k_norm.weight", (D,))]
                + _attention(p) + _mlp(p)),
            tokenizer="spm-gemma", dtype="BF16", outtypes=("f16", "q8_0", "bf16")),
        "olmo2": dict(
            config=_base_config("Olmo2ForCausalLM", "olmo2", BPE_VOCAB, rms_norm_eps=1e-6, tie_word_embeddings=False),
            tensors=_embedding(BPE_VOCAB, untied=True) + _layers(lambda p: [
                (f"{p}.post_attention_layernorm.weight", (H,)), (f"{p}.post_feedforward_layernorm.weight", (H,)),
                (f"{p}.self_attn.q_norm.weight", (HEADS * D,)), (f"{p}.self_attn.k_norm.weight", (KV_HEADS * D,))]
                + _attention(p) + _mlp(p)),
            tokenizer="bpe", dtype="F32", outtypes=("f16", "q8_0")),
        "stablelm": dict(
            config=_base_config("StableLmForCausalLM", "stablelm", BPE_VOCAB, layer_norm_eps=1e-5,
                                partial_rotary_factor=0.25, use_qkv_bias=True, qk_layernorm=False,
                                use_parallel_residual=False, tie_word_embeddings=False),
            tensors=[("model.embed_tokens.weight", (BPE_VOCAB, H)), ("model.norm.weight", (H,)),
                     ("model.norm.bias", (H,)), ("lm_head.weight", (BPE_VOCAB, H))] + _layers(lambda p: [
                (f"{p}.input_layernorm.weight", (H,)), (f"{p}.input_layernorm.bias", (H,)),
                (f"{p}.post_attention_layernorm.weight", (H,)), (f"{p}.post_attention_layernorm.bias", (H,))]
                + _attention(p, bias=True) + _mlp(p)),
            tokenizer="bpe", dtype="F16", outtypes=("f16", "q8_0")),
        "starcoder2": dict(
            config=_base_config("Starcoder2ForCausalLM", "starcoder2", BPE_VOCAB, norm_epsilon=1e-5, use_bias=True,
                                hidden_act="gelu_pytorch_tanh"),
            tensors=[("model.embed_tokens.weight", (BPE_VOCAB, H)), ("model.norm.weight", (H,)),
                     ("model.norm.bias", (H,))] + _layers(lambda p: [
                (f"{p}.input_layernorm.weight", (H,)), (f"{p}.input_layernorm.bias", (H,)),
                (f"{p}.post_attention_layernorm.weight", (H,)), (f"{p}.post_attention_layernorm.bias", (H,)),
                (f"{p}.self_attn.o_proj.bias", (H,)),
                (f"{p}.mlp.c_fc.weight", (FF, H)), (f"{p}.mlp.c_fc.bias", (FF,)),
                (f"{p}.mlp.c_proj.weight", (H, FF)), (f"{p}.mlp.c_proj.bias", (H,))] + _attention(p, bias=True)),
            tokenizer="bpe", dtype="F32", outtypes=("f16", "q8_0")),
        "mistral": dict(
            config=_base_config("MistralForCausalLM", "mistral", SPM_VOCAB, rms_norm_eps=1e-5, rope_theta=1000000.0,
                                sliding_window=None, tie_word_embeddings=False, head_dim=None),
            tensors=_embedding(SPM_VOCAB, untied=True) + _layers(lambda p: [
                (f"{p}.input_layernorm.weight", (H,)), (f"{p}.post_attention_layernorm.weight", (H,))]
                + _attention(p) + _mlp(p)),
            tokenizer="spm-llama", dtype="F16", shards=2, outtypes=("f16", "q8_0", "auto")),
        "llama-card": dict(
            config=_base_config("LlamaForCausalLM", "llama", BPE_VOCAB, rms_norm_eps=1e-5, rope_theta=10000.0,
                                _name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct"),
            tensors=_embedding(BPE_VOCAB) + _layers(lambda p: [
                (f"{p}.input_layernorm.weight", (H,)), (f"{p}.post_attention_layernorm.weight", (H,))]
                + _attention(p) + _mlp(p)),
            tokenizer="bpe", dtype="F32", outtypes=("q8_0", "vocab"), model_card=True),
    }


CASES = _cases()
_SEEDS = {name: 1000 + i for i, name in enumerate(CASES)}

MODEL_CARD = """---
license: apache-2.0
language:
- en
- no
tags:
- tiny
- test
base_model:
- HuggingFaceTB/SmolLM2-135M
datasets:
- HuggingFaceTB/smollm-corpus
pipeline_tag: text-generation
---
# A tiny test model

Random weights in SmolLM2's shapes.
"""
METADATA_OVERRIDE = {"general.author": "lamina tests", "general.version": "v1.5", "general.url": "https://example.org"}


def folder_name(case: str) -> str:
    """The folder a case is written to (its name becomes ``general.name``, as for the shared checkpoints)."""
    return f"hf-{case}"


def make_checkpoint(case: str, root: Path, qwen2_vocab: tuple[list, list, list] | None = None) -> Path:
    """Write the checkpoint of ``case`` under ``root``; returns its folder.

    The qwen2 case's tokenizer is Qwen2.5's, rebuilt from the tokens, token types and merges of
    the Qwen2.5-Coder GGUF file the tests run (``qwen2_vocab``), since transformers (and so
    llama.cpp's converter) reads any qwen2 model's tokenizer with Qwen2's own pre-tokenizer."""
    spec = CASES[case]
    folder = Path(root) / folder_name(case)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(spec["config"], indent=2) + "\n")
    generation = {"bos_token_id": spec["config"].get("bos_token_id"), "eos_token_id": spec["config"].get("eos_token_id"),
                  "temperature": 0.7, "top_p": 0.9}
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    _tokenizer_files(spec["tokenizer"], folder, qwen2_vocab)
    if spec.get("model_card"):
        (folder / "README.md").write_text(MODEL_CARD)
        (folder / "metadata.json").write_text(json.dumps(METADATA_OVERRIDE))
    rng = np.random.RandomState(_SEEDS[case])
    arrays = {}
    for name, shape in spec["tensors"]:
        values = rng.standard_normal(shape).astype(np.float32) * np.float32(0.05)
        if name.endswith("norm.weight") or ".norms." in name:
            values += np.float32(1.0)
        arrays[name] = values
    _write_safetensors(folder, arrays, spec["dtype"], spec.get("shards", 1))
    return folder


def _tokenizer_files(kind: str, folder: Path, qwen2_vocab=None) -> None:
    if kind == "qwen2-bpe":
        if qwen2_vocab is None:
            raise ValueError("the qwen2 case needs Qwen2.5's vocabulary (tokens, token types, merges)")
        (folder / "tokenizer.json").write_text(json.dumps(qwen2_tokenizer(*qwen2_vocab), ensure_ascii=False))
        config = {"add_bos_token": False, "add_prefix_space": False, "bos_token": None, "eos_token": "<|im_end|>",
                  "pad_token": "<|endoftext|>", "unk_token": None, "clean_up_tokenization_spaces": False,
                  "errors": "replace", "model_max_length": 32768, "split_special_tokens": False,
                  "tokenizer_class": "Qwen2Tokenizer",
                  "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                                   "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        return
    if kind == "bpe":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(SHARED / "qwen3" / name, folder / name)
        (folder / "chat_template.jinja").write_text(SMOLLM_TEMPLATE)
        return
    shutil.copyfile(DATA / "tokenizer.model", folder / "tokenizer.model")
    if kind == "spm-llama":
        config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
                  "add_eos_token": False, "chat_template": "{{ bos_token }}{% for m in messages %}[INST] "
                                                           "{{ m['content'] }} [/INST]{% endfor %}"}
    else:
        config = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
                  "add_bos_token": True, "add_eos_token": False, "spaces_between_special_tokens": False,
                  "added_tokens_decoder": {"5": {"content": "<start_of_turn>", "special": True},
                                           "6": {"content": "<end_of_turn>", "special": True}}}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")


def qwen2_tokenizer(tokens: list[str], types: list[int], merges: list[str]) -> dict:
    """Qwen2.5's ``tokenizer.json`` from a GGUF's vocabulary: normal tokens are the BPE vocabulary,
    control and user-defined tokens its added tokens (special when control), unused ids left out."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": int(k) == 3} for i, (t, k) in enumerate(zip(tokens, types)) if int(k) in (3, 4)]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
            byte_level]},
        "post_processor": byte_level, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, (t, k) in enumerate(zip(tokens, types)) if int(k) == 1},
                  "merges": list(merges)}}


def _write_safetensors(folder: Path, arrays: dict[str, np.ndarray], dtype: str, shards: int) -> None:
    names = list(arrays)
    if shards == 1:
        _safetensors_file(folder / "model.safetensors", {n: arrays[n] for n in names}, dtype)
        return
    per = -(-len(names) // shards)
    weight_map = {}
    for i in range(shards):
        part = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        chunk = names[i * per:(i + 1) * per]
        _safetensors_file(folder / part, {n: arrays[n] for n in chunk}, dtype)
        weight_map.update({n: part for n in chunk})
    index = {"metadata": {"total_size": sum(a.size * (4 if dtype == "F32" else 2) for a in arrays.values())},
             "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _safetensors_file(path: Path, arrays: dict[str, np.ndarray], dtype: str) -> None:
    """The safetensors format: an 8-byte header length, a JSON header (names sorted, offsets in that order,
    padded with spaces to 8 bytes), then the data."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(arrays):
        blob = _encode(arrays[name], dtype)
        header[name] = {"dtype": dtype, "shape": list(arrays[name].shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def _encode(values: np.ndarray, dtype: str) -> bytes:
    if dtype == "F32":
        return values.astype("<f4").tobytes()
    if dtype == "F16":
        return values.astype("<f2").tobytes()
    bits = values.astype("<f4").view("<u4")
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes()  # BF16, round to nearest even

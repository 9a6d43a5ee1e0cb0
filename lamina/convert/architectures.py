"""Per architecture: how a Hugging Face checkpoint becomes llama.cpp's GGUF model.

One class per architecture family, each saying what ``convert_hf_to_gguf.py`` does for it:
the GGUF architecture, which ``config.json`` values become which ``<arch>.*`` keys, how tensor
names map (``model.layers.3.self_attn.q_proj.weight`` -> ``blk.3.attn_q.weight``) and how
tensors change on the way (llama's q/k permutation back to GGUF's rotary layout, experts
stacked into one 3-D tensor, Gemma's norms stored as ``1 + w``, Llama 3's rope factors).

``config.json`` is read as transformers reads it: a key it leaves out takes the value the
model's configuration class gives it (:data:`CONFIG_DEFAULTS`), because llama.cpp's converter
sees the configuration through transformers and writes, say, ``attention.key_length`` for a
Llama whose ``config.json`` has no ``head_dim``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .checkpoint import ConvertError, read_json_file
from .keys import KeyValues
from .lazy import Lazy, constant, stack
from .vocab import SpecialTokens, sentencepiece_tokens, write_bpe_vocab, write_sentencepiece_vocab

# Values transformers' configuration classes give keys a config.json leaves out (transformers 5,
# the version behind the references), for the keys the conversion reads. "=heads" means the
# number of attention heads, "=hidden/heads" the hidden size divided by it.
CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"head_dim": "=hidden/heads", "num_key_value_heads": "=heads", "rope_theta": 10000.0,
              "rms_norm_eps": 1e-6, "max_position_embeddings": 2048},
    "mistral": {"head_dim": "=hidden/heads", "num_key_value_heads": 8, "rope_theta": 10000.0,
                "rms_norm_eps": 1e-6, "max_position_embeddings": 131072},
    "mixtral": {"num_key_value_heads": 8, "rope_theta": 1e6, "rms_norm_eps": 1e-5,
                "max_position_embeddings": 131072, "num_local_experts": 8, "num_experts_per_tok": 2},
    "granite": {"num_key_value_heads": "=heads", "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
                "max_position_embeddings": 2048, "attention_multiplier": 1.0, "embedding_multiplier": 1.0,
                "residual_multiplier": 1.0, "logits_scaling": 1.0},
    "qwen2": {"num_key_value_heads": 32, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
              "max_position_embeddings": 32768},
    "qwen3": {"head_dim": 128, "num_key_value_heads": 32, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
              "max_position_embeddings": 32768},
    "qwen3_moe": {"num_key_value_heads": 4, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
                  "max_position_embeddings": 32768, "moe_intermediate_size": 768, "num_experts_per_tok": 8,
                  "num_experts": 128},
    "gemma3_text": {"head_dim": 256, "num_key_value_heads": 4, "rope_theta": 1e6, "rope_local_base_freq": 10000.0,
                    "rms_norm_eps": 1e-6, "max_position_embeddings": 131072, "sliding_window": 4096},
    "olmo2": {"num_key_value_heads": "=heads", "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
              "max_position_embeddings": 2048},
    "stablelm": {"num_key_value_heads": 32, "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                 "layer_norm_eps": 1e-5, "max_position_embeddings": 4096, "use_parallel_residual": False},
    "starcoder2": {"num_key_value_heads": 2, "rope_theta": 10000.0, "norm_epsilon": 1e-5,
                   "max_position_embeddings": 4096},
}

# Tensors the converter drops before mapping names, and the prefixes of multimodal towers it skips.
_DROPPED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")
_MULTIMODAL = ("vision_tower.", "multi_modal_projector.", "vision_model.", "visual.", "audio_tower.")

# HF name (without .weight/.bias) -> GGUF name, for the llama family; {b} is the block number.
_LLAMA_NAMES = {
    "model.embed_tokens": "token_embd", "lm_head": "output", "model.norm": "output_norm",
    "model.layers.{b}.input_layernorm": "blk.{b}.attn_norm",
    "model.layers.{b}.self_attn.q_proj": "blk.{b}.attn_q", "model.layers.{b}.self_attn.k_proj": "blk.{b}.attn_k",
    "model.layers.{b}.self_attn.v_proj": "blk.{b}.attn_v",
    "model.layers.{b}.self_attn.o_proj": "blk.{b}.attn_output",
    "model.layers.{b}.post_attention_layernorm": "blk.{b}.ffn_norm",
    "model.layers.{b}.mlp.gate_proj": "blk.{b}.ffn_gate", "model.layers.{b}.mlp.up_proj": "blk.{b}.ffn_up",
    "model.layers.{b}.mlp.down_proj": "blk.{b}.ffn_down",
}
_QK_NORMS = {"model.layers.{b}.self_attn.q_norm": "blk.{b}.attn_q_norm",
             "model.layers.{b}.self_attn.k_norm": "blk.{b}.attn_k_norm"}


class Converter:
    """What llama.cpp's ``TextModel`` does for every architecture; subclasses add their own."""

    gguf_arch: str
    hf_architectures: tuple[str, ...] = ()
    names: dict[str, str] = _LLAMA_NAMES
    f32_tensors: tuple[str, ...] = ()  # GGUF names (no .weight) always kept in F32, as ffn_gate_inp

    def __init__(self, folder: Path, config: dict[str, Any]):
        self.folder = folder
        self.config = config
        hparams = dict(config)
        if isinstance(hparams.get("text_config"), dict):
            hparams = {**hparams, **hparams["text_config"]}
        self.hparams = _with_defaults(hparams)
        self.hf_arch = (config.get("architectures") or [""])[0]
        self.block_count = int(self.find(["n_layers", "num_hidden_layers", "n_layer", "num_layers"]))
        self.rope = _rope_parameters(self.hparams)
        self._table = {hf.format(b=b): gg.format(b=b) for hf, gg in self.names.items()
                       for b in (range(self.block_count) if "{b}" in hf else (0,))}
        self._table.update({gg: gg for gg in list(self._table.values())})  # GGUF names map to themselves

    def find(self, keys: Iterable[str], optional: bool = False) -> Any:
        for k in keys:
            if k in self.hparams:
                return self.hparams[k]
        if optional:
            return None
        raise ConvertError(f"{self.folder / 'config.json'}: none of {', '.join(keys)} is given")

    # -- tensors ------------------------------------------------------------------------------
    def map_name(self, name: str) -> str:
        if name in self._table:
            return self._table[name]
        for suffix in (".weight", ".bias"):
            if name.endswith(suffix) and name[:-len(suffix)] in self._table:
                return self._table[name[:-len(suffix)]] + suffix
        raise ConvertError(f"tensor {name!r} has no place in a {self.gguf_arch} model (llama.cpp's converter "
                           "cannot map it either)")

    def keeps(self, name: str) -> bool:
        """Whether a checkpoint tensor is converted at all."""
        return not name.endswith(_DROPPED_SUFFIXES) and not name.startswith(_MULTIMODAL)

    def rename(self, name: str) -> str:
        """Names as the converter sees them before mapping."""
        name = name.replace("e_score_correction_bias", "e_score_correction.bias")
        return name.replace("language_model.", "")

    def extra_tensors(self) -> Iterator[tuple[str, Lazy]]:
        return iter(())

    def modify(self, lazy: Lazy, name: str, bid: int | None) -> Iterator[tuple[str, Lazy]]:
        yield self.map_name(name), lazy

    def finish(self) -> None:
        """Called after the last tensor: a tensor held back for stacking and never used is an error."""

    def always_f32(self, new_name: str) -> bool:
        """Tensors llama.cpp keeps in F32 whatever the output type (an expert router, ``ffn_gate_inp``)."""
        return new_name.rsplit(".", 1)[0].split(".")[-1] in self.f32_tensors

    # -- metadata -----------------------------------------------------------------------------
    def set_parameters(self, kv: KeyValues, file_type: int) -> None:
        """``TextModel.set_gguf_parameters``: the keys every architecture shares."""
        k = kv.key
        kv.u32(k("block_count"), self.block_count)
        n_ctx = self.find(["max_position_embeddings", "n_ctx", "n_positions", "max_length", "max_sequence_length",
                           "model_max_length"], optional=True)
        if n_ctx is not None:
            kv.u32(k("context_length"), n_ctx)
        if (n_embd := self.find(["hidden_size", "n_embd", "dim"], optional=True)) is not None:
            kv.u32(k("embedding_length"), n_embd)
        n_ff = self.find(["prefix_dense_intermediate_size", "dense_intermediate_size", "intermediate_size", "n_inner",
                          "hidden_dim"], optional=True)
        if n_ff is not None:
            kv.count_or_list(k("feed_forward_length"), n_ff)
        if (n_head := self.find(["num_attention_heads", "n_head", "n_heads"], optional=True)) is not None:
            kv.count_or_list(k("attention.head_count"), n_head)
        if (n_head_kv := self.find(["num_key_value_heads", "n_kv_heads"], optional=True)) is not None:
            kv.count_or_list(k("attention.head_count_kv"), n_head_kv)
        if self.hparams.get("is_causal") is False:
            kv.boolean(k("attention.causal"), False)
        rope = self.rope.get("full_attention", self.rope)
        self._rope_scaling(kv, rope)
        if (theta := rope.get("rope_theta")) is not None:
            kv.f32(k("rope.freq_base"), theta)
        if (local_theta := self.rope.get("sliding_attention", {}).get("rope_theta")) is not None:
            kv.f32(k("rope.freq_base_swa"), local_theta)
        if (eps := self.find(["rms_norm_eps", "norm_eps"], optional=True)) is not None:
            kv.f32(k("attention.layer_norm_rms_epsilon"), eps)
        if (eps := self.find(["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"], optional=True)) is not None:
            kv.f32(k("attention.layer_norm_epsilon"), eps)
        if (n_experts := self.find(["num_local_experts", "num_experts", "n_routed_experts"], optional=True)) is not None:
            kv.u32(k("expert_count"), n_experts)
        used = self.find(["num_experts_per_tok", "num_experts_per_token", "top_k_experts"], optional=True)
        if used is not None:
            kv.count_or_list(k("expert_used_count"), used)
        if (groups := self.hparams.get("n_group")) is not None:
            kv.u32(k("expert_group_count"), groups)
        if (groups_used := self.hparams.get("topk_group")) is not None:
            kv.u32(k("expert_group_used_count"), groups_used)
        score = self.find(["score_function", "scoring_func", "score_func", "moe_router_activation",
                           "moe_router_activation_func", "expert_selection_fn"], optional=True)
        if score is not None:
            gating = {"softmax": 1, "sigmoid": 2, "sqrtsoftplus": 4}.get(score)
            if gating is None:
                raise ConvertError(f"config.json: expert score function {score!r} is not one llama.cpp runs")
            kv.u32(k("expert_gating_func"), gating)
        if (head_dim := self.hparams.get("head_dim")) is not None:
            kv.u32(k("attention.key_length"), head_dim)
            kv.u32(k("attention.value_length"), head_dim)
        kv.u32("general.file_type", file_type)

    def _rope_scaling(self, kv: KeyValues, rope: dict[str, Any]) -> None:
        kind = rope.get("rope_type")
        factor = rope.get("factor")
        k = kv.key
        if kind == "linear" and factor is not None:
            kv.string(k("rope.scaling.type"), "linear")
            kv.f32(k("rope.scaling.factor"), factor)
        elif kind == "yarn" and factor is not None:
            kv.string(k("rope.scaling.type"), "yarn")
            kv.f32(k("rope.scaling.factor"), factor)
            kv.u32(k("rope.scaling.original_context_length"), rope["original_max_position_embeddings"])
            for source, target in (("extrapolation_factor", "yarn_ext_factor"), ("attention_factor", "yarn_attn_factor"),
                                   ("beta_fast", "yarn_beta_fast"), ("beta_slow", "yarn_beta_slow")):
                value = rope.get(source)
                if source == "attention_factor" and value is None:
                    value = rope.get("attn_factor")
                if value is not None:
                    kv.f32(k(f"rope.scaling.{target}"), value)
        elif kind in ("su", "longrope"):
            kv.string(k("rope.scaling.type"), "longrope")
        # "llama3" becomes the rope_freqs tensor; other kinds write nothing, as in llama.cpp's converter

    def set_vocab(self, kv: KeyValues) -> None:
        write_bpe_vocab(self.folder, self.hparams, kv)

    def _sentencepiece_or_bpe(self, kv: KeyValues) -> bool:
        """SentencePiece when the folder has ``tokenizer.model``, else BPE; True for SentencePiece."""
        if (self.folder / "tokenizer.model").is_file():
            write_sentencepiece_vocab(self.folder, self.hparams, kv)
            return True
        write_bpe_vocab(self.folder, self.hparams, kv)
        return False

    def _pooling_type(self, kv: KeyValues) -> None:
        """A sentence-transformers pooling module (``modules.json``) becomes ``<arch>.pooling_type``."""
        modules_path = self.folder / "modules.json"
        if not modules_path.is_file():
            return
        modules = read_json_file(modules_path)
        path = next((m["path"] for m in modules if isinstance(m, dict) and str(m.get("type", "")).endswith("Pooling")),
                    None) if isinstance(modules, list) else None
        if path is None:
            return
        pooling = read_json_file(self.folder / path / "config.json")
        modes = {"mean": 1, "cls": 2, "lasttoken": 3}
        if pooling.get("pooling_mode_mean_tokens"):
            kind = 1
        elif pooling.get("pooling_mode_cls_token"):
            kind = 2
        elif pooling.get("pooling_mode_lasttoken"):
            kind = 3
        elif pooling.get("pooling_mode") in modes:
            kind = modes[pooling["pooling_mode"]]
        else:
            raise ConvertError(f"{self.folder / path / 'config.json'}: only mean, cls and last-token pooling are "
                               "supported")
        kv.u32(kv.key("pooling_type"), kind)


class _Stacker:
    """Tensors (experts, per-head norms) held until their group is complete, then stacked in a given order."""

    def __init__(self):
        self.held: dict[Any, dict[str, Lazy]] = {}

    def add(self, group: Any, name: str, lazy: Lazy, expected: int,
            outputs: list[tuple[str, list[str]]]) -> Iterator[tuple[str, Lazy]]:
        """Hold ``name``; once ``group`` has ``expected`` tensors, yield each output (its name, and its
        parts' names in stacking order) as one stacked tensor."""
        layer = self.held.setdefault(group, {})
        layer[name] = lazy
        if len(layer) < expected:
            return
        del self.held[group]
        for merged, parts in outputs:
            yield merged, stack([layer[p] for p in parts])

    def check_empty(self) -> None:
        left = sorted(n for layer in self.held.values() for n in layer)
        if left:
            raise ConvertError(f"the checkpoint's experts or per-head norms are incomplete: {', '.join(left[:4])}"
                               f"{' ...' if len(left) > 4 else ''} could not be stacked")


class LlamaConverter(Converter):
    gguf_arch = "llama"
    hf_architectures = ("LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM", "MixtralForCausalLM")
    names = {**_LLAMA_NAMES,
             "model.layers.{b}.block_sparse_moe.gate": "blk.{b}.ffn_gate_inp",
             "layers.{b}.feed_forward.experts.w1": "blk.{b}.ffn_gate_exps",
             "layers.{b}.feed_forward.experts.w2": "blk.{b}.ffn_down_exps",
             "layers.{b}.feed_forward.experts.w3": "blk.{b}.ffn_up_exps",
             "rope_freqs": "rope_freqs"}
    f32_tensors = ("ffn_gate_inp",)
    permute_qk = True

    def __init__(self, folder: Path, config: dict[str, Any]):
        super().__init__(folder, config)
        self._experts = _Stacker()

    def set_parameters(self, kv: KeyValues, file_type: int) -> None:
        super().set_parameters(kv, file_type)
        kv.u32(kv.key("vocab_size"), self.hparams["vocab_size"])
        head_dim = self.hparams.get("head_dim")
        if head_dim is None:
            head_dim = self.hparams["hidden_size"] // self.hparams["num_attention_heads"]
        kv.u32(kv.key("rope.dimension_count"), head_dim)

    def set_vocab(self, kv: KeyValues) -> None:
        config = _tokenizer_config(self.folder)
        if (add_prefix_space := config.get("add_prefix_space")) is not None:
            kv.boolean("tokenizer.ggml.add_space_prefix", add_prefix_space)
        if not (self.folder / "tokenizer.model").is_file() and _is_sentencepiece_style_bpe(self.folder):
            raise ConvertError(f"{self.folder}: this tokenizer.json is a SentencePiece tokenizer stored as BPE; "
                               "lamina convert needs the model's tokenizer.model for it")
        self._sentencepiece_or_bpe(kv)
        vocab_size = self.hparams.get("vocab_size", 32000)
        if vocab_size == 32016:  # CodeLlama: its end-of-infill token (llama.cpp has no keys for the other three)
            special = SpecialTokens(self.folder, types=("prefix", "suffix", "middle", "eot"))
            special.set_id("eot", 32010)
            special.write(kv)
        if vocab_size == 49152:  # small Granite (and SmolLM) models: llama.cpp turns BOS off
            kv.boolean("tokenizer.ggml.add_bos_token", False)

    @staticmethod
    def permute(lazy: Lazy, n_head: int, n_head_kv: int | None) -> Lazy:
        """Undo Hugging Face's rotary layout (halves) back to GGUF's (interleaved pairs), per head."""
        if n_head_kv is not None and n_head != n_head_kv:
            n_head = n_head_kv
        shape = lazy.shape
        return lazy.then(lambda w: w.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2)
                         .reshape(shape))

    def modify(self, lazy: Lazy, name: str, bid: int | None) -> Iterator[tuple[str, Lazy]]:
        if self.hf_arch == "LlamaModel":
            name = "model." + name
        if self.permute_qk:
            n_head = self.find(["n_heads", "num_attention_heads"])
            n_head_kv = self.find(["n_kv_heads", "num_key_value_heads"])
            if name.endswith(("q_proj.weight", "q_proj.bias")):
                lazy = self.permute(lazy, n_head, n_head)
            if name.endswith(("k_proj.weight", "k_proj.bias")):
                lazy = self.permute(lazy, n_head, n_head_kv)
        if "block_sparse_moe.experts" in name:
            n = self.hparams["num_local_experts"]
            outputs = [(self.map_name(f"layers.{bid}.feed_forward.experts.{w}.weight"),
                        [f"model.layers.{bid}.block_sparse_moe.experts.{x}.{w}.weight" for x in range(n)])
                       for w in ("w1", "w2", "w3")]
            yield from self._experts.add(bid, name, lazy, n * 3, outputs)
            return
        yield self.map_name(name), lazy

    def finish(self) -> None:
        self._experts.check_empty()

    def extra_tensors(self) -> Iterator[tuple[str, Lazy]]:
        rope = self.rope.get("full_attention", self.rope)
        if rope and str(rope.get("rope_type", "")).lower() == "llama3":
            yield "rope_freqs.weight", constant(llama3_rope_factors(rope, self.hparams))


def llama3_rope_factors(rope: dict[str, Any], hparams: dict[str, Any]) -> np.ndarray:
    """Llama 3's per-frequency rope scaling factors, computed in float32 step for step as PyTorch does."""
    f32 = np.float32
    base = rope.get("rope_theta", 10000.0)
    dim = hparams.get("head_dim") or hparams["hidden_size"] // hparams["num_attention_heads"]
    freqs = f32(1.0) / (f32(base) ** (np.arange(0, dim, 2, dtype=f32) / f32(dim)))
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_context / low, old_context / high
    factors = []
    for freq in freqs:
        # PyTorch computes `number / tensor` as the tensor's reciprocal times the number
        wavelen = (f32(1.0) / freq) * f32(2 * math.pi)
        if wavelen < f32(high_wavelen):
            factors.append(1.0)
        elif wavelen > f32(low_wavelen):
            factors.append(factor)
        else:
            smooth = ((f32(1.0) / wavelen) * f32(old_context) - f32(low)) / f32(high - low)
            factors.append(f32(1.0) / ((f32(1.0) - smooth) / f32(factor) + smooth))
    return np.array(factors, dtype=np.float32)


class GraniteConverter(LlamaConverter):
    gguf_arch = "granite"
    hf_architectures = ("GraniteForCausalLM",)

    def set_parameters(self, kv: KeyValues, file_type: int) -> None:
        self.hparams.pop("head_dim", None)  # llama.cpp ignores head_dim for Granite
        super().set_parameters(kv, file_type)
        for source, target in (("attention_multiplier", "attention.scale"), ("embedding_multiplier", "embedding_scale"),
                               ("residual_multiplier", "residual_scale"), ("logits_scaling", "logit_scale")):
            if value := self.hparams.get(source):
                kv.f32(kv.key(target), value)


class Qwen2Converter(Converter):
    gguf_arch = "qwen2"
    hf_architectures = ("Qwen2ForCausalLM", "Qwen2Model")

    def set_vocab(self, kv: KeyValues) -> None:
        self._sentencepiece_or_bpe(kv)

    def set_parameters(self, kv: KeyValues, file_type: int) -> None:
        super().set_parameters(kv, file_type)
        self._pooling_type(kv)

    def modify(self, lazy: Lazy, name: str, bid: int | None) -> Iterator[tuple[str, Lazy]]:
        if self.hf_arch == "Qwen2Model":
            name = "model." + name
        yield self.map_name(name), lazy


class Qwen3Converter(Qwen2Converter):
    gguf_arch = "qwen3"
    hf_architectures = ("Qwen3ForCausalLM", "Qwen3Model")
    names = {**_LLAMA_NAMES, **_QK_NORMS}

    def __init__(self, folder: Path, config: dict[str, Any]):
        super().__init__(folder, config)
        readme = folder / "README.md"
        text = readme.read_text(encoding="utf-8", errors="replace").lower() if readme.is_file() else ""
        hints = [folder.name, str(self.hparams.get("_name_or_path", "")), str(self.hparams.get("model_type", ""))]
        if ("# qwen3-reranker" in text or any("qwen3-reranker" in h.lower() for h in hints)
                or "sequenceclassification" in self.hf_arch.lower()):
            raise ConvertError(f"{folder}: Qwen3 rerankers are not converted by lamina convert yet")


class Qwen3MoeConverter(Converter):
    gguf_arch = "qwen3moe"
    hf_architectures = ("Qwen3MoeForCausalLM",)
    names = {**_LLAMA_NAMES, **_QK_NORMS,
             "model.layers.{b}.mlp.gate": "blk.{b}.ffn_gate_inp",
             "model.layers.{b}.mlp.experts.gate_proj": "blk.{b}.ffn_gate_exps",
             "model.layers.{b}.mlp.experts.up_proj": "blk.{b}.ffn_up_exps",
             "model.layers.{b}.mlp.experts.down_proj": "blk.{b}.ffn_down_exps"}
    f32_tensors = ("ffn_gate_inp",)

    def __init__(self, folder: Path, config: dict[str, Any]):
        super().__init__(folder, config)
        self._experts = _Stacker()

    def set_parameters(self, kv: KeyValues, file_type: int) -> None:
        super().set_parameters(kv, file_type)
        if (moe_ff := self.hparams.get("moe_intermediate_size")) is not None:
            kv.count_or_list(kv.key("expert_feed_forward_length"), moe_ff)
        if (shared_ff := self.hparams.get("shared_expert_intermediate_size")) is not None:
            kv.u32(kv.key("expert_shared_feed_forward_length"), shared_ff)

    def modify(self, lazy: Lazy, name: str, bid: int | None) -> Iterator[tuple[str, Lazy]]:
        if name.endswith(("mlp.experts.down_proj", "mlp.experts.down_proj.weight")):
            yield self.map_name(name if name.endswith(".weight") else name + ".weight"), lazy
            return
        if name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.gate_up_proj.weight")):
            # transformers 5 stores each layer's experts fused: (experts, 2 * n_ff, n_embd)
            if lazy.ndim < 3 or lazy.shape[-2] % 2:
                raise ConvertError(f"tensor {name!r} has shape {lazy.shape}, not (experts, 2 * n_ff, n_embd)")
            n_ff = lazy.shape[-2] // 2
            base = name.removesuffix(".weight").removesuffix(".gate_up_proj")
            half = (*lazy.shape[:-2], n_ff, lazy.shape[-1])
            yield self.map_name(f"{base}.gate_proj.weight"), lazy.then(lambda a: a[..., :n_ff, :], half)
            yield self.map_name(f"{base}.up_proj.weight"), lazy.then(lambda a: a[..., n_ff:, :], half)
            return
        if "experts" in name:
            n = self.find(["num_local_experts", "num_experts"])
            outputs = [(self.map_name(f"model.layers.{bid}.mlp.experts.{kind}.weight"),
                        [f"model.layers.{bid}.mlp.experts.{x}.{kind}.weight" for x in range(n)])
                       for kind in ("down_proj", "gate_proj", "up_proj")]
            yield from self._experts.add(bid, name, lazy, n * 3, outputs)
            return
        yield self.map_name(name), lazy

    def finish(self) -> None:
        self._experts.check_empty()


class Gemma3Converter(Converter):
    gguf_arch = "gemma3"
    hf_architectures = ("Gemma3ForCausalLM",)
    names = {**_LLAMA_NAMES, **_QK_NORMS,
             "model.layers.{b}.post_attention_layernorm": "blk.{b}.post_attention_norm",
             "model.layers.{b}.pre_feedforward_layernorm": "blk.{b}.ffn_norm",
             "model.layers.{b}.post_feedforward_layernorm": "blk.{b}.post_ffw_norm"}

    def set_vocab(self, kv: KeyValues) -> None:
        if self._sentencepiece_or_bpe(kv):
            kv.boolean("tokenizer.ggml.add_space_prefix", False)

    def set_parameters(self, kv: KeyValues, file_type: int) -> None:
        super().set_parameters(kv, file_type)
        h, k = self.hparams, kv.key
        kv.u32(k("context_length"), h.get("max_position_embeddings", 131072))
        kv.count_or_list(k("attention.head_count"), h.get("num_attention_heads", 8))
        kv.f32(k("attention.layer_norm_rms_epsilon"), h.get("rms_norm_eps", 1e-6))
        kv.u32(k("attention.key_length"), h.get("head_dim", 256))
        kv.u32(k("attention.value_length"), h.get("head_dim", 256))
        kv.f32(k("rope.freq_base"), self.rope.get("full_attention", self.rope).get("rope_theta", 1_000_000.0))
        if h.get("attn_logit_softcapping") is not None:
            raise ConvertError("config.json: Gemma 3 has no attention logit soft-capping (attn_logit_softcapping)")
        if softcap := h.get("final_logit_softcapping"):
            kv.f32(k("final_logit_softcapping"), softcap)
        if h.get("sliding_window_pattern") != 1:
            kv.u32(k("attention.sliding_window"), h["sliding_window"])
        kv.count_or_list(k("attention.head_count_kv"), h.get("num_key_value_heads", 4))

    def modify(self, lazy: Lazy, name: str, bid: int | None) -> Iterator[tuple[str, Lazy]]:
        if "embed_tokens.weight" in name:  # rows past the tokenizer's vocabulary are padding
            lazy = lazy.rows(self._real_vocab_size())
        if name.endswith("norm.weight"):  # Gemma3RMSNorm scales by 1 + w
            lazy = lazy.then(lambda a: a + a.dtype.type(1.0))
        yield self.map_name(name), lazy

    def _real_vocab_size(self) -> int:
        if (self.folder / "tokenizer.model").is_file():
            return len(sentencepiece_tokens(self.folder, self.hparams)[0])
        tokenizer = read_json_file(self.folder / "tokenizer.json")
        return len(tokenizer["model"]["vocab"]) + len(tokenizer["added_tokens"])


class Olmo2Converter(Converter):
    gguf_arch = "olmo2"
    hf_architectures = ("Olmo2ForCausalLM",)
    names = {**_LLAMA_NAMES, **_QK_NORMS,
             "model.layers.{b}.post_attention_layernorm": "blk.{b}.post_attention_norm",
             "model.layers.{b}.post_feedforward_layernorm": "blk.{b}.post_ffw_norm"}

    def set_parameters(self, kv: KeyValues, file_type: int) -> None:
        super().set_parameters(kv, file_type)
        if "sliding_window" in self.hparams:
            kv.u32(kv.key("attention.sliding_window"), self.hparams["sliding_window"])
            if "layer_types" in self.hparams:
                pattern = [t == "sliding_attention" for t in self.hparams["layer_types"]]
            else:
                pattern = [(i + 1) % 4 != 0 for i in range(self.hparams["num_hidden_layers"])]
            kv.array(kv.key("attention.sliding_window_pattern"), pattern)


class StableLMConverter(Converter):
    gguf_arch = "stablelm"
    hf_architectures = ("StableLmForCausalLM", "StableLMEpochForCausalLM")
    names = {**_LLAMA_NAMES,
             "model.layers.{b}.self_attn.q_layernorm": "blk.{b}.attn_q_norm",
             "model.layers.{b}.self_attn.k_layernorm": "blk.{b}.attn_k_norm"}

    def __init__(self, folder: Path, config: dict[str, Any]):
        super().__init__(folder, config)
        self._norms = _Stacker()

    def set_vocab(self, kv: KeyValues) -> None:
        if not (self.folder / "tokenizer.json").is_file():
            raise ConvertError(f"{self.folder}: StableLM's Qwen-style vocabulary files are not read; give a tokenizer.json")
        write_bpe_vocab(self.folder, self.hparams, kv)

    def set_parameters(self, kv: KeyValues, file_type: int) -> None:
        h, k = self.hparams, kv.key
        kv.u32(k("context_length"), h["max_position_embeddings"])
        kv.u32(k("embedding_length"), h["hidden_size"])
        kv.u32(k("block_count"), self.block_count)
        kv.count_or_list(k("feed_forward_length"), h["intermediate_size"])
        rotary = self.rope["partial_rotary_factor"]
        kv.u32(k("rope.dimension_count"), int(rotary * (h["hidden_size"] // h["num_attention_heads"])))
        kv.count_or_list(k("attention.head_count"), h["num_attention_heads"])
        kv.count_or_list(k("attention.head_count_kv"), h["num_key_value_heads"])
        kv.boolean(k("use_parallel_residual"), h["use_parallel_residual"] if "use_parallel_residual" in h else True)
        kv.f32(k("attention.layer_norm_epsilon"), self.find(["layer_norm_eps", "norm_eps"]))
        kv.u32("general.file_type", file_type)

    def modify(self, lazy: Lazy, name: str, bid: int | None) -> Iterator[tuple[str, Lazy]]:
        for which, count_key in (("q_layernorm", "num_attention_heads"), ("k_layernorm", "num_key_value_heads")):
            if f"{which}.norms" in name:
                n = self.hparams[count_key]
                outputs = [(self.map_name(f"model.layers.{bid}.self_attn.{which}.weight"),
                            [f"model.layers.{bid}.self_attn.{which}.norms.{x}.weight" for x in range(n)])]
                yield from self._norms.add((bid, which), name, lazy, n, outputs)
                return
        yield self.map_name(name), lazy

    def finish(self) -> None:
        self._norms.check_empty()


class StarCoder2Converter(Converter):
    gguf_arch = "starcoder2"
    hf_architectures = ("Starcoder2ForCausalLM",)
    names = {**_LLAMA_NAMES, "model.layers.{b}.mlp.c_fc": "blk.{b}.ffn_up",
             "model.layers.{b}.mlp.c_proj": "blk.{b}.ffn_down"}


CONVERTERS: tuple[type[Converter], ...] = (
    LlamaConverter, GraniteConverter, Qwen2Converter, Qwen3Converter, Qwen3MoeConverter, Gemma3Converter,
    Olmo2Converter, StableLMConverter, StarCoder2Converter)


def converter_for(folder: Path, config: dict[str, Any]) -> Converter:
    """The converter for the checkpoint's ``architectures[0]``, or a ConvertError naming it."""
    architectures = config.get("architectures")
    arch = architectures[0] if isinstance(architectures, list) and architectures else None
    if arch is None:
        raise ConvertError(f"{folder / 'config.json'}: no 'architectures' entry says what model this is")
    for cls in CONVERTERS:
        if arch in cls.hf_architectures:
            return cls(folder, config)
    known = sorted(a for cls in CONVERTERS for a in cls.hf_architectures)
    raise ConvertError(f"{folder / 'config.json'}: architecture {arch!r} is not one lamina converts "
                       f"(it converts {', '.join(known)})")


def _with_defaults(hparams: dict[str, Any]) -> dict[str, Any]:
    defaults = CONFIG_DEFAULTS.get(hparams.get("model_type", ""), {})
    out = dict(hparams)
    for key, value in defaults.items():
        if key in out:
            continue
        if key == "rope_theta" and _has_rope_theta(out):
            continue
        if value == "=heads":
            value = out.get("num_attention_heads")
        elif value == "=hidden/heads":
            value = out["hidden_size"] // out["num_attention_heads"] if "hidden_size" in out and \
                out.get("num_attention_heads") else None
        if value is not None:
            out[key] = value
    return out


def _has_rope_theta(hparams: dict[str, Any]) -> bool:
    rope = hparams.get("rope_parameters") or hparams.get("rope_scaling") or {}
    return isinstance(rope, dict) and ("rope_theta" in rope or "full_attention" in rope)


def _rope_parameters(hparams: dict[str, Any]) -> dict[str, Any]:
    """``rope_parameters`` (or the older ``rope_scaling``) with the global rope settings mirrored in."""
    rope = hparams.get("rope_parameters", hparams.get("rope_scaling")) or {}
    rope = json.loads(json.dumps(rope)) if isinstance(rope, dict) else {}

    def find(keys):
        return next((hparams[k] for k in keys if k in hparams), None)

    theta = find(["global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta", "rotary_emb_base"])
    local = find(["local_rope_theta", "rope_local_theta", "rope_theta_local", "swa_rope_theta", "rope_local_base_freq"])
    partial = find(["partial_rotary_factor", "rope_pct", "rope_percent"])
    original = find(["original_max_position_embeddings"])
    if "full_attention" not in rope and "sliding_attention" not in rope:
        if local is not None:
            rope["sliding_attention"] = {"rope_theta": local}
        if "rope_theta" not in rope and theta is not None:
            rope["rope_theta"] = theta
        if "rope_type" not in rope and rope.get("type") is not None:
            rope["rope_type"] = rope["type"]
        if "partial_rotary_factor" not in rope and partial is not None:
            rope["partial_rotary_factor"] = partial
        if "original_max_position_embeddings" not in rope and original is not None:
            rope["original_max_position_embeddings"] = original
    return rope


def _tokenizer_config(folder: Path) -> dict[str, Any]:
    path = folder / "tokenizer_config.json"
    config = read_json_file(path) if path.is_file() else {}
    return config if isinstance(config, dict) else {}


def _is_sentencepiece_style_bpe(folder: Path) -> bool:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return False
    tokenizer = read_json_file(path)
    model = tokenizer.get("model", {}) if isinstance(tokenizer, dict) else {}
    if model.get("type") == "BPE" and model.get("ignore_merges", False) and not model.get("byte_fallback", True):
        return False  # Llama 3: plain BPE
    return (model.get("type") == "BPE" and model.get("byte_fallback", False)
            and (tokenizer.get("decoder") or {}).get("type") == "Sequence")

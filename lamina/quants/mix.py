"""llama-quantize's recipes: the target names it accepts and which ggml type each tensor gets.

A target such as ``Q4_K_M`` is a *file type* (``general.file_type``), not one ggml
type: most tensors get the recipe's default type, while ``attn_v`` and
``ffn_down`` in some layers get more bits, the output (or tied token embedding)
gets ``Q6_K``, and a row length that is not a multiple of the block size falls back
to a 32-element type. This module reproduces src/llama-quant.cpp's rules, in the
order llama.cpp visits the tensors (its counters make the choice order-dependent).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lamina.gguf.types import GGML_TYPES_BY_NAME, GGMLType, ggml_type

QUANTIZATION_VERSION = 2  # GGML_QNT_VERSION, written to general.quantization_version

# LLAMA_FTYPE_GUESSED: the bit llama.cpp's loader sets on a file type it guessed from the tensors.
FTYPE_GUESSED = 1024


@dataclass(frozen=True)
class Target:
    """One name llama-quantize accepts: its ``llama_ftype`` id, default ggml type and description."""

    name: str
    ftype: int
    default_type: str | None  # None: "COPY" (keep every tensor's type)
    description: str

    @property
    def bits_per_weight(self) -> float | None:
        return None if self.default_type is None else ggml_type(self.default_type).bits_per_weight


# tools/quantize/quantize.cpp's QUANT_OPTIONS, in its order, with llama_ftype_get_default_type's types.
TARGETS: list[Target] = [
    Target("Q4_0", 2, "Q4_0", " 4.34G, +0.4685 ppl @ Llama-3-8B"),
    Target("Q4_1", 3, "Q4_1", " 4.78G, +0.4511 ppl @ Llama-3-8B"),
    Target("MXFP4_MOE", 38, "MXFP4", " MXFP4 MoE"),
    Target("Q5_0", 8, "Q5_0", " 5.21G, +0.1316 ppl @ Llama-3-8B"),
    Target("Q5_1", 9, "Q5_1", " 5.65G, +0.1062 ppl @ Llama-3-8B"),
    Target("IQ2_XXS", 19, "IQ2_XXS", " 2.06 bpw quantization"),
    Target("IQ2_XS", 20, "IQ2_XS", " 2.31 bpw quantization"),
    Target("IQ2_S", 28, "IQ2_XS", " 2.5  bpw quantization"),
    Target("IQ2_M", 29, "IQ2_S", " 2.7  bpw quantization"),
    Target("IQ1_S", 24, "IQ1_S", " 1.56 bpw quantization"),
    Target("IQ1_M", 31, "IQ1_M", " 1.75 bpw quantization"),
    Target("TQ1_0", 36, "TQ1_0", " 1.69 bpw ternarization"),
    Target("TQ2_0", 37, "TQ2_0", " 2.06 bpw ternarization"),
    Target("Q2_K", 10, "Q2_K", " 2.96G, +3.5199 ppl @ Llama-3-8B"),
    Target("Q2_K_S", 21, "Q2_K", " 2.96G, +3.1836 ppl @ Llama-3-8B"),
    Target("IQ3_XXS", 23, "IQ3_XXS", " 3.06 bpw quantization"),
    Target("IQ3_S", 26, "IQ3_S", " 3.44 bpw quantization"),
    Target("IQ3_M", 27, "IQ3_S", " 3.66 bpw quantization mix"),
    Target("Q3_K", 12, "Q3_K", "alias for Q3_K_M"),
    Target("IQ3_XS", 22, "IQ3_S", " 3.3 bpw quantization"),
    Target("Q3_K_S", 11, "Q3_K", " 3.41G, +1.6321 ppl @ Llama-3-8B"),
    Target("Q3_K_M", 12, "Q3_K", " 3.74G, +0.6569 ppl @ Llama-3-8B"),
    Target("Q3_K_L", 13, "Q3_K", " 4.03G, +0.5562 ppl @ Llama-3-8B"),
    Target("IQ4_NL", 25, "IQ4_NL", " 4.50 bpw non-linear quantization"),
    Target("IQ4_XS", 30, "IQ4_XS", " 4.25 bpw non-linear quantization"),
    Target("Q4_K", 15, "Q4_K", "alias for Q4_K_M"),
    Target("Q4_K_S", 14, "Q4_K", " 4.37G, +0.2689 ppl @ Llama-3-8B"),
    Target("Q4_K_M", 15, "Q4_K", " 4.58G, +0.1754 ppl @ Llama-3-8B"),
    Target("Q5_K", 17, "Q5_K", "alias for Q5_K_M"),
    Target("Q5_K_S", 16, "Q5_K", " 5.21G, +0.1049 ppl @ Llama-3-8B"),
    Target("Q5_K_M", 17, "Q5_K", " 5.33G, +0.0569 ppl @ Llama-3-8B"),
    Target("Q6_K", 18, "Q6_K", " 6.14G, +0.0217 ppl @ Llama-3-8B"),
    Target("Q8_0", 7, "Q8_0", " 7.96G, +0.0026 ppl @ Llama-3-8B"),
    Target("F16", 1, "F16", "14.00G, +0.0020 ppl @ Mistral-7B"),
    Target("BF16", 32, "BF16", "14.00G, -0.0050 ppl @ Mistral-7B"),
    Target("F32", 0, "F32", "26.00G              @ 7B"),
    Target("COPY", 0, None, "only copy tensors, no quantizing"),
]

# Targets llama-quantize knows whose block formats lamina does not implement.
UNSUPPORTED_TARGETS = {"Q1_0": 40, "Q2_0": 41}

FT = {t.name: t.ftype for t in TARGETS if t.name not in ("Q3_K", "Q4_K", "Q5_K", "COPY")}


class RecipeError(ValueError):
    """A quantization request llama-quantize would refuse (unknown target, bad override, missing imatrix)."""


def parse_target(text: str) -> Target | None:
    """A target by name (any case) or by its numeric file type, as llama-quantize's try_parse_ftype; else None."""
    upper = text.upper()
    for t in TARGETS:
        if t.name == upper:
            return t
    if upper in UNSUPPORTED_TARGETS:
        raise RecipeError(f"quantization type {upper} is known to llama.cpp but lamina does not implement its "
                          f"block format")
    try:
        number = int(text.strip())
    except ValueError:
        return None
    for t in TARGETS:
        if t.ftype == number:
            return t
    return None


def parse_ggml_type(text: str) -> GGMLType:
    """A ggml type name as --output-tensor-type and --tensor-type take it (any case, e.g. q8_0, Q6_K, f16)."""
    found = GGML_TYPES_BY_NAME.get(text.upper())
    if found is None:
        raise RecipeError(f"invalid ggml_type '{text}' (known: {', '.join(ggml_name(t) for t in GGML_TYPES_BY_NAME)})")
    return found


# -- what the rules need to know about the model and the request --------------------------------------------


@dataclass(frozen=True)
class ModelFacts:
    """The hyperparameters llama-quant.cpp's rules look at."""

    arch: str
    n_layer: int
    n_head: int
    n_head_kv: int
    n_expert: int = 0

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_70b(self) -> bool:
        """LLM_TYPE_70B, the one model size the rules single out (llama with 80 layers and grouped KV heads)."""
        return self.arch == "llama" and self.n_layer == 80 and self.n_head != self.n_head_kv


@dataclass
class RecipeOptions:
    """llama_model_quantize_params: the switches that change which type a tensor gets."""

    target: Target
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    quantize_output_tensor: bool = True  # False with --leave-output-tensor
    pure: bool = False
    has_imatrix: bool = False
    tensor_type_overrides: list[tuple[str, str]] = field(default_factory=list)  # (regex, ggml type name)

    @property
    def only_copy(self) -> bool:
        return self.target.default_type is None


@dataclass(frozen=True)
class TensorChoice:
    name: str
    shape: tuple[int, ...]  # ggml order
    current_type: str
    new_type: str
    allows_quantization: bool
    requires_imatrix: bool
    fallback: str | None = None  # the warning llama-quantize prints when the shape forced another type


# -- tensor names -------------------------------------------------------------------------------------------


def _is_token_embd(name: str) -> bool:
    return name in ("token_embd.weight", "per_layer_token_embd.weight")


def category(name: str) -> str:
    """llama-quant.cpp's tensor_get_category (first match wins, substring tests)."""
    if name == "output.weight":
        return "output"
    if _is_token_embd(name):
        return "token_embd"
    for needle, cat in (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_kv_b"),
                        ("attn_v.weight", "attn_v"), ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"),
                        ("attn_output.weight", "attn_output"), ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"),
                        ("ffn_down", "ffn_down")):
        if needle in name:
            return cat
    return "other"


def _is_attn_v_like(cat: str) -> bool:
    return cat in ("attn_v", "attn_qkv", "attn_kv_b")


_NEVER_QUANTIZED = [
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj",
    "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight",
    "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
    "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight",
    "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd",
    "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook",
    "mm.a.code_embd",
]
_NEVER_QUANTIZED_GLM5_NEXT = [
    "hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate", "indexer_compressor_ape",
    "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight", "ssm_g_b.weight", "ssm_beta.weight",
    "attn_kv_a_mqa.weight", "attn_k_b.weight", "attn_v_b.weight",
]


def n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims: the number of dimensions once trailing sizes of 1 are dropped (at least 1)."""
    n = len(shape)
    while n > 1 and shape[n - 1] == 1:
        n -= 1
    return n


def allows_quantization(name: str, shape: tuple[int, ...], arch: str, options: RecipeOptions) -> bool:
    """tensor_allows_quantization: 2D/3D weights only, never norms, routers, positional tables and the like."""
    if options.only_copy or n_dims(shape) < 2:
        return False
    if not name.endswith("weight"):
        return False
    if name == "output.weight" and not options.quantize_output_tensor:
        return False
    if name in ("position_embd.weight", "token_types.weight"):
        return False
    if any(needle in name for needle in _NEVER_QUANTIZED):
        return False
    if arch == "glm5-next" and any(needle in name for needle in _NEVER_QUANTIZED_GLM5_NEXT):
        return False
    return True


def requires_imatrix(name: str, new_type: str, target: Target) -> bool:
    """tensor_requires_imatrix: the very-low-bit types are garbage without importance weights."""
    if name == "output.weight" or _is_token_embd(name):
        return False
    if new_type in ("IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_M", "IQ1_S"):
        return True
    return new_type == "Q2_K" and target.ftype == FT["Q2_K_S"]


# -- the rules ----------------------------------------------------------------------------------------------


def _c_mod(a: int, b: int) -> int:
    """C's % (truncates toward zero), for the (i - n/8) % 3 test when i < n/8."""
    r = abs(a) % abs(b)
    return -r if a < 0 else r


def more_bits(i_layer: int, n_layers: int) -> bool:
    """use_more_bits: the first and last eighth of the layers, and every third layer in between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or _c_mod(i_layer - n_layers // 8, 3) == 2


class Recipe:
    """Chooses every tensor's type for one model and one request, holding llama-quant.cpp's counters."""

    def __init__(self, facts: ModelFacts, options: RecipeOptions, tensor_names: list[str]):
        self.facts = facts
        self.options = options
        self.ftype = options.target.ftype
        self.n_attention_wv = sum(1 for n in tensor_names if _is_attn_v_like(category(n)))
        self.has_tied_embeddings = "output.weight" not in tensor_names
        self.n_ffn_down = self.n_ffn_gate = self.n_ffn_up = facts.n_layer
        self.i_attention_wv = self.i_ffn_down = self.i_ffn_gate = self.i_ffn_up = 0
        self.n_fallback = 0
        self.overrides = []
        for pattern, type_name in options.tensor_type_overrides:
            try:
                self.overrides.append((re.compile(pattern), ggml_type(type_name).name))
            except re.error as e:
                raise RecipeError(f"--tensor-type pattern '{pattern}' is not a valid regular expression: {e}") from None

    # llama_tensor_get_type
    def choose(self, name: str, shape: tuple[int, ...], current_type: str) -> TensorChoice:
        opts = self.options
        allowed = allows_quantization(name, shape, self.facts.arch, opts)
        fallback = None
        if not allowed:
            new_type = current_type
        else:
            cat = category(name)
            new_type = None
            if opts.token_embedding_type and cat == "token_embd":
                named = name == "per_layer_token_embd.weight" and any(p.search(name) for p, _ in self.overrides)
                if not named:
                    new_type = ggml_type(opts.token_embedding_type).name
            if new_type is None and opts.output_tensor_type and cat == "output":
                new_type = ggml_type(opts.output_tensor_type).name
            if new_type is None:
                new_type = opts.target.default_type
                if ggml_type(new_type).is_quantized:
                    manual = False
                    for pattern, qtype in self.overrides:
                        if pattern.search(name):
                            new_type = qtype
                            manual = True
                            break
                    if not manual and not opts.pure:
                        new_type = self._mixture_type(new_type, name, shape, cat)
                    new_type, fallback = self._fallback(name, shape, new_type)
        return TensorChoice(name, tuple(shape), current_type, new_type, allowed,
                            requires_imatrix(name, new_type, opts.target), fallback)

    def _fallback(self, name: str, shape: tuple[int, ...], target: str) -> tuple[str, str | None]:
        """tensor_type_fallback: a row length the type's block does not divide gets a 32-block type (or F16)."""
        ncols = shape[0]
        block = ggml_type(target).block_size
        if ncols % block == 0:
            return target, None
        self.n_fallback += 1
        if target in ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS"):
            new = "IQ4_NL"
        elif target in ("Q2_0", "Q2_K", "Q3_K", "TQ1_0", "TQ2_0"):
            new = "Q4_0"
        elif target == "Q4_K":
            new = "Q5_0"
        elif target == "Q5_K":
            new = "Q5_1"
        elif target == "Q6_K":
            new = "Q8_0"
        elif block <= 32:
            new = target
        else:
            raise RecipeError(f"no tensor type fallback is defined for type {target}")
        note = f"{name} - ncols {ncols} not divisible by {block} (required for type {ggml_name(target)})"
        if ncols % ggml_type(new).block_size:
            new = "F16"
            note += " (WARNING: must use F16 due to unusual shape)"
        return new, f"{note} -> falling back to {ggml_name(new)}"

    def _layer(self, counter: int, n_layer: int, name: str) -> tuple[int, int]:
        if max(1, self.facts.n_expert) > 1:
            m = re.match(r"blk\.(-?\d+)\.", name)
            if not m:
                raise RecipeError(f"Failed to determine layer for tensor {name}")
            i_layer = int(m.group(1))
            if not 0 <= i_layer < n_layer:
                raise RecipeError(f"Bad layer {i_layer} for tensor {name}. Must be in [0, {n_layer})")
            return i_layer, n_layer
        return counter, n_layer

    # llama_tensor_get_type_impl
    def _mixture_type(self, new_type: str, name: str, shape: tuple[int, ...], cat: str) -> str:
        ft = self.ftype
        f = self.facts
        arch = f.arch
        opts = self.options

        iq_very_low = (FT["IQ2_XXS"], FT["IQ2_XS"], FT["IQ3_XXS"], FT["IQ1_S"], FT["IQ2_S"], FT["IQ2_M"], FT["IQ1_M"])

        if arch == "glm5-next" and any(s in name for s in ("attn_q_a", "attn_q_b", "nextn.eh_proj")):
            if new_type not in ("F32", "BF16", "F16"):
                return "Q8_0"

        if cat == "output" or (self.has_tied_embeddings and cat == "token_embd"):
            if opts.output_tensor_type:
                return ggml_type(opts.output_tensor_type).name
            nx = shape[0]
            qk_k = ggml_type(new_type).block_size
            if ft == FT["MXFP4_MOE"]:
                return "Q8_0"
            if arch == "falcon" or nx % qk_k != 0:
                return "Q8_0"
            if ft in iq_very_low:
                return "Q5_K"
            if new_type != "Q8_0":
                return "Q6_K"
            return new_type
        if ft == FT["MXFP4_MOE"]:
            is_bailing_expert = arch == "bailingmoe3" and cat in ("ffn_up", "ffn_gate", "ffn_down")
            ne2 = shape[2] if len(shape) > 2 else 1
            if ne2 > 1 and (arch != "bailingmoe3" or is_bailing_expert):
                return "MXFP4"
            return "Q8_0"
        if cat == "token_embd":
            if opts.token_embedding_type:
                return ggml_type(opts.token_embedding_type).name
            if ft in (FT["IQ2_XXS"], FT["IQ2_XS"], FT["IQ1_S"], FT["IQ1_M"]):
                return "Q2_K"
            if ft in (FT["IQ2_S"], FT["IQ2_M"]):
                return "IQ3_S"
            if ft == FT["IQ3_XXS"]:
                return "IQ3_S"
            if ft in (FT["TQ1_0"], FT["TQ2_0"], 41):  # 41: Q2_0
                return "Q4_K"
            return new_type
        if ft in (FT["IQ2_XXS"], FT["IQ2_XS"], FT["IQ1_S"], FT["IQ2_S"], FT["IQ2_M"], FT["IQ1_M"]):
            iq2s_or_m = ft in (FT["IQ2_S"], FT["IQ2_M"])
            if _is_attn_v_like(cat):
                if f.n_gqa >= 4 or f.n_expert >= 4:
                    new_type = "Q4_K"
                else:
                    new_type = "IQ3_S" if iq2s_or_m else "Q2_K"
                self.i_attention_wv += 1
            elif f.n_expert == 8 and cat == "attn_k":
                new_type = "Q4_K"
            elif cat == "ffn_down":
                if self.i_ffn_down < self.n_ffn_down // 8:
                    new_type = "IQ3_S" if iq2s_or_m else "Q2_K"
                self.i_ffn_down += 1
            elif cat == "attn_output":
                if f.n_expert == 8:
                    new_type = "Q5_K"
                elif ft in (FT["IQ1_S"], FT["IQ1_M"]):
                    new_type = "IQ2_XXS"
                elif iq2s_or_m:
                    new_type = "IQ3_S"
            return new_type
        if _is_attn_v_like(cat):
            if ft == FT["Q2_K"]:
                new_type = "Q4_K" if f.n_gqa >= 4 else "Q3_K"
            elif ft == FT["Q2_K_S"] and f.n_gqa >= 4:
                new_type = "Q4_K"
            elif ft == FT["IQ3_XXS"]:
                new_type = "Q4_K" if f.n_gqa >= 4 else ("IQ3_S" if not opts.has_imatrix else "IQ3_XXS")
            elif ft in (FT["IQ3_XS"], FT["IQ3_S"]) and f.n_gqa >= 4:
                new_type = "Q4_K"
            elif ft == FT["IQ3_M"]:
                new_type = "Q4_K"
            elif ft == FT["Q3_K_M"]:
                new_type = "Q5_K" if self.i_attention_wv < 2 else "Q4_K"
            elif ft == FT["Q3_K_L"]:
                new_type = "Q5_K"
            elif ft in (FT["IQ4_NL"], FT["IQ4_XS"]) and f.n_gqa >= 4:
                new_type = "Q5_K"
            elif ft in (FT["Q4_K_M"], FT["Q5_K_M"]) and more_bits(self.i_attention_wv, self.n_attention_wv):
                new_type = "Q6_K"
            elif ft == FT["Q4_K_S"] and self.i_attention_wv < 4:
                new_type = "Q5_K"
            if f.is_70b and new_type in ("Q3_K", "Q4_K"):
                new_type = "Q5_K"
            if f.n_expert == 8:
                new_type = "Q8_0"
            self.i_attention_wv += 1
            return new_type
        if cat == "attn_k":
            if f.n_expert == 8:
                new_type = "Q8_0"
            elif ft == FT["IQ3_XS"]:
                new_type = "IQ3_XXS"
            elif ft == FT["IQ3_XXS"]:
                new_type = "IQ2_S"
            return new_type
        if cat == "attn_q":
            if ft == FT["IQ3_XS"]:
                new_type = "IQ3_XXS"
            elif ft == FT["IQ3_XXS"]:
                new_type = "IQ2_S"
            return new_type
        if cat == "ffn_down":
            i_layer, n_layer = self._layer(self.i_ffn_down, self.n_ffn_down, name)
            if ft == FT["Q2_K"]:
                new_type = "Q3_K"
            elif ft == FT["Q2_K_S"]:
                if i_layer < n_layer // 8:
                    new_type = "Q4_K"
            elif ft == FT["IQ3_XXS"] and not opts.has_imatrix:
                new_type = "Q4_K" if i_layer < n_layer // 8 else "Q3_K"
            elif ft == FT["Q3_K_M"]:
                if i_layer < n_layer // 16:
                    new_type = "Q5_K"
                elif arch != "falcon" or more_bits(i_layer, n_layer):
                    new_type = "Q4_K"
                else:
                    new_type = "Q3_K"
            elif ft == FT["IQ3_M"] and (i_layer < n_layer // 8
                                         or (f.n_expert == 8 and more_bits(i_layer, n_layer))):
                new_type = "Q4_K"
            elif ft == FT["Q3_K_L"]:
                new_type = "Q4_K" if arch == "falcon" else "Q5_K"
            elif ft == FT["Q4_K_M"]:
                if arch == "falcon":
                    new_type = ("Q6_K" if i_layer < n_layer // 16 else
                                "Q5_K" if more_bits(i_layer, n_layer) else "Q4_K")
                elif more_bits(i_layer, n_layer):
                    new_type = "Q6_K"
            elif (i_layer < n_layer // 8 and ft in (FT["IQ4_NL"], FT["IQ4_XS"]) and not opts.has_imatrix):
                new_type = "Q5_K"
            elif ft == FT["Q5_K_M"] and more_bits(i_layer, n_layer):
                new_type = "Q6_K"
            elif ft == FT["Q4_K_S"] and arch != "falcon" and i_layer < n_layer // 8:
                new_type = "Q5_K"
            elif ft in (FT["Q4_0"], FT["Q5_0"]) and opts.has_imatrix and i_layer < n_layer // 8:
                new_type = "Q4_1" if ft == FT["Q4_0"] else "Q5_1"
            self.i_ffn_down += 1
            return new_type
        if cat == "attn_output":
            if arch != "falcon":
                if f.n_expert == 8:
                    if ft in (FT["Q2_K"], FT["IQ3_XS"], FT["IQ3_XXS"], FT["Q3_K_S"], FT["Q3_K_M"], FT["IQ4_NL"],
                              FT["Q4_K_S"], FT["Q4_K_M"], FT["IQ3_S"], FT["IQ3_M"], FT["IQ4_XS"]):
                        new_type = "Q5_K"
                else:
                    new_type = {FT["Q2_K"]: "Q3_K", FT["IQ3_XXS"]: "IQ3_S", FT["Q3_K_M"]: "Q4_K",
                                FT["Q3_K_L"]: "Q5_K", FT["IQ3_M"]: "Q4_K"}.get(ft, new_type)
            elif ft == FT["Q3_K_L"]:
                new_type = "Q4_K"
            return new_type
        if cat == "attn_qkv":  # unreachable: attn_qkv is handled with attn_v above, as in llama.cpp
            return new_type
        if cat in ("ffn_gate", "ffn_up"):
            counter = self.i_ffn_gate if cat == "ffn_gate" else self.i_ffn_up
            i_layer, n_layer = self._layer(counter, self.n_ffn_gate, name)
            if ft == FT["IQ3_XS"] and n_layer // 8 <= i_layer < 7 * n_layer // 8:
                new_type = "IQ3_XXS"
            if cat == "ffn_gate":
                self.i_ffn_gate += 1
            else:
                self.i_ffn_up += 1
            return new_type
        return new_type


def ggml_name(type_name: str) -> str:
    """The spelling ggml_type_name prints: lower case except the k-quants' ``_K`` (q4_K, iq4_xs, f16)."""
    low = type_name.lower()
    return low[:-2] + "_K" if low.endswith("_k") else low


def tensor_order_key(name: str) -> tuple[int, str]:
    """llama_model_loader's weight_name_comparer: by layer number (non-layer tensors first), then by name."""
    m = re.match(r"blk\.(-?\d+)\.", name)
    return (int(m.group(1)) if m else -1, name)

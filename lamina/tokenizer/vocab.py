"""The vocabulary: token texts, scores, attributes and special ids, read from GGUF ``tokenizer.*`` metadata.

Everything here follows llama.cpp's ``llama_vocab::impl::load``: the defaults of each
tokenizer model, the flags tied to each pre-tokenizer name, the tokens it recognises by
their text (end-of-turn, fill-in-the-middle, the end-of-generation set), and the attribute
fixes it applies. Building avoids per-token Python work: the texts stay the list the GGUF
reader produced, attributes are a NumPy array, lookups are dicts built by ``dict(zip(..))``.

Deliberate departures from llama.cpp, all on malformed files: metadata arrays of different
lengths, scores that are not floats, and a BOS/EOS/EOT/EOM/UNK id outside the vocabulary are
errors (llama.cpp tolerates the first, converts integer scores and drops bad ids with a
warning); NaN and -inf scores are clamped below every finite score so merges stay ordered.
"""

from __future__ import annotations

import logging
from array import array
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from functools import cached_property

import numpy as np

from lamina.gguf import GGUFError, GGUFFile

from .pretokenize import PRE_TOKENIZERS, UNSUPPORTED_PRE_TOKENIZERS, PreTokenizerName

log = logging.getLogger(__name__)

KEY = "tokenizer.ggml."


class TokenType(IntEnum):
    """``tokenizer.ggml.token_type`` values (llama.h ``llama_token_type``)."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


class TokenAttr(IntFlag):
    """Per-token attributes (llama.h ``llama_token_attr``)."""

    UNDEFINED = 0
    UNKNOWN = 1 << 0
    UNUSED = 1 << 1
    NORMAL = 1 << 2
    CONTROL = 1 << 3
    USER_DEFINED = 1 << 4
    BYTE = 1 << 5
    NORMALIZED = 1 << 6
    LSTRIP = 1 << 7
    RSTRIP = 1 << 8
    SINGLE_WORD = 1 << 9


# token type -> attribute; anything outside 0..6 is UNDEFINED, as in llama.cpp
_ATTR_OF_TYPE = np.array([TokenAttr.UNDEFINED, TokenAttr.NORMAL, TokenAttr.UNKNOWN, TokenAttr.CONTROL,
                          TokenAttr.USER_DEFINED, TokenAttr.UNUSED, TokenAttr.BYTE], dtype=np.int32)

# tokenizer.ggml.model -> the algorithm that runs it
MODEL_KINDS = {"llama": "spm", "gpt2": "bpe", "gemma4": "bpe", "whitespace": "bpe", "bert": "wpm", "t5": "ugm"}
UNSUPPORTED_MODELS = {"rwkv", "plamo2", "hybriddna", "no_vocab", "none", "test"}

NONE = -1  # "no such token", llama.cpp's LLAMA_TOKEN_NULL

# Tokens llama.cpp recognises by their text, in the order lamina prefers when several exist
# (llama.cpp walks a hash map, so its choice between two candidates is unspecified).
EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
             "_<EOT>", "[EOT]", "<\uff5cend\u2581of\u2581sentence\uff5c>", "<end_of_utterance>")
EOM_TEXTS = ("<|eom_id|>",)
FIM_TEXTS = {
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\uff5cfim\u2581begin\uff5c>", "<PRE>", "\u2581<PRE>",
                "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\uff5cfim\u2581hole\uff5c>", "<SUF>", "\u2581<SUF>",
                "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\uff5cfim\u2581end\uff5c>", "<MID>", "\u2581<MID>",
                "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}
EOG_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
             "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
             "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
             "<\uff5cend\u2581of\u2581sentence\uff5c>", "[e~[")
ALWAYS_RENDERED_TEXTS = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")  # gpt-oss

# metadata key suffix -> special id name; the deprecated prefix/suffix/middle keys last
SPECIAL_ID_KEYS = (
    ("bos_token_id", "bos"), ("eos_token_id", "eos"), ("eot_token_id", "eot"), ("eom_token_id", "eom"),
    ("unknown_token_id", "unk"), ("seperator_token_id", "sep"), ("padding_token_id", "pad"),
    ("mask_token_id", "mask"), ("fim_pre_token_id", "fim_pre"), ("fim_suf_token_id", "fim_suf"),
    ("fim_mid_token_id", "fim_mid"), ("fim_pad_token_id", "fim_pad"), ("fim_rep_token_id", "fim_rep"),
    ("fim_sep_token_id", "fim_sep"), ("prefix_token_id", "fim_pre"), ("suffix_token_id", "fim_suf"),
    ("middle_token_id", "fim_mid"),
)
STRICT_SPECIAL_IDS = {"bos", "eos", "eot", "eom", "unk"}  # out of range: an error, not a warning

_DEFAULT_IDS = {
    "spm": {"bos": 1, "eos": 2, "unk": 0},
    "wpm": {"bos": 101, "unk": 100, "sep": 102, "pad": 0, "mask": 103},
    "bpe": {"bos": 11, "eos": 11},
    "ugm": {"eos": 1, "unk": 2, "pad": 0},
}


@dataclass
class Flags:
    """The tokenizer flags llama.cpp derives from the model, the pre-tokenizer name and metadata."""

    add_space_prefix: bool = False
    add_bos: bool = False
    add_eos: bool = False
    add_sep: bool = False
    ignore_merges: bool = False
    clean_spaces: bool = False
    remove_extra_whitespaces: bool = False
    escape_whitespaces: bool = True
    treat_whitespace_as_suffix: bool = False
    lowercase: bool = True  # BERT normalizer (llama.cpp's defaults)
    strip_accents: bool = True


class Vocab:
    """Token texts, scores and attributes, special ids and flags of one GGUF file's tokenizer."""

    def __init__(self, gguf: GGUFFile):
        self.path = gguf.path
        self.model = self._str(gguf, "model", required=True)
        self.pre = self._str(gguf, "pre") or ""
        if self.model in UNSUPPORTED_MODELS:
            raise GGUFError(f"tokenizer model {self.model!r} ({KEY}model) is not supported by lamina "
                            f"(supported: {', '.join(sorted(MODEL_KINDS))})", self.path)
        if self.model not in MODEL_KINDS:
            raise GGUFError(f"unknown tokenizer model {self.model!r} in {KEY}model "
                            f"(known: {', '.join(sorted(MODEL_KINDS))})", self.path)
        self.kind = MODEL_KINDS[self.model]
        self.tokens: list[str] = self._read_tokens(gguf)
        n = self.n_tokens = len(self.tokens)
        self.scores = self._read_scores(gguf, n)
        self.attrs = self._read_attrs(gguf, n)
        self.merges: list[str] | None = None
        if self.kind == "bpe":
            self.merges = gguf.get_array(KEY + "merges", None, element="string")
            if self.merges is None:
                raise GGUFError(f"BPE tokenizer ({KEY}model = {self.model!r}) has no {KEY}merges", self.path)
        self.flags = Flags()
        self.pre_kind = "default"
        self.ids = {name: NONE for _, name in SPECIAL_ID_KEYS}
        self.ids.update(_DEFAULT_IDS.get(self.kind, {}))
        self._apply_model_and_pre(gguf)
        self.precompiled_charsmap = self._read_charsmap(gguf) if self.kind == "ugm" else b""

        # dict(zip()) keeps the last of duplicate texts, as llama.cpp's token_to_id does
        self.token_to_id: dict[str, int] = dict(zip(self.tokens, range(n)))
        self._read_special_ids(gguf)
        self._read_add_flags(gguf)
        self._find_special_tokens_by_text()
        self._fix_attributes_by_name(gguf)

    # -- metadata readers ------------------------------------------------------------------

    def _str(self, gguf: GGUFFile, name: str, required: bool = False) -> str | None:
        value = gguf.get_str(KEY + name, None)
        if value is None and required:
            raise GGUFError(f"required metadata key {KEY + name!r} is missing: the file has no tokenizer", self.path)
        return value

    def _read_tokens(self, gguf: GGUFFile) -> list[str]:
        tokens = gguf.get_array(KEY + "tokens", None, element="string")
        if tokens is None:
            raise GGUFError(f"required metadata key {KEY + 'tokens'!r} is missing: the file has no vocabulary", self.path)
        if not tokens:
            raise GGUFError(f"{KEY}tokens is empty", self.path)
        if "" in tokens:  # llama.cpp renames empty texts so that they stay distinct
            tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
        return tokens

    def _check_length(self, key: str, values, n: int) -> None:
        if len(values) != n:
            raise GGUFError(f"{key} has {len(values)} entries but {KEY}tokens has {n}: "
                            "the vocabulary arrays must have one entry per token", self.path)

    def _read_scores(self, gguf: GGUFFile, n: int) -> array | None:
        key = KEY + "scores"
        scores = gguf.get_array(key, None, element="float")
        if scores is None:
            return None
        self._check_length(key, scores, n)
        scores = np.asarray(scores, dtype=np.float64)
        bad = ~np.isfinite(scores) & ~(scores == np.inf)
        if bad.any():
            scores = np.where(bad, -1e300, scores)
        # a flat array of doubles: indexing gives Python floats, and the garbage collector never walks it
        return array("d", scores.tobytes())

    def _read_attrs(self, gguf: GGUFFile, n: int) -> np.ndarray:
        key = KEY + "token_type"
        types = gguf.get_array(key, None, element="int")
        if types is None:
            return np.full(n, int(TokenAttr.NORMAL), dtype=np.int32)
        self._check_length(key, types, n)
        types = np.asarray(types, dtype=np.int64)
        known = (types >= 0) & (types < len(_ATTR_OF_TYPE))
        return np.where(known, _ATTR_OF_TYPE[np.where(known, types, 0)], 0).astype(np.int32)

    def _read_charsmap(self, gguf: GGUFFile) -> bytes:
        key = KEY + "precompiled_charsmap"
        data = gguf.get_array(key, None, element="int")
        if data is None:
            return b""
        blob = np.asarray(data).astype(np.uint8).tobytes()
        if len(blob) < 4:
            raise GGUFError(f"{key} is {len(blob)} bytes, too short for its 4-byte header", self.path)
        size = int.from_bytes(blob[:4], "little")
        if size + 4 >= len(blob):
            raise GGUFError(f"{key} announces {size} bytes of trie but holds only {len(blob) - 4}", self.path)
        return blob

    def _apply_model_and_pre(self, gguf: GGUFFile) -> None:
        f = self.flags
        if self.kind == "bpe":
            f.add_space_prefix = False
            f.escape_whitespaces = False
            f.clean_spaces = True
            name = self.pre
            if self.model == "gemma4":
                name = "gemma4"
            elif self.model == "whitespace":
                name = "whitespace"
            if not name:
                log.warning("%s: no %spre in the file; using the 'default' pre-tokenizer (quality may suffer)",
                            self.path, KEY)
                name = "default"
            if name in UNSUPPORTED_PRE_TOKENIZERS:
                raise GGUFError(f"pre-tokenizer {name!r} ({KEY}pre) is not supported: "
                                f"{UNSUPPORTED_PRE_TOKENIZERS[name]}", self.path)
            spec: PreTokenizerName | None = PRE_TOKENIZERS.get(name)
            if spec is None:
                raise GGUFError(f"unknown pre-tokenizer {name!r} in {KEY}pre", self.path)
            self.pre_kind = spec.kind
            f.clean_spaces = spec.clean_spaces
            f.ignore_merges = spec.ignore_merges
            if spec.add_bos is not None:
                f.add_bos = spec.add_bos
            f.escape_whitespaces = spec.escape_whitespaces
            f.add_sep = spec.add_sep
            if spec.no_bos_token:
                self.ids["bos"] = NONE
            if name == "whitespace":
                f.lowercase = False
        elif self.kind == "spm":
            f.add_space_prefix = True
            f.clean_spaces = False
            f.add_bos = True
        elif self.kind == "wpm":
            f.clean_spaces = True
            f.add_bos = True
            f.add_sep = True
        elif self.kind == "ugm":
            f.add_eos = True
        f.add_space_prefix = self._bool(gguf, "add_space_prefix", f.add_space_prefix)
        f.remove_extra_whitespaces = self._bool(gguf, "remove_extra_whitespaces", f.remove_extra_whitespaces)

    def _bool(self, gguf: GGUFFile, name: str, default: bool) -> bool:
        return gguf.get_bool(KEY + name, default)

    def _read_special_ids(self, gguf: GGUFFile) -> None:
        n = self.n_tokens
        for name in self.ids:
            if self.ids[name] >= n:  # a default that this vocabulary is too small for
                self.ids[name] = NONE
        for suffix, name in SPECIAL_ID_KEYS:
            value = gguf.get_int(KEY + suffix, None)
            if value is None:
                continue
            if not 0 <= value < n:
                if name in STRICT_SPECIAL_IDS:
                    raise GGUFError(f"{KEY}{suffix} is {value}, outside the vocabulary of {n} tokens", self.path)
                log.warning("%s: %s%s = %d is outside the vocabulary of %d tokens; ignored", self.path, KEY,
                            suffix, value, n)
                continue
            self.ids[name] = value

    def _read_add_flags(self, gguf: GGUFFile) -> None:
        f = self.flags
        f.add_bos = self._bool(gguf, "add_bos_token", f.add_bos)
        f.add_eos = self._bool(gguf, "add_eos_token", f.add_eos)
        f.add_sep = self._bool(gguf, "add_sep_token", f.add_sep)
        if self.pre_kind == "gemma4" and self.pre != "sarvam-moe" and not f.add_bos:
            f.add_bos = True  # llama.cpp forces BOS for Gemma 4
        f.lowercase = self._bool(gguf, "normalizer.lowercase", f.lowercase)
        f.strip_accents = self._bool(gguf, "normalizer.strip_accents", f.lowercase)

    # -- tokens recognised by their text ---------------------------------------------------------

    def _mark_control(self, token_id: int) -> None:
        if not self.attrs[token_id] & TokenAttr.CONTROL:
            log.debug("%s: token %d %r is not control-type; treating it as control", self.path, token_id,
                      self.tokens[token_id])
            self.attrs[token_id] |= TokenAttr.CONTROL

    def _first_present(self, texts) -> int:
        for text in texts:
            token_id = self.token_to_id.get(text)
            if token_id is not None:
                return token_id
        return NONE

    def _find_special_tokens_by_text(self) -> None:
        ids, attrs, t2i = self.ids, self.attrs, self.token_to_id
        for name, texts in (("eot", EOT_TEXTS), ("eom", EOM_TEXTS), *FIM_TEXTS.items()):
            if ids[name] == NONE:
                found = self._first_present(texts)
                if found != NONE:
                    ids[name] = found
                    self._mark_control(found)

        # control tokens whose text says "unused" are unused
        for token_id in np.flatnonzero(attrs & TokenAttr.CONTROL).tolist():
            if "unused" in self.tokens[token_id]:
                attrs[token_id] |= TokenAttr.UNUSED

        eog: set[int] = {ids[k] for k in ("fim_pad", "fim_rep", "fim_sep") if ids[k] != NONE}
        for text in EOG_TEXTS:
            token_id = t2i.get(text)
            if token_id is not None:
                eog.add(token_id)
                self._mark_control(token_id)
        for text in ALWAYS_RENDERED_TEXTS:
            token_id = t2i.get(text)
            if token_id is not None:
                attrs[token_id] = TokenAttr.USER_DEFINED
        for name in ("eos", "eot", "eom"):
            if ids[name] != NONE:
                eog.add(ids[name])

        texts_in_eog = {self.tokens[i]: i for i in eog}
        # o200k_harmony / solar-open: "<|end|>" ends a message, not the generation
        if "<|end|>" in texts_in_eog and (
                ("<|return|>" in texts_in_eog and ("<|call|>" in texts_in_eog or "<|calls|>" in texts_in_eog))
                or (("<|call|>" in texts_in_eog or "<|calls|>" in texts_in_eog) and "<|flush|>" in texts_in_eog)):
            end_id = texts_in_eog["<|end|>"]
            eog.discard(end_id)
            attrs[end_id] = TokenAttr.USER_DEFINED
        # gemma4 and plamo have an ordinary "</s>"
        if "</s>" in texts_in_eog and ("<|tool_response>" in texts_in_eog or "<|plamo:eos|>" in texts_in_eog):
            s_id = texts_in_eog["</s>"]
            eog.discard(s_id)
            attrs[s_id] = TokenAttr.NORMAL
        self.eog_ids = frozenset(eog)

    def _fix_attributes_by_name(self, gguf: GGUFFile) -> None:
        """llama.cpp's per-model attribute fixes (lstrip/rstrip), keyed on names in the metadata."""
        name = (gguf.get_str("general.name", "") or "").lower()
        arch = gguf.get_str("general.architecture", "") or ""
        t2i, attrs = self.token_to_id, self.attrs
        if any(s in self.pre for s in ("jina-v2-de", "jina-v2-es", "jina-v2-code")) or \
                any(s in arch for s in ("nomic-bert-moe", "jina-bert-v3")):
            if "<mask>" in t2i:
                attrs[t2i["<mask>"]] |= TokenAttr.LSTRIP
        elif "phi-3" in name or "phi3" in name:
            for token_id in self.special_token_ids:
                attrs[token_id] |= TokenAttr.RSTRIP
            for text, on in (("</s>", True), ("<unk>", False), ("<s>", False), ("<|endoftext|>", False)):
                if text not in t2i:
                    raise GGUFError(f"a Phi-3 vocabulary must contain {text!r}", self.path)
                if on:
                    attrs[t2i[text]] |= TokenAttr.RSTRIP
                else:
                    attrs[t2i[text]] &= ~TokenAttr.RSTRIP
        elif "modern-bert" in name:
            if "[MASK]" in t2i:
                attrs[t2i["[MASK]"]] |= TokenAttr.LSTRIP

    # -- derived -----------------------------------------------------------------------------

    @cached_property
    def special_token_ids(self) -> list[int]:
        """Control, user-defined and unknown tokens, longest text (in bytes) first.

        This is the order in which their texts are cut out of the input. The order is
        fixed when the vocabulary loads, before the attribute fixes, as in llama.cpp.
        """
        mask = TokenAttr.CONTROL | TokenAttr.USER_DEFINED | TokenAttr.UNKNOWN
        ids = np.flatnonzero(self.attrs & int(mask)).tolist()
        tokens = self.tokens
        return sorted(ids, key=lambda i: -len(tokens[i].encode("utf-8", "surrogateescape")))

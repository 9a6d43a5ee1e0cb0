"""Pre-tokenizers: how BPE vocabularies cut text into words before merging.

``tokenizer.ggml.pre`` names a pre-tokenizer; each is a list of regular expressions applied
one after another (every expression splits each piece left by the previous ones into its
matches and the gaps between them), plus a few flags that llama.cpp ties to the same name.

The expressions are written in llama.cpp's dialect and run the way llama.cpp runs them:
an expression that uses ``\\p{..}`` classes runs on the *collapsed* text, where each non-ASCII
code point is replaced by one character standing for its Unicode class (see
:mod:`.unicode`), so ``\\p{L}`` becomes ``[<letter-char>A-Za-z]``; ``\\s``, ``\\d`` and ``\\w``
are ASCII classes (non-ASCII whitespace collapses to ``\\v``); and ``$`` means end of piece.
llama.cpp's hand-written fast paths for the GPT-2, Llama-3, Qwen-2 and Qwen-3.5 expressions
behave exactly like the expressions themselves on this collapsed text, so they need no code
of their own here; the digit-grouping fast path of AFMoE/Tiny-Aya does, see
:func:`_split_digit_groups`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from . import unicode as uni

# -- expressions (llama.cpp dialect) ----------------------------------------------------------

_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN35 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+"
          r"|\s+(?!\S)|\s+")
JAIS2 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
         r"|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)"
         r"|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}")
_ASCII_PUNCT_WORD = r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+"
DEEPSEEK3 = _ASCII_PUNCT_WORD + (r"|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+"
                                 r"|\s+(?!\S)|\s+")
SPARK25 = _ASCII_PUNCT_WORD + r"|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+|[\r\n]|\s+(?!\S)|\s+"
_UPPER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"
_LOWER = r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
_CASED_WORDS = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?"
                rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}?")
YOUTU = _CASED_WORDS + r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
TINY_AYA = _CASED_WORDS + r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_LOOKAHEAD_UPPER = r"((?=[\p{L}])([^a-z]))"
_LOOKAHEAD_LOWER = r"((?=[\p{L}])([^A-Z]))"
TEKKEN = (rf"[^\r\n\p{{L}}\p{{N}}]?{_LOOKAHEAD_UPPER}*{_LOOKAHEAD_LOWER}+"
          rf"|[^\r\n\p{{L}}\p{{N}}]?{_LOOKAHEAD_UPPER}+{_LOOKAHEAD_LOWER}*"
          r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT4O = (rf"[^\r\n\p{{L}}\p{{N}}]?{_LOOKAHEAD_UPPER}*{_LOOKAHEAD_LOWER}+{_CONTRACTIONS}?"
         rf"|[^\r\n\p{{L}}\p{{N}}]?{_LOOKAHEAD_UPPER}+{_LOOKAHEAD_LOWER}*{_CONTRACTIONS}?"
         r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GRANITE_EMB_MULTI = (r"[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))*((?=[\p{L}\p{M}])([^A-Z]))+" + _CONTRACTIONS +
                     r"?|[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))+((?=[\p{L}\p{M}])([^A-Z]))*" + _CONTRACTIONS +
                     r"?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
NEWLINES = r"[^\n]+|[\n]+"
BAILINGMOE = (r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]|\s+(?!\S)|\s+")
SEED_CODER = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+"
UFAKZEKA = r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
EXAONE_MOE = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?"
              r"|\s*[\r\n]|\s+(?!\S)|\s+")
MINICPM5 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
# Non-ASCII characters are written as escapes: editors and tools may normalize them (U+1F7D
# to U+03CE, U+212A to "K"), which would silently change the classes.
DEEPSEEK_LLM_LETTERS = (
    "\\s?[A-Za-z\xb5\xc0-\xd6\xd8-\xf6\xf8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377"
    "\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556"
    "\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a"
    "\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4"
    "\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc"
    "\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f"
    "\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b"
    "\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a"
    "\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2"
    "\U000118a0-\U000118df\U0001e900-\U0001e943]+")
DEEPSEEK_LLM_PUNCT = "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"
CJK_HANGUL = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
CJK_KANA = "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"
YOUTU_SCRIPTS = ("[\uac00-\ud7a3\u3131-\u318e]+|[\uff01\u2026\u201c\u201d\u2018\u2019\u2014\uff1a\uff1b\uff0c"
                 "\u3001-\u303f\ufe30-\ufe4f]+|[\u3105-\u312f]+|[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+")
BLOOM = " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"
AFMOE_SCRIPTS = ("[\u4e00-\u9fff\u3400-\u4dbf\u8c48-\ufaff\u3040-\u309f\u30a0-\u30ff\uff65-\uff9f\u2f00-\u2fdf"
                 "\u0e40-\u0e7f\u0e80-\u0eff\u1780-\u17ff\u1000-\u109f\uaa60-\uaa7f\ua9e0-\ua9ff\uac00-\ud7af"
                 "\u1100-\u11ff]+")

# Not regular expressions: markers for splitters written in code.
DIGIT_GROUPS = "<digit groups of three, the remainder first>"


@dataclass(frozen=True)
class PreTokenizerKind:
    """One of llama.cpp's pre-tokenizer types: its expressions and how words become symbols."""

    name: str
    expressions: tuple[str, ...]
    byte_encode: bool = True  # GPT-2 byte-to-character mapping (False: raw UTF-8, SPM-style BPE)


_KINDS = [
    PreTokenizerKind("default", (r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]")),
    PreTokenizerKind("llama3", (LLAMA3,)),
    PreTokenizerKind("jais2", (JAIS2,)),
    PreTokenizerKind("deepseek-llm", ("[\r\n]", DEEPSEEK_LLM_LETTERS, DEEPSEEK_LLM_PUNCT, r"\s+$",
                                      CJK_HANGUL, r"\p{N}+")),
    PreTokenizerKind("deepseek-v3", (r"\p{N}{1,3}", CJK_KANA, DEEPSEEK3)),
    PreTokenizerKind("spark2_5", (r"\p{N}{1,3}", CJK_KANA, SPARK25, r"\p{N}")),
    PreTokenizerKind("youtu", (YOUTU_SCRIPTS, YOUTU)),
    PreTokenizerKind("deepseek-coder", ("[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", CJK_HANGUL, r"\p{N}")),
    PreTokenizerKind("falcon", (r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]")),
    PreTokenizerKind("starcoder", (r"\p{N}", GPT2)),
    PreTokenizerKind("gpt2", (GPT2,)),
    PreTokenizerKind("qwen2", (QWEN2,)),
    PreTokenizerKind("qwen35", (QWEN35,)),
    PreTokenizerKind("bloom", (BLOOM,)),
    PreTokenizerKind("viking", (BLOOM, r"\p{N}")),
    PreTokenizerKind("tekken", (TEKKEN,)),
    PreTokenizerKind("chameleon", ("<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )",
                                   r"\p{N}", r"[\p{P}!-/:-@\[-`{-~]", GPT2)),
    PreTokenizerKind("gpt4o", (GPT4O,)),
    PreTokenizerKind("granite-emb-multi", (GRANITE_EMB_MULTI,)),
    PreTokenizerKind("tiny_aya", (DIGIT_GROUPS, TINY_AYA)),
    PreTokenizerKind("superbpe", (r"\p{N}+", r"(?=(\d{3})+(?!\d))")),
    PreTokenizerKind("bailingmoe", (BAILINGMOE,)),
    PreTokenizerKind("seed-coder", (SEED_CODER,)),
    PreTokenizerKind("ufakzeka", (UFAKZEKA,)),
    PreTokenizerKind("afmoe", (DIGIT_GROUPS, AFMOE_SCRIPTS, DEEPSEEK3)),
    PreTokenizerKind("laguna", (NEWLINES, QWEN2)),
    PreTokenizerKind("exaone-moe", (EXAONE_MOE,)),
    PreTokenizerKind("gemma4", (NEWLINES,), byte_encode=False),
    PreTokenizerKind("minicpm5", (r"\p{N}{1,3}", MINICPM5)),
    PreTokenizerKind("whitespace", (r"\S+",), byte_encode=False),
]
KINDS = {k.name: k for k in _KINDS}


@dataclass(frozen=True)
class PreTokenizerName:
    """What a ``tokenizer.ggml.pre`` value selects: a kind plus the vocabulary flags llama.cpp ties to it."""

    kind: str
    clean_spaces: bool = True
    ignore_merges: bool = False
    add_bos: bool | None = None  # None: leave the default
    escape_whitespaces: bool = False
    no_bos_token: bool = False  # the BOS id defaults to none
    add_sep: bool = False


def _names(kind: str, names: str, **flags) -> dict[str, PreTokenizerName]:
    return {name: PreTokenizerName(kind, **flags) for name in names.split()}


# Every tokenizer.ggml.pre value llama.cpp accepts (src/llama-vocab.cpp, llama_vocab::impl::load).
PRE_TOKENIZERS: dict[str, PreTokenizerName] = {
    **_names("default", "default"),
    **_names("minicpm5", "minicpm5", ignore_merges=True),
    **_names("llama3", "llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2 jina-v5-nano",
             ignore_merges=True, add_bos=True),
    **_names("deepseek-llm", "deepseek-llm", clean_spaces=False),
    **_names("deepseek-coder", "deepseek-coder", clean_spaces=False),
    **_names("deepseek-v3", "deepseek-v3 hunyuan-dense hy_v4 joyai-llm", clean_spaces=False),
    **_names("spark2_5", "spark2_5", clean_spaces=False),
    **_names("youtu", "youtu", clean_spaces=False, ignore_merges=True),
    **_names("falcon", "falcon"),
    **_names("gpt2", "mpt"),
    **_names("starcoder", "starcoder"),
    **_names("gpt2", "gpt-2 phi-2 jina-es jina-de gigachat jina-v2-es jina-v2-de a.x-4.0 mellum modern-bert"),
    **_names("jais2", "jais-2"),
    **_names("gemma4", "gemma4 granite-embed-multi-311m", escape_whitespaces=True),
    **_names("gemma4", "sarvam-moe", escape_whitespaces=True, clean_spaces=False),
    **_names("gpt2", "jina-v1-en jina-v2-code roberta-bpe", add_sep=True),
    **_names("whitespace", "whitespace"),
    **_names("starcoder", "refact"),
    **_names("starcoder", "command-r", clean_spaces=False),
    **_names("qwen2", "qwen2 deepseek-r1-qwen kormo f2llmv2", clean_spaces=False),
    **_names("qwen35", "qwen35", clean_spaces=False),
    **_names("qwen2", "stablelm2"),
    **_names("gpt2", "olmo"),
    **_names("llama3", "dbrx smaug-bpe"),
    **_names("bloom", "poro-chat", clean_spaces=False),
    **_names("llama3", "chatglm-bpe", no_bos_token=True),
    **_names("llama3", "glm4 glm5", no_bos_token=True, ignore_merges=True),
    **_names("viking", "viking", clean_spaces=False),
    **_names("gpt2", "jais"),
    **_names("tekken", "tekken", clean_spaces=False, ignore_merges=True, add_bos=True),
    **_names("starcoder", "smollm", clean_spaces=False),
    **_names("starcoder", "codeshell"),
    **_names("bloom", "bloom gpt3-finnish"),
    **_names("starcoder", "exaone"),
    **_names("gpt2", "exaone4"),
    **_names("exaone-moe", "exaone-moe"),
    **_names("chameleon", "chameleon", add_bos=True, clean_spaces=False),
    **_names("starcoder", "minerva-7b"),
    **_names("qwen2", "megrez"),
    **_names("gpt4o", "gpt-4o llama4 kanana2 talkie minimax-m2", clean_spaces=False),
    **_names("granite-emb-multi", "granite-embed-multi-97m", clean_spaces=False, ignore_merges=True),
    **_names("tiny_aya", "tiny_aya cohere2moe", clean_spaces=False),
    **_names("superbpe", "superbpe", clean_spaces=False),
    **_names("gpt2", "trillion granite-docling", clean_spaces=False),
    **_names("bailingmoe", "bailingmoe bailingmoe2 llada-moe", clean_spaces=False),
    **_names("seed-coder", "seed-coder", clean_spaces=False),
    **_names("qwen2", "hunyuan solar-open", clean_spaces=False),
    **_names("ufakzeka", "ufakzeka", clean_spaces=False),
    **_names("qwen2", "grok-2", clean_spaces=False),
    **_names("afmoe", "afmoe", clean_spaces=False),
    **_names("laguna", "laguna", clean_spaces=False),
    **_names("starcoder", "mellum2"),
}
# Accepted by llama.cpp but needing splitters lamina does not have: refused with a clear error.
UNSUPPORTED_PRE_TOKENIZERS = {"kimi-k2": "its hand-written Han/letter splitter is not implemented in lamina"}


# -- running expressions the way llama.cpp does -------------------------------------------------

_CATEGORY_NAMES = {"N": "N", "L": "L", "P": "P", "M": "M", "S": "S",
                   "Lu": "L", "Ll": "L", "Lt": "L", "Lm": "L", "Lo": "L"}
_PROPERTY = re.compile(r"\\p\{(\w+)\}")


@cache
def _class_members(cls: str) -> str:
    """The members of one collapsed class inside a bracket expression: its class char and its ASCII members."""
    members = [uni.COLLAPSED_CLASS_CHAR[cls]]
    members += [chr(cp) for cp in range(128) if uni.category(cp) == cls]
    return "".join(re.escape(c) if c in "\\]^-[" else c for c in members)


def uses_classes(expression: str) -> bool:
    """True when llama.cpp would run this expression on the collapsed text."""
    return any(f"\\p{{{name}}}" in expression for name in _CATEGORY_NAMES)


def translate_expression(expression: str) -> str:
    """A llama.cpp expression rewritten for Python's ``re`` (ASCII mode) on the text it runs on."""
    collapsed = uses_classes(expression)
    if collapsed and not expression.isascii():
        raise ValueError(f"expression mixes \\p classes with non-ASCII characters, which llama.cpp rejects: {expression!r}")
    out = []
    inside = False
    i = 0
    while i < len(expression):
        c = expression[i]
        if c == "\\" and i + 1 < len(expression):
            m = _PROPERTY.match(expression, i)
            if m and collapsed:
                name = m.group(1)
                if name not in _CATEGORY_NAMES:
                    raise ValueError(f"unknown class \\p{{{name}}} in {expression!r}")
                members = _class_members(_CATEGORY_NAMES[name])
                out.append(members if inside else f"[{members}]")
                i = m.end()
                continue
            out.append(expression[i:i + 2])
            i += 2
            continue
        if c == "[" and not inside:
            inside = True
        elif c == "]" and inside:
            inside = False
        elif c == "$" and not inside:
            c = r"\Z"  # std::regex: end of the piece, never "before a final newline"
        out.append(c)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class _Step:
    pattern: re.Pattern | None  # None: the digit-group splitter
    collapsed: bool


class PreTokenizer:
    """Splits text into the words a BPE vocabulary merges, as llama.cpp's ``unicode_regex_split``."""

    def __init__(self, kind: PreTokenizerKind):
        self.kind = kind
        self.byte_encode = kind.byte_encode
        steps = []
        for expression in kind.expressions:
            if expression == DIGIT_GROUPS:
                steps.append(_Step(None, True))
            else:
                steps.append(_Step(re.compile(translate_expression(expression), re.ASCII), uses_classes(expression)))
        self.steps = tuple(steps)
        self._needs_collapse = any(s.collapsed for s in steps)
        self._needs_plain = any(not s.collapsed for s in steps)

    def split(self, text: str) -> list[str]:
        """The words of ``text`` (code points, possibly with lone surrogates), in order."""
        if not text:
            return []
        if text.isascii():
            collapsed = plain = text
        else:
            collapsed = uni.collapse(text) if self._needs_collapse else text
            plain = text.translate(uni.whitespace_to_vt_map()) if self._needs_plain else text
        spans = [(0, len(text))]
        for step in self.steps:
            view = collapsed if step.collapsed else plain
            if step.pattern is None:
                spans = _split_digit_groups(view, spans)
            else:
                spans = _split_spans(step.pattern, view, spans)
        return [text[a:b] for a, b in spans]


def _split_spans(pattern: re.Pattern, view: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    append = out.append
    whole = len(spans) == 1 and spans[0] == (0, len(view))
    for start, end in spans:
        piece = view if whole else view[start:end]
        pos = 0
        for m in pattern.finditer(piece):
            a, b = m.span()
            if a > pos:
                append((start + pos, start + a))
            if b > a:
                append((start + a, start + b))
            pos = b
        if pos < end - start:
            append((start + pos, end))
    return out


_NUMBER_RUN = re.compile("[0-9" + uni.COLLAPSED_CLASS_CHAR["N"] + "]+")


def _split_digit_groups(view: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """llama.cpp's AFMoE/Tiny-Aya digit splitter: a run of n digits becomes n % 3 digits, then threes.

    As in llama.cpp, the text before a run is not a piece of its own: it joins the run's
    first group (a later expression usually separates them again).
    """
    out = []
    for start, end in spans:
        prev = start
        for m in _NUMBER_RUN.finditer(view, start, end):
            a, b = m.span()
            rem = (b - a) % 3
            cut = a + rem if rem else a + 3
            while cut <= b:
                out.append((prev, cut))
                prev = cut
                cut += 3
        if prev < end:
            out.append((prev, end))
    return out

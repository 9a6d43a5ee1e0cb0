"""WordPiece (``tokenizer.ggml.model = "bert"``), as llama.cpp's ``llm_tokenizer_wpm``.

BERT's normalizer splits text at whitespace and around punctuation, ASCII symbols and CJK
ideographs, drops controls, optionally lowercases and strips accents; each word, prefixed
with "▁", is then cut greedily into the longest vocabulary pieces from the left. A word with
a position no piece matches becomes the unknown token.
"""

from __future__ import annotations

from . import unicode as uni

SPACE = "\u2581"


def is_chinese_char(cp: int) -> bool:
    """BERT's CJK ranges (the 0x2B920 start copies HF's value, not the Unicode block's 0x2B820)."""
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B920 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def split_words(text: str, lowercase: bool, strip_accents: bool) -> list[str]:
    """BERT's basic tokenizer over code points."""
    words = [""]
    for ch in text:
        cp = ord(ch)
        if strip_accents:
            cp = uni.nfd_first(cp)
        if cp in uni.WHITESPACE:
            if words[-1]:
                words.append("")
            continue
        cls = uni.category(cp)
        if cp == 0 or cp == 0xFFFD or cls == "C":
            continue
        if strip_accents and cls == "M":
            continue
        s = chr(uni.tolower(cp) if lowercase else cp)
        if cls == "P" or (cp < 0x7F and cls == "S") or is_chinese_char(cp):
            if words[-1]:
                words.append("")
            words[-1] = s
            words.append("")
        else:
            words[-1] += s
    if not words[-1]:
        words.pop()
    return words


class WpmEncoder:
    """Greedy longest-match WordPiece over one vocabulary; caches each word's ids."""

    def __init__(self, tokens: list[str], token_to_id: dict[str, int], unk_id: int, lowercase: bool,
                 strip_accents: bool):
        self.token_to_id = token_to_id
        self.unk_id = unk_id
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.max_token_bytes = max(len(t.encode("utf-8", "surrogateescape")) for t in tokens)
        self.cache: dict[str, tuple[int, ...]] = {}

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for word in split_words(text, self.lowercase, self.strip_accents):
            ids = self.cache.get(word)
            if ids is None:
                ids = self.cache[word] = self._encode_word(SPACE + word)
            out.extend(ids)
        return out

    def _encode_word(self, word: str) -> tuple[int, ...]:
        get = self.token_to_id.get
        n = len(word)
        ids = []
        i = 0
        while i < n:
            # longest piece first; a piece is at most max_token_bytes long in UTF-8
            j = n
            while j > i and len(word[i:j].encode("utf-8", "surrogatepass")) > self.max_token_bytes:
                j -= 1
            while j > i:
                token_id = get(word[i:j])
                if token_id is not None:
                    ids.append(token_id)
                    break
                j -= 1
            if j == i:
                return (self.unk_id,)
            i = j
        return tuple(ids) if ids else (self.unk_id,)

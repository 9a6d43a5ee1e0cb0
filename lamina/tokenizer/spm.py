"""SentencePiece-style BPE (``tokenizer.ggml.model = "llama"``), as llama.cpp's ``llm_tokenizer_spm``.

The text (spaces already escaped to U+2581 "▁") starts as one symbol per UTF-8 character;
the adjacent pair whose concatenation is a token with the highest score is merged, ties going
to the leftmost pair, until no pair forms a token. Symbols left that are not tokens fall
back to byte tokens ``<0xXX>``.

llama.cpp runs this over a whole text fragment at once. A merge can only ever join symbols
whose concatenation occurs inside some token, so wherever the text has a character ``c``
followed by "▁" and no token contains ``c▁``, no merge crosses that point: the fragment can
be cut there into words, each merged on its own and cached. The characters that do occur
before "▁" inside tokens (for Gemma 3 only ">", from ">▁</") are found once per vocabulary.
"""

from __future__ import annotations

import heapq
import re
from array import array

import numpy as np

from .errors import TokenizerError
from .unicode import utf8_sequence_length

SPACE = "\u2581"
_ABSENT = float("-inf")
_HEAP_ABOVE = 48  # words longer than this merge with a heap


def bridging_characters(tokens: list[str]) -> set[str]:
    """Characters other than "▁" that some token has immediately before a "▁"."""
    joined = "\x00".join(tokens)
    if SPACE not in joined:
        return set()
    codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    before = codes[:-1]
    hit = (codes[1:] == ord(SPACE)) & (before != ord(SPACE)) & (before != 0)
    return {chr(c) for c in np.unique(before[hit]).tolist()}


def word_pattern(bridges: set[str]) -> re.Pattern:
    """Words of escaped text: a run of "▁" and what follows it, up to the next run that may start a word."""
    if not bridges:
        return re.compile(f"{SPACE}+[^{SPACE}]*|[^{SPACE}]+")
    bridge = "".join(re.escape(c) for c in sorted(bridges))
    body = f"(?:[{bridge}]{SPACE}+|[^{SPACE}])"
    return re.compile(f"{SPACE}+{body}*|{body}+")


class ScoreMemo(dict):
    """text -> score of the token with that text (-inf if none), filled on first use.

    The merge loop looks up many short texts many times; a small dict of the ones seen
    so far is faster than the vocabulary's dict, and lookups stay in C on a hit.
    """

    def __init__(self, token_to_id: dict, scores):
        super().__init__()
        self.token_to_id = token_to_id
        self.scores = scores

    def __missing__(self, text):
        token_id = self.token_to_id.get(text)
        value = self[text] = _ABSENT if token_id is None else self.scores[token_id]
        return value


def merge_symbols(symbols: list, score: ScoreMemo) -> list:
    """Merge adjacent symbols by descending token score, leftmost first; returns the final symbols.

    Works on ``str`` or ``bytes`` symbols alike (with a memo of the same key type). Equivalent
    to llama.cpp's priority queue: each step merges the best pair among the current ones.
    """
    n = len(symbols)
    if n < 2:
        return symbols
    if n > _HEAP_ABOVE:
        return _merge_symbols_heap(symbols, score)
    pair_scores = [score[symbols[i] + symbols[i + 1]] for i in range(n - 1)]
    while pair_scores:
        best = max(pair_scores)
        if best == _ABSENT:
            break
        i = pair_scores.index(best)  # leftmost of the best
        merged = symbols[i] + symbols[i + 1]
        symbols[i:i + 2] = [merged]
        del pair_scores[i]
        if i > 0:
            pair_scores[i - 1] = score[symbols[i - 1] + merged]
        if i < len(pair_scores):
            pair_scores[i] = score[merged + symbols[i + 1]]
    return symbols


def _merge_symbols_heap(symbols: list, score: ScoreMemo) -> list:
    """The same merges for long words (CJK text has no spaces), with a heap: O(n log n), not O(n^2)."""
    n = len(symbols)
    text = list(symbols)
    prev = list(range(-1, n - 1))
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    heap = []
    for i in range(n - 1):
        s = score[text[i] + text[i + 1]]
        if s != _ABSENT:
            heap.append((-s, i, text[i], text[i + 1]))
    heapq.heapify(heap)
    while heap:
        _, i, left, right = heapq.heappop(heap)
        j = nxt[i]
        if j < 0 or text[i] != left or text[j] != right:
            continue  # stale: a side has been merged since
        text[i] = left + right
        text[j] = text[j][:0]
        nxt[i] = nxt[j]
        if nxt[j] >= 0:
            prev[nxt[j]] = i
        for a, b in ((prev[i], i), (i, nxt[i])):
            if a >= 0 and b >= 0:
                s = score[text[a] + text[b]]
                if s != _ABSENT:
                    heapq.heappush(heap, (-s, a, text[a], text[b]))
    out = []
    i = 0
    while i >= 0:
        out.append(text[i])
        i = nxt[i]
    return out


def split_utf8_symbols(data: bytes) -> list[bytes]:
    """llama.cpp's symbol split of raw bytes: each lead byte takes the length it announces."""
    out, i, n = [], 0, len(data)
    while i < n:
        k = min(utf8_sequence_length(data[i]), n - i)
        out.append(data[i:i + k])
        i += k
    return out


class SpmEncoder:
    """Encodes escaped text fragments of one vocabulary; caches each word's ids."""

    def __init__(self, tokens: list[str], token_to_id: dict[str, int], scores,
                 unk_id: int, path: str = ""):  # scores: array('d') or None
        self.tokens = tokens
        self.token_to_id = token_to_id
        self.scores = scores if scores is not None else array("d", bytes(8 * len(tokens)))
        self.unk_id = unk_id
        self.path = path
        self.words = word_pattern(bridging_characters(tokens))
        self.cache: dict[str, tuple[int, ...]] = {}
        self.memo = ScoreMemo(token_to_id, self.scores)
        self._byte_ids: dict[int, int] = {}
        self._bytes_to_id: dict[bytes, int] | None = None

    def encode(self, text: str) -> list[int]:
        """Ids of one escaped fragment (a str that may carry surrogate-escaped invalid bytes)."""
        out: list[int] = []
        cache = self.cache
        if _has_surrogates(text):
            out.extend(self._encode_raw(text.encode("utf-8", "surrogateescape")))
            return out
        for word in self.words.findall(text):
            ids = cache.get(word)
            if ids is None:
                ids = self._encode_word(word)
                if len(cache) > 200_000:
                    cache.clear()
                cache[word] = ids
            out.extend(ids)
        if len(self.memo) > 500_000:
            self.memo.clear()
        return out

    def _encode_word(self, word: str) -> tuple[int, ...]:
        token_to_id = self.token_to_id
        ids = []
        for symbol in merge_symbols(list(word), self.memo):
            token_id = token_to_id.get(symbol)
            if token_id is not None:
                ids.append(token_id)
            else:
                ids.extend(self.byte_token(b) for b in symbol.encode("utf-8", "surrogateescape"))
        return tuple(ids)

    def _encode_raw(self, data: bytes) -> list[int]:
        """Invalid UTF-8: symbols are byte runs exactly as llama.cpp cuts them."""
        table = self._bytes_table()
        ids = []
        for symbol in merge_symbols(split_utf8_symbols(data), ScoreMemo(table, self.scores)):
            token_id = table.get(symbol)
            if token_id is not None:
                ids.append(token_id)
            else:
                ids.extend(self.byte_token(b) for b in symbol)
        return ids

    def _bytes_table(self) -> dict[bytes, int]:
        if self._bytes_to_id is None:
            self._bytes_to_id = {t.encode("utf-8", "surrogateescape"): i for t, i in self.token_to_id.items()}
        return self._bytes_to_id

    def byte_token(self, byte: int) -> int:
        """The token for one raw byte: ``<0xXX>``, else the one-byte text itself, else <unk>."""
        token_id = self._byte_ids.get(byte)
        if token_id is None:
            token_id = self.token_to_id.get(f"<0x{byte:02X}>")
            if token_id is None:
                token_id = self.token_to_id.get(bytes([byte]).decode("utf-8", "surrogateescape"))
            if token_id is None:
                if self.unk_id < 0:
                    raise TokenizerError(f"{self.path}: the vocabulary has no token for byte 0x{byte:02X} "
                                         "and no unknown token (llama.cpp aborts here)")
                token_id = self.unk_id
            self._byte_ids[byte] = token_id
        return token_id


_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogates(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None

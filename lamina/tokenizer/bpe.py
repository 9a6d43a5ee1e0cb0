"""Byte-level BPE with ranked merges (``tokenizer.ggml.model = "gpt2"``), as llama.cpp's ``llm_tokenizer_bpe``.

Each pre-tokenized word is mapped byte by byte to GPT-2's printable characters (unless the
vocabulary is SPM-style, like Gemma 4), split into characters, and the adjacent pair with
the lowest merge rank is merged, leftmost first, until no pair has a rank. Ranks live in a
dict keyed by the merge line itself ("left right"), built in one C-level pass; words and
their ids are cached.
"""

from __future__ import annotations

import heapq

from .pretokenize import PreTokenizer
from .unicode import encode_utf8_lenient, gpt2_byte_translation

_NO_RANK = 1 << 62
_HEAP_ABOVE = 48  # words longer than this use the heap; shorter ones a plain scan


def merge_ranks(merges: list[str]) -> dict[str, int]:
    """Merge line -> rank; the first of duplicate lines wins, as in llama.cpp."""
    n = len(merges)
    return dict(zip(reversed(merges), range(n - 1, -1, -1)))


class RankMemo(dict):
    """"left right" -> merge rank (a huge number if none), filled on first use from the rank dict."""

    def __init__(self, ranks: dict[str, int]):
        super().__init__()
        self.ranks = ranks

    def __missing__(self, pair: str) -> int:
        value = self[pair] = self.ranks.get(pair, _NO_RANK)
        return value


def merge_word(symbols: list[str], ranks: dict[str, int], memo: RankMemo | None = None) -> list[str]:
    """Apply merges to one word's symbols: lowest rank first, leftmost among equals."""
    n = len(symbols)
    if n < 2:
        return symbols
    if n > _HEAP_ABOVE:
        return _merge_word_heap(symbols, ranks)
    if memo is None:
        memo = RankMemo(ranks)
    pair_ranks = [memo[symbols[i] + " " + symbols[i + 1]] for i in range(n - 1)]
    while pair_ranks:
        best = min(pair_ranks)
        if best == _NO_RANK:
            break
        i = pair_ranks.index(best)
        merged = symbols[i] + symbols[i + 1]
        symbols[i:i + 2] = [merged]
        del pair_ranks[i]
        if i > 0:
            pair_ranks[i - 1] = memo[symbols[i - 1] + " " + merged]
        if i < len(pair_ranks):
            pair_ranks[i] = memo[merged + " " + symbols[i + 1]]
    return symbols


def _merge_word_heap(symbols: list[str], ranks: dict[str, int]) -> list[str]:
    """The same merges for long words, with a heap and a linked list (O(n log n))."""
    n = len(symbols)
    text = list(symbols)
    prev = list(range(-1, n - 1))
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    get = ranks.get
    heap = []
    for i in range(n - 1):
        r = get(text[i] + " " + text[i + 1])
        if r is not None:
            heap.append((r, i, text[i], text[i + 1]))
    heapq.heapify(heap)
    while heap:
        r, i, left, right = heapq.heappop(heap)
        j = nxt[i]
        if j < 0 or text[i] != left or text[j] != right:
            continue  # stale: one side has changed since this pair was queued
        text[i] = left + right
        text[j] = ""
        nxt[i] = nxt[j]
        if nxt[j] >= 0:
            prev[nxt[j]] = i
        p = prev[i]
        if p >= 0:
            rr = get(text[p] + " " + text[i])
            if rr is not None:
                heapq.heappush(heap, (rr, p, text[p], text[i]))
        q = nxt[i]
        if q >= 0:
            rr = get(text[i] + " " + text[q])
            if rr is not None:
                heapq.heappush(heap, (rr, i, text[i], text[q]))
    out = []
    i = 0
    while i >= 0:
        out.append(text[i])
        i = nxt[i]
    return out


class BpeEncoder:
    """Encodes text fragments of one BPE vocabulary; caches each word's ids."""

    def __init__(self, token_to_id: dict[str, int], merges: list[str], pre: PreTokenizer,
                 ignore_merges: bool, escape_whitespaces: bool):
        self.token_to_id = token_to_id
        self.ranks = merge_ranks(merges)
        self.pre = pre
        self.byte_encode = pre.byte_encode
        self.ignore_merges = ignore_merges
        self.escape_whitespaces = escape_whitespaces
        self.newlines_only_whole = pre.kind.name == "gemma4"
        self.cache: dict[str, tuple[int, ...]] = {}
        self.memo = RankMemo(self.ranks)
        self._byte_table = gpt2_byte_translation()

    def encode(self, text: str) -> list[int]:
        """Ids of one fragment given as code points (see :func:`unicode.decode_utf8_lenient`)."""
        if self.escape_whitespaces:
            text = text.replace(" ", "\u2581")
        out: list[int] = []
        cache = self.cache
        for word in self.pre.split(text):
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
        if self.byte_encode:
            word = encode_utf8_lenient(word).decode("latin-1").translate(self._byte_table)
        else:
            word = encode_utf8_lenient(word).decode("utf-8", "surrogateescape")
        t2i = self.token_to_id
        if self.ignore_merges or (self.newlines_only_whole and not word.strip("\n")):
            token_id = t2i.get(word)
            if token_id is not None:
                return (token_id,)
        ids = []
        for symbol in merge_word(list(word), self.ranks, self.memo):
            token_id = t2i.get(symbol)
            if token_id is not None:
                ids.append(token_id)
            else:
                ids.extend(self._fallback(symbol))
        return tuple(ids)

    def _fallback(self, symbol: str) -> list[int]:
        """A final symbol that is no token: one token per byte of its UTF-8, where one exists."""
        t2i = self.token_to_id
        ids = []
        for b in symbol.encode("utf-8", "surrogateescape"):
            if self.byte_encode:
                key = chr(b) if b < 0x80 else chr(0xDC00 + b)  # the one-byte text, as the GGUF reader decodes it
            else:
                key = f"<0x{b:02X}>"
            token_id = t2i.get(key)
            if token_id is not None:
                ids.append(token_id)
        return ids

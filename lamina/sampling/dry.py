"""DRY ("Don't Repeat Yourself", koboldcpp PR 982 by pi6am), as llama.cpp runs it.

A token that would extend a sequence already seen in the last ``last_n`` tokens
by more than ``allowed_length`` loses ``multiplier * base ** (length - allowed_length)``
from its logit. Sequence breakers (by default newline, ':', '"' and '*') end a
repetition: a repeat never reaches back across one.

Breakers are strings, so each is turned into token sequences once, from the
vocabulary: every token whose text contains the breaker is a one-token breaker,
and a token whose text ends with the start of the breaker is the head of a
multi-token breaker whose tail is the tokenization of the rest.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from .candidates import Candidates
from .samplers import Sampler

_MAX_BREAKER_CHARS = 40
_MAX_BREAKER_TAIL_TOKENS = 20
_FLOAT_MAX_LOG = np.float32(88.7228391)

#: token id -> the tails (token sequences following it) that complete a breaker; () is a one-token breaker.
BreakerTable = dict[int, list[tuple[int, ...]]]


def breaker_table(breakers: Iterable[str], token_pieces: Sequence[bytes],
                  tokenize: Callable[[bytes], Sequence[int]]) -> BreakerTable:
    """Token sequences for each breaker string (llama.cpp's ``get_overlapping_token_sequences``).

    ``token_pieces[i]`` is token i's text as bytes (special tokens as their text);
    ``tokenize`` turns plain text into ids with no BOS and no special-token parsing.
    Empty breakers are skipped and long ones cut to 40 bytes, as llama.cpp does.
    """
    table: BreakerTable = {}
    for breaker in breakers:
        text = breaker.encode("utf-8") if isinstance(breaker, str) else bytes(breaker)
        if not text:
            continue
        text = text[:_MAX_BREAKER_CHARS]
        first = text[0:1]
        for token_id, word in enumerate(token_pieces):
            if text in word:
                table.setdefault(token_id, [])
                if () not in table[token_id]:
                    table[token_id].append(())
                continue
            pos = word.find(first)
            while pos != -1:
                matched = len(word) - pos  # the word's end is the breaker's start?
                if text.startswith(word[pos:]):
                    tail = tuple(tokenize(text[matched:]))[:_MAX_BREAKER_TAIL_TOKENS]
                    tails = table.setdefault(token_id, [])
                    if tail not in tails:
                        tails.append(tail)
                pos = word.find(first, pos + 1)
    return table


class Dry(Sampler):
    """The DRY penalty over the last ``last_n`` accepted tokens (see the module docstring)."""

    name = "dry"

    def __init__(self, multiplier: float, base: float, allowed_length: int, last_n: int,
                 breakers: BreakerTable):
        self.multiplier = np.float32(multiplier)
        self.base = np.float32(base)
        self.allowed_length = allowed_length
        self.last_n = last_n
        self.breakers = breakers
        self.window: deque[int] = deque(maxlen=last_n)
        self.max_exponent = 0
        if self.base > np.float32(1.000001):
            self.max_exponent = int(_FLOAT_MAX_LOG / np.float32(math.log(float(self.base))))

    def accept(self, token: int) -> None:
        self.window.append(token)

    def reset(self) -> None:
        self.window.clear()

    def apply(self, cand: Candidates) -> None:
        n = min(len(self.window), self.last_n)
        if n <= self.allowed_length:
            return
        recent = list(self.window)[::-1]  # recent[i] is llama.cpp's last_tokens.rat(i)
        rep_limit = self._repeat_limit(recent, n)
        if rep_limit < self.allowed_length:
            return
        repeat_count = _suffix_repeat_counts(recent, n, rep_limit)

        longest: dict[int, int] = {}
        for i in range(n - 1):
            length = repeat_count[i]
            if length >= self.allowed_length:
                token = recent[n - 2 - i]  # the token that followed this repeat
                if longest.get(token, -1) < length:
                    longest[token] = length
        if not longest:
            return

        penalised = [t for t in longest if () not in self.breakers.get(t, ())]
        if not penalised:
            return
        tokens = np.array(penalised, dtype=np.int64)
        exponents = np.array([longest[t] - self.allowed_length for t in penalised], dtype=np.int64)
        if self.max_exponent > 0:
            exponents = np.minimum(exponents, self.max_exponent)
        penalties = (float(self.multiplier) * np.power(float(self.base), exponents.astype(np.float64))).astype(np.float32)

        order = np.argsort(tokens)
        positions, which = cand.find(tokens[order])
        if len(positions):
            logits = cand.writable_logits()
            logits[positions] -= penalties[order][which]
            cand.probs = None
        cand.sorted = False

    def _repeat_limit(self, recent: list[int], n: int) -> int:
        """How far back a repeat may reach before the most recent sequence breaker."""
        for i in range(n):
            tails = self.breakers.get(recent[i])
            if not tails:
                continue
            longest_match = -1
            for tail in tails:
                length = len(tail)
                if longest_match < length <= i and all(tail[k] == recent[i - k - 1] for k in range(length)):
                    longest_match = length
            if longest_match >= 0:
                return i - longest_match
        return n


def _suffix_repeat_counts(recent: list[int], n: int, rep_limit: int) -> list[int]:
    """For each position, how many tokens ending there equal the last tokens of the context.

    The Z-algorithm run backwards over ``recent`` (most recent first), capped at
    ``rep_limit``; ``counts[n - 1 - k]`` belongs to the token ``k`` places back.
    """
    counts = [0] * n
    last = n - 1
    lt = rt = 0
    for k in range(1, n):
        if k > rt:
            length = 0
            while length + k < n and recent[length] == recent[length + k]:
                length += 1
            counts[last - k] = min(length, rep_limit)
            if length > 0:
                lt, rt = k, k + length - 1
        else:
            pair = k - lt
            right_part = rt - k + 1
            if counts[last - pair] < right_part:
                counts[last - k] = min(counts[last - pair], rep_limit)
            else:
                i = rt + 1
                while i < n and recent[i] == recent[i - k]:
                    i += 1
                counts[last - k] = min(i - k, rep_limit)
                lt, rt = k, i - 1
    return counts

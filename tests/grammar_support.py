"""Test helpers for grammars: string matching and random strings of a grammar.

llama.cpp's grammar tests match strings character by character with no model; here the same is
done through the real matcher with lamina's byte vocabulary (``lamina.grammar.vocabulary``:
single bytes are ids 32..287, and ids 0..31 are special tokens), so ``<[10]>`` in a grammar is
llama.cpp's ``token(10)`` in a test string.
"""

from __future__ import annotations

import random

from lamina.grammar.gbnf import Chars, Choice, Grammar, Literal, Repeat, RuleRef, Sequence, Token
from lamina.grammar.matcher import GrammarMatcher
from lamina.grammar.vocabulary import N_SPECIAL_BYTES_VOCAB as N_SPECIAL
from lamina.grammar.vocabulary import byte_ids, byte_tokenizer


def token_ids(parts) -> list[int]:
    """A test string (text, or a list of text and token ids) as ids of the byte vocabulary."""
    if isinstance(parts, str):
        parts = [parts]
    ids: list[int] = []
    for p in parts:
        ids += [p] if isinstance(p, int) else byte_ids(p)
    return ids


def matches(compiled: str, parts) -> bool:
    """Whether the whole string fits the grammar, as llama.cpp's ``match_string`` decides."""
    m = GrammarMatcher(compiled, byte_tokenizer(), N_SPECIAL + 256)
    for t in token_ids(parts):
        if not m.allows(t):
            return False
        m.accept(t)
    return m.accepting


# -- random strings of a GBNF grammar (to compare two grammars' languages) -------------------------

_POOL = [chr(c) for c in range(0x20, 0x7F)] + ["\n", "\t", "é", "ü", "中", "\x01", "😀"]


def _min_lengths(grammar: Grammar) -> dict[str, int]:
    """Shortest derivation length of every rule (a fixpoint), so deep samples can wind down."""
    inf = 10 ** 9
    best = {name: inf for name in grammar.rules}

    def length(node) -> int:
        if isinstance(node, Literal):
            return len(node.text)
        if isinstance(node, (Chars, Token)):
            return 1
        if isinstance(node, RuleRef):
            return best[node.name]
        if isinstance(node, Repeat):
            return node.min * length(node.item)
        if isinstance(node, Sequence):
            return min(inf, sum(length(i) for i in node.items))
        if isinstance(node, Choice):
            return min(length(o) for o in node.options)
        raise AssertionError(node)

    changed = True
    while changed:
        changed = False
        for name, body in grammar.rules.items():
            n = length(body)
            if n < best[name]:
                best[name], changed = n, True
    return best


def _char_of(chars: Chars, rng: random.Random) -> str:
    if not chars.negated:
        lo, hi = rng.choice(chars.ranges)
        return chr(rng.randint(lo, hi))
    for _ in range(100):
        c = rng.choice(_POOL)
        if not any(lo <= ord(c) <= hi for lo, hi in chars.ranges):
            return c
    raise ValueError("no character outside the class")


def sample(grammar: Grammar, rng: random.Random, budget: int = 60) -> str:
    """A random string of the grammar's language (tokens are not supported)."""
    shortest = _min_lengths(grammar)
    out: list[str] = []

    def cost(node) -> int:
        if isinstance(node, RuleRef):
            return shortest[node.name]
        if isinstance(node, Sequence):
            return sum(cost(i) for i in node.items)
        if isinstance(node, Choice):
            return min(cost(o) for o in node.options)
        if isinstance(node, Repeat):
            return node.min * cost(node.item)
        return len(node.text) if isinstance(node, Literal) else 1

    def walk(node, depth: int) -> None:
        tight = len(out) > budget or depth > 40
        if isinstance(node, Literal):
            out.append(node.text)
        elif isinstance(node, Chars):
            out.append(_char_of(node, rng))
        elif isinstance(node, RuleRef):
            walk(grammar.rules[node.name], depth + 1)
        elif isinstance(node, Sequence):
            for item in node.items:
                walk(item, depth)
        elif isinstance(node, Choice):
            options = node.options
            if tight:
                least = min(cost(o) for o in options)
                options = [o for o in options if cost(o) == least]
            walk(rng.choice(options), depth)
        elif isinstance(node, Repeat):
            top = node.max if node.max is not None else node.min + 3
            n = node.min if tight else rng.randint(node.min, min(top, node.min + 3))
            for _ in range(n):
                walk(node.item, depth + 1)
        else:
            raise ValueError(f"cannot sample {node}")

    walk(grammar.rules[grammar.root], 0)
    return "".join(out)


def mutations(text: str, rng: random.Random, n: int) -> list[str]:
    """Small edits of ``text``: a character dropped, doubled, replaced, or one added at the end."""
    out = []
    for _ in range(n):
        if not text:
            out.append(rng.choice(_POOL))
            continue
        i = rng.randrange(len(text))
        kind = rng.randrange(4)
        if kind == 0:
            out.append(text[:i] + text[i + 1:])
        elif kind == 1:
            out.append(text[:i] + text[i] + text[i:])
        elif kind == 2:
            out.append(text[:i] + rng.choice(_POOL) + text[i + 1:])
        else:
            out.append(text + rng.choice(_POOL))
    return out

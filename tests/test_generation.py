"""TextGeneration: when a completion ends and which text may be shown, for the library, CLI and server.

Tokens come from SmolLM2's real tokenizer (byte-level BPE, where an emoji spans several
tokens and a stop string can start in the middle of one).
"""

from __future__ import annotations

import pytest

from lamina.generation import (STOP_EOS, STOP_LIMIT, STOP_NONE, STOP_WORD, TextGeneration, stop_hold_back,
                               utf8_complete_end)
from lamina.gguf import read
from lamina.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok(model_paths):
    return Tokenizer.from_gguf(read(model_paths["smollm2"]))


def feed(gen: TextGeneration, tokens) -> list[bytes]:
    shown = []
    for t in tokens:
        shown.append(gen.add(t))
        if gen.finished:
            break
    return shown


def test_streamed_text_never_splits_a_character(tok):
    text = "Llamas 🦙 say ¡hola! 日本語"
    tokens = tok.tokenize(text, add_special=False)
    pieces = [tok.token_to_piece(t) for t in tokens]
    assert any(not is_utf8(p) for p in pieces)  # some tokens hold only part of a character
    gen = TextGeneration(tok)
    shown = feed(gen, tokens)
    assert all(is_utf8(chunk) for chunk in shown)
    assert b"".join(shown) + gen.release_all() == text.encode()
    assert gen.stop_type == STOP_NONE and not gen.finished


def is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_a_stop_string_ends_the_text_just_before_it_and_is_never_shown(tok):
    tokens = tok.tokenize("The answer is Paris. Then more text follows.", add_special=False)
    gen = TextGeneration(tok, stops=["s. Th"])
    shown = feed(gen, tokens)
    assert gen.stop_type == STOP_WORD and gen.stopping_word == "s. Th" and gen.finish_reason == "stop"
    assert gen.text == b"The answer is Pari"
    assert b"".join(shown) == b"The answer is Pari"
    assert all(b"s." not in chunk for chunk in shown)  # the start of the stop string was held back


def test_an_end_of_generation_token_ends_without_joining_the_text(tok):
    eos = tok.eos_id
    tokens = tok.tokenize("Hello", add_special=False)
    gen = TextGeneration(tok)
    feed(gen, [*tokens, eos, *tokens])
    assert gen.stop_type == STOP_EOS and gen.tokens == tokens and gen.text == b"Hello"
    kept = TextGeneration(tok, ignore_eos=True)
    feed(kept, [*tokens, eos])
    assert kept.stop_type == STOP_NONE and kept.tokens == [*tokens, eos]


def test_the_token_limit_ends_after_the_last_token(tok):
    tokens = tok.tokenize("one two three four five", add_special=False)
    gen = TextGeneration(tok, max_tokens=3)
    feed(gen, tokens)
    assert gen.stop_type == STOP_LIMIT and gen.tokens == tokens[:3] and gen.finish_reason == "length"
    with pytest.raises(RuntimeError):
        gen.add(tokens[3])
    assert TextGeneration(tok, max_tokens=0).stop_type == STOP_LIMIT


def test_helpers():
    assert utf8_complete_end("a🦙".encode()[:3], 3) == 1
    assert utf8_complete_end("a🦙".encode(), 5) == 5
    assert utf8_complete_end(b"abc", 3) == 3
    assert stop_hold_back(b"Hello wor", [b"world", b"xyz"]) == 3
    assert stop_hold_back(b"Hello", [b"world"]) == 0

"""Pieces of the tokenizers checked on their own: Unicode classes, pre-tokenizer rules, SPM word cutting,
Unigram, the space clean-up, and the streaming detokenizer."""

from __future__ import annotations

import random

import numpy as np
import pytest

import lamina.gguf
from lamina.tokenizer import Tokenizer
from lamina.tokenizer import unicode as uni
from lamina.tokenizer.detokenize import clean_up_spaces
from lamina.tokenizer.pretokenize import KINDS, PreTokenizer, translate_expression
from lamina.tokenizer.spm import ScoreMemo, bridging_characters, merge_symbols
from lamina.testing.models import shared_dir

VOCAB_DIR = shared_dir() / "refdata" / "vocab"


# -- Unicode as llama.cpp sees it ---------------------------------------------------------------------------

def test_classes_are_unicode_15_1():
    assert uni.UNICODE_VERSION == "15.1.0"
    assert uni.category(ord("a")) == "L" and uni.category(ord("7")) == "N" and uni.category(ord("$")) == "S"
    assert uni.category(0x0CF3) == "M"  # KANNADA SIGN COMBINING ANUSVARA ABOVE RIGHT: new in 15.0
    assert uni.category(0x2FFC) == "S"  # IDEOGRAPHIC DESCRIPTION CHARACTER SURROUND FROM RIGHT: new in 15.1
    assert uni.category(0x0897) == "U"  # ARABIC PEPET: only from 16.0 on, so still unassigned here
    assert uni.category(0x110000) == "U"


def test_whitespace_is_white_space_property_only():
    assert 0x1C not in uni.WHITESPACE and "\x1c".isspace()  # Python says space, Unicode (and llama.cpp) do not
    assert {0x85, 0xA0, 0x3000} <= uni.WHITESPACE
    assert uni.collapse("a\u3000b\u00e9\u0661") == "a\x0bb\xd2\xd1"


def test_simple_lowercase_and_nfd():
    assert uni.tolower(0x130) == ord("i")  # the one-code-point mapping, not Python's "i̇"
    assert uni.tolower(ord("Ä")) == ord("ä")
    assert uni.nfd_first(ord("é")) == ord("e")


# -- pre-tokenizers ---------------------------------------------------------------------------------------

def test_llama3_splits_digits_in_threes_and_keeps_newline_runs():
    pre = PreTokenizer(KINDS["llama3"])
    assert pre.split("x 1234567\n\n  y") == ["x", " ", "123", "456", "7", "\n\n", " ", " y"]


def test_gpt2_contractions_are_case_sensitive_but_llama3_are_not():
    assert PreTokenizer(KINDS["gpt2"]).split("I'M") == ["I", "'", "M"]
    assert PreTokenizer(KINDS["llama3"]).split("I'M") == ["I", "'M"]


def test_digit_groups_keep_text_before_a_run_with_its_first_group():
    # llama.cpp's AFMoE/Tiny-Aya digit splitter; the next expression separates "ab" again
    pre = PreTokenizer(KINDS["afmoe"])
    assert pre.split("ab1234567 x") == ["ab", "1", "234", "567", " x"]


def test_dollar_means_end_of_piece_not_before_a_final_newline():
    assert translate_expression(r"\s+$") == r"\s+\Z"
    pre = PreTokenizer(KINDS["deepseek-llm"])
    assert pre.split("a  \n") == ["a", "  ", "\n"]


def test_class_expansion_uses_collapsed_characters():
    assert translate_expression(r"\p{N}") == "[\xd10123456789]"
    assert translate_expression(r"[^\s\p{L}]").startswith("[^\\s\xd2A")


# -- SPM: cutting a fragment into words changes nothing -------------------------------------------------------

def test_spm_words_give_the_same_merges_as_the_whole_fragment():
    tok = Tokenizer.from_gguf(lamina.gguf.read(VOCAB_DIR / "ggml-vocab-llama-spm.gguf"))
    enc = tok._encoder
    rng = random.Random(1234)
    alphabet = "abcdeéfghij klmnop qrstuv wxyz,.;'!? 0123 日本 \t\n"
    for _ in range(200):
        text = "\u2581" + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))).replace(" ", "\u2581")
        whole = merge_symbols(list(text), ScoreMemo(enc.token_to_id, enc.scores))
        whole_ids = []
        for symbol in whole:
            token_id = enc.token_to_id.get(symbol)
            whole_ids += [token_id] if token_id is not None else [enc.byte_token(b) for b in symbol.encode()]
        enc.cache.clear()
        assert enc.encode(text) == whole_ids, text


def test_long_words_merge_the_same_with_the_heap():
    from lamina.tokenizer import bpe, spm

    tok = Tokenizer.from_gguf(lamina.gguf.read(VOCAB_DIR / "ggml-vocab-llama-spm.gguf"))
    enc = tok._encoder
    rng = random.Random(99)
    for _ in range(30):
        word = "\u2581" + "".join(rng.choice("abcdeéfghijklmn日本語") for _ in range(rng.randint(49, 300)))
        memo = ScoreMemo(enc.token_to_id, enc.scores)
        heap = spm._merge_symbols_heap(list(word), memo)
        # the plain scan, forced by raising the threshold
        saved = spm._HEAP_ABOVE
        spm._HEAP_ABOVE = 10**9
        try:
            plain = spm.merge_symbols(list(word), memo)
        finally:
            spm._HEAP_ABOVE = saved
        assert heap == plain

    qwen = Tokenizer.from_gguf(lamina.gguf.read(VOCAB_DIR / "ggml-vocab-qwen2.gguf"))._encoder
    for _ in range(30):
        word = "".join(rng.choice("abcdefghijklmnopĠ") for _ in range(rng.randint(49, 300)))
        saved = bpe._HEAP_ABOVE
        bpe._HEAP_ABOVE = 10**9
        try:
            plain = bpe.merge_word(list(word), qwen.ranks)
        finally:
            bpe._HEAP_ABOVE = saved
        assert bpe._merge_word_heap(list(word), qwen.ranks) == plain


def test_long_unspaced_text_takes_bounded_time():
    import time

    tok = Tokenizer.from_gguf(lamina.gguf.read(VOCAB_DIR / "ggml-vocab-llama-spm.gguf"))
    text = "日本語のテキスト" * 2000  # 16k characters and not one space
    start = time.process_time()
    ids = tok.tokenize(text, add_special=False)
    assert time.process_time() - start < 20  # quadratic merging would take minutes
    assert tok.detokenize(ids).decode().strip() == text


def test_bridging_characters_are_found():
    assert bridging_characters(["\u2581a", "a\u2581", "x\u2581\u2581y", "\u2581\u2581"]) == {"a", "x"}


# -- Unigram (no llama.cpp reference file exists: expectations worked out by hand) ----------------------------

@pytest.fixture(scope="module")
def ugm(tmp_path_factory) -> Tokenizer:
    tokens = ["<pad>", "</s>", "<unk>", "\u2581", "\u2581hello", "\u2581he", "llo", "\u2581world", "o", "w",
              "\u2581wor", "ld", "<extra_id_0>"]
    types = [3, 3, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4]
    scores = [0, 0, 0, -2.0, -5.0, -3.0, -3.0, -6.0, -4.0, -4.0, -3.5, -3.5, 0]
    path = tmp_path_factory.mktemp("ugm") / "t5-vocab.gguf"
    lamina.gguf.write(path, {
        "tokenizer.ggml.model": "t5", "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": np.array(scores, np.float32), "tokenizer.ggml.token_type": np.array(types, np.int32),
        "tokenizer.ggml.add_space_prefix": True, "tokenizer.ggml.remove_extra_whitespaces": True,
        "tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.unknown_token_id": 2}, [])
    return Tokenizer.from_gguf(lamina.gguf.read(path))


def test_unigram_picks_the_best_total_score(ugm):
    # "▁hello" (-5) beats "▁he" + "llo" (-6); "▁world" (-6) beats "▁wor" + "ld" (-7); EOS is added
    assert ugm.tokenize("hello world") == [4, 7, 1]
    assert ugm.tokenize("  hello   world  ", add_special=False) == [4, 7]  # extra spaces removed
    assert ugm.detokenize([4, 7]) == b"hello world"


def test_unigram_user_defined_tokens_and_unknown_runs(ugm):
    assert ugm.tokenize("hello<extra_id_0>world", add_special=False) == [4, 12, 7]
    # "h" and "é" have no token: one <unk> for the run (score: lowest normal score - 10)
    assert ugm.tokenize("héllo", add_special=False) == [3, 2, 6]


# -- detokenizing ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, cleaned", [
    (b"Hello , world !", b"Hello, world!"),
    (b"a ' b", b"a'b"),
    (b"it 's I 'm we 're you 've", b"it's I'm we're you've"),
    (b"don 't I 'd we 'll", b"don 't I 'd we 'll"),
    (b" .", b"."),
])
def test_space_clean_up_matches_llamacpp(text, cleaned):
    assert clean_up_spaces(text) == cleaned


def test_streaming_holds_back_partial_characters():
    tok = Tokenizer.from_gguf(lamina.gguf.read(VOCAB_DIR / "ggml-vocab-llama-spm.gguf"))
    byte = {b: tok.vocab.token_to_id[f"<0x{b:02X}>"] for b in range(256)}
    stream = tok.incremental_detokenizer()
    assert stream.feed(byte[0xF0]) == ""
    assert stream.feed([byte[0x9F], byte[0xA6]]) == ""
    assert stream.feed(byte[0x99]) == "🦙"
    assert stream.feed(byte[0xFF]) == "\ufffd"  # can never start a character
    assert stream.feed(byte[0xE2]) == ""
    assert stream.flush() == "\ufffd"

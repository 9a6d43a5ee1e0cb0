"""Bad input (shared/docs/BAD-INPUTS.md items 11, 17, 18, 20): malformed vocabulary metadata, odd text, bad ids."""

from __future__ import annotations

import numpy as np
import pytest

import lamina.gguf
from lamina.gguf import GGUFError, MetadataValue, ValueType
from lamina.tokenizer import Tokenizer, TokenizerError
from lamina.tokenizer.unicode import decode_utf8_lenient
from lamina.testing.models import shared_dir

VOCAB_DIR = shared_dir() / "refdata" / "vocab"


def spm_metadata(**overrides) -> dict:
    """A tiny valid SentencePiece vocabulary: <unk> <s> </s>, 256 byte tokens, a few pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581", "a", "b", "\u2581a", "ab"]
    types = [2, 3, 3] + [6] * 256 + [1] * 5
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-1.0, -2.0, -3.0, -1.5, -2.5]
    meta = {
        "general.architecture": "llama",
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": np.array(scores, dtype=np.float32),
        "tokenizer.ggml.token_type": np.array(types, dtype=np.int32),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }
    meta.update(overrides)
    return {k: v for k, v in meta.items() if v is not None}


def build(tmp_path, metadata) -> Tokenizer:
    path = tmp_path / "vocab.gguf"
    lamina.gguf.write(path, metadata, [])
    return Tokenizer.from_gguf(lamina.gguf.read(path))


def refused(tmp_path, metadata, *fragments) -> GGUFError:
    with pytest.raises(GGUFError) as caught:
        build(tmp_path, metadata)
    message = str(caught.value)
    assert "vocab.gguf" in message
    for fragment in fragments:
        assert fragment in message, message
    return caught.value


def test_the_tiny_vocabulary_works(tmp_path):
    tok = build(tmp_path, spm_metadata())
    # "▁ab▁a": "▁a" (score -1.5) beats "ab" (-2.5), so "b" stays alone
    assert tok.tokenize("ab a") == [1, 262, 261, 262]
    assert tok.tokenize("ab a", add_special=False) == [262, 261, 262]
    assert tok.detokenize([262, 261, 262]) == b"ab a"
    assert tok.tokenize("\n", add_special=False) == [259, 3 + 0x0A]  # "▁" then the byte token <0x0A>


# -- malformed metadata: GGUFError naming the key and what is wrong -----------------------------------

def test_scores_of_another_length(tmp_path):
    refused(tmp_path, spm_metadata(**{"tokenizer.ggml.scores": np.zeros(10, np.float32)}),
            "tokenizer.ggml.scores", "10", "264")


def test_token_types_of_another_length(tmp_path):
    refused(tmp_path, spm_metadata(**{"tokenizer.ggml.token_type": np.ones(300, np.int32)}),
            "tokenizer.ggml.token_type", "300", "264")


def test_scores_stored_as_integers(tmp_path):
    refused(tmp_path, spm_metadata(**{"tokenizer.ggml.scores": np.zeros(264, np.int32)}),
            "tokenizer.ggml.scores", "float", "INT32")


def test_tokens_that_are_not_strings(tmp_path):
    refused(tmp_path, spm_metadata(**{"tokenizer.ggml.tokens": np.arange(264, dtype=np.int32)}),
            "tokenizer.ggml.tokens", "string")


def test_model_that_is_not_a_string(tmp_path):
    refused(tmp_path, spm_metadata(**{"tokenizer.ggml.model": 7}), "tokenizer.ggml.model", "string")


@pytest.mark.parametrize("key", ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"])
@pytest.mark.parametrize("value", [264, 100_000, 2**32 - 1])
def test_special_id_outside_the_vocabulary(tmp_path, key, value):
    refused(tmp_path, spm_metadata(**{key: value}), key, str(value), "264")


def test_unknown_tokenizer_model(tmp_path):
    refused(tmp_path, spm_metadata(**{"tokenizer.ggml.model": "sentencepiece9"}), "'sentencepiece9'",
            "tokenizer.ggml.model")


def test_missing_tokenizer(tmp_path):
    refused(tmp_path, {"general.architecture": "llama"}, "tokenizer.ggml.model", "missing")


def test_missing_and_empty_token_list(tmp_path):
    refused(tmp_path, spm_metadata(**{"tokenizer.ggml.tokens": None, "tokenizer.ggml.scores": None,
                                      "tokenizer.ggml.token_type": None}), "tokenizer.ggml.tokens")
    empty = MetadataValue([], ValueType.ARRAY, ValueType.STRING)
    refused(tmp_path, spm_metadata(**{"tokenizer.ggml.tokens": empty, "tokenizer.ggml.scores": None,
                                      "tokenizer.ggml.token_type": None}), "tokenizer.ggml.tokens", "empty")


def bpe_metadata(pre="gpt-2", **overrides) -> dict:
    meta = spm_metadata(**{"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre,
                           "tokenizer.ggml.merges": ["a b"], "tokenizer.ggml.scores": None})
    meta.update(overrides)
    return {k: v for k, v in meta.items() if v is not None}


def test_unknown_pre_tokenizer(tmp_path):
    refused(tmp_path, bpe_metadata(pre="nonsense-pre"), "'nonsense-pre'", "tokenizer.ggml.pre")


def test_pre_tokenizer_lamina_does_not_implement(tmp_path):
    refused(tmp_path, bpe_metadata(pre="kimi-k2"), "'kimi-k2'", "not supported")


def test_bpe_without_merges(tmp_path):
    refused(tmp_path, bpe_metadata(**{"tokenizer.ggml.merges": None}), "tokenizer.ggml.merges")


def test_merges_that_are_not_strings(tmp_path):
    refused(tmp_path, bpe_metadata(**{"tokenizer.ggml.merges": np.arange(3, dtype=np.int32)}),
            "tokenizer.ggml.merges", "string")


def test_every_named_pre_tokenizer_builds(tmp_path):
    from lamina.tokenizer.pretokenize import PRE_TOKENIZERS

    for name in PRE_TOKENIZERS:
        tok = build(tmp_path, bpe_metadata(pre=name))
        tok.tokenize("Hello world 1234567 ünïcödé 日本語\n\n  x's", add_special=False)


# -- odd text ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spm() -> Tokenizer:
    return Tokenizer.from_gguf(lamina.gguf.read(VOCAB_DIR / "ggml-vocab-llama-spm.gguf"))


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    return Tokenizer.from_gguf(lamina.gguf.read(VOCAB_DIR / "ggml-vocab-qwen2.gguf"))


def test_empty_text(spm, bpe):
    assert spm.tokenize(b"") == [spm.bos_id]
    assert spm.tokenize("", add_special=False) == []
    assert bpe.tokenize("") == []
    assert spm.detokenize([]) == b""


def test_nul_bytes_are_ordinary_text(spm, bpe):
    for tok in (spm, bpe):
        ids = tok.tokenize(b"a\x00b\x00", add_special=False)
        assert len(ids) >= 3
        assert tok.detokenize(ids).lstrip(b" ") == b"a\x00b\x00"


def test_invalid_utf8_falls_back_to_byte_tokens_in_spm(spm):
    byte = {b: spm.vocab.token_to_id[f"<0x{b:02X}>"] for b in range(256)}
    # 0xFF announces a 4-byte sequence, so llama.cpp takes the "b" after it into the same symbol
    ids = spm.tokenize(b"a\xffb", add_special=False)
    assert ids[-2:] == [byte[0xFF], byte[ord("b")]]
    assert spm.detokenize(ids) == b"a\xffb"
    ids = spm.tokenize(b"\xe4\xbd", add_special=False)  # a cut-off character
    assert ids[-2:] == [byte[0xE4], byte[0xBD]]


def test_invalid_utf8_becomes_replacement_characters_in_bpe(bpe):
    assert bpe.tokenize(b"a\xffb", add_special=False) == bpe.tokenize("a\ufffdb", add_special=False)
    # one U+FFFD per byte that starts no sequence (Python's "replace" would give one for both)
    assert bpe.tokenize(b"x\xe4\xbd", add_special=False) == bpe.tokenize("x\ufffd\ufffd", add_special=False)
    assert bpe.detokenize(bpe.tokenize(b"\xc3", add_special=False)) == "\ufffd".encode()


def test_lone_surrogates_in_str_input(spm, bpe):
    for tok in (spm, bpe):
        ids = tok.tokenize("a\ud800b", add_special=False)
        assert ids and all(0 <= i < tok.n_vocab for i in ids)


def test_text_of_another_type(spm):
    with pytest.raises(TypeError, match="bytes or str"):
        spm.tokenize(12345)


def test_lenient_decoding_matches_llamacpp():
    assert decode_utf8_lenient(b"\xe4\xbd") == "\ufffd\ufffd"
    assert decode_utf8_lenient(b"\xc0\x80a") == "\x00a"  # overlong forms decode
    assert decode_utf8_lenient(b"\xed\xa0\x80") == "\ud800"  # so do surrogates
    assert decode_utf8_lenient(b"\xff\x80abc") == "\ufffd\ufffdabc"
    assert decode_utf8_lenient("ok €".encode()) == "ok €"


# -- ids outside the vocabulary -------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [-1, 32000, 2**31, 2**63])
def test_detokenize_rejects_ids_outside_the_vocabulary(spm, bad):
    with pytest.raises(TokenizerError, match=rf"token id {bad} is outside the vocabulary .*31999"):
        spm.detokenize([1, 2, bad])
    with pytest.raises(TokenizerError, match=str(bad)):
        spm.token_to_piece(bad)
    with pytest.raises(TokenizerError, match=str(bad)):
        spm.incremental_detokenizer().feed([bad])


def test_detokenize_rejects_ids_that_are_not_integers(spm):
    with pytest.raises(TokenizerError, match="not an integer"):
        spm.detokenize(["seven"])
    assert isinstance(TokenizerError("x"), ValueError)

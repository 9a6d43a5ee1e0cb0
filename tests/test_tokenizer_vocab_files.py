"""llama.cpp's own tokenizer conformance files (shared/refdata/vocab): every case, every vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest

import lamina.gguf
from lamina.tokenizer import Tokenizer
from lamina.tokenizer.detokenize import clean_up_spaces
from lamina.tokenizer.wpm import split_words
from lamina.testing.models import shared_dir

SEPARATOR = "\n__ggml_vocab_test__\n"
VOCAB_DIR = shared_dir() / "refdata" / "vocab"
VOCABS = sorted(p.name for p in VOCAB_DIR.glob("ggml-vocab-*.gguf"))


def load_cases(path: Path) -> list[tuple[str, list[int]]]:
    texts = (path.parent / (path.name + ".inp")).read_bytes().decode("utf-8").split(SEPARATOR)
    lines = (path.parent / (path.name + ".out")).read_text().split("\n")
    assert len(lines) >= len(texts), f"{path.name}: fewer expected lines than texts"
    return [(text, [int(x) for x in line.split()]) for text, line in zip(texts, lines)]


_TOKENIZERS: dict[str, Tokenizer] = {}


def tokenizer_for(name: str) -> Tokenizer:
    if name not in _TOKENIZERS:
        _TOKENIZERS[name] = Tokenizer.from_gguf(lamina.gguf.read(VOCAB_DIR / name))
    return _TOKENIZERS[name]


def test_all_conformance_files_are_present():
    # the kinds the issue names: SPM, BPE with many pre-tokenizers, WPM
    assert len(VOCABS) >= 11, VOCABS
    kinds = {tokenizer_for(name).kind for name in VOCABS}
    assert kinds == {"spm", "bpe", "wpm"}


@pytest.mark.parametrize("name", VOCABS)
def test_every_case_gives_llamacpp_ids(name):
    tok = tokenizer_for(name)
    cases = load_cases(VOCAB_DIR / name)
    assert len(cases) > 40
    wrong = []
    for text, expected in cases:
        got = tok.tokenize(text, add_special=False, parse_special=False)
        if got != expected:
            wrong.append((text, expected, got))
    assert not wrong, f"{len(wrong)} of {len(cases)} cases differ; first: {wrong[0]!r}"


@pytest.mark.parametrize("name", VOCABS)
def test_detokenizing_gives_the_text_back(name):
    tok = tokenizer_for(name)
    for text, expected in load_cases(VOCAB_DIR / name):
        back = tok.detokenize(expected, special=True)
        if tok.kind == "wpm":
            # WordPiece is lossy by design: lowercased, accents stripped, words re-joined by spaces
            if tok.unk_id in expected:
                continue
            want = "".join(" " + w for w in split_words(text, True, True)).encode()
        else:
            want = text.encode()
        if tok.vocab.flags.clean_spaces:
            want = clean_up_spaces(want)  # llama.cpp's detokenizer applies HF's space clean-up
        if tok.kind == "spm" and back != want:
            assert back == b" " + want or b" " + back == want, (text, back)  # llama.cpp's own allowance
            continue
        assert back == want, (text, back)


def test_clean_up_applies_where_llamacpp_applies_it():
    tok = tokenizer_for("ggml-vocab-gpt-2.gguf")
    ids = tok.tokenize("you 😁 ?", add_special=False)
    assert tok.detokenize(ids) == "you 😁?".encode()
    raw = b"".join(tok.token_to_piece(i) for i in ids)
    assert raw == "you 😁 ?".encode()

"""The vocabulary as llguidance's matcher sees it, built from the GGUF file alone.

Each token is its bytes; control tokens (and user-defined tokens written like ``<...>``) carry
llguidance's 0xFF marker, so grammar text can never spell them by accident and ``<[id]>`` or
``<|name|>`` can. Every end-of-generation id counts as llguidance's end of sequence, so any of
them is allowed exactly where the grammar may end, as llama.cpp's grammar sampler allows them.
Building it walks the whole vocabulary (about a second for 152k tokens), so it is made once per
tokenizer and kept on it.
"""

from __future__ import annotations

from lamina.tokenizer.vocab import TokenAttr

_SPECIAL_MARK = b"\xff"


class _VocabularyView:
    """What ``llguidance.TokenizerWrapper`` reads: token bytes, end ids, and a tokenize function."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.tokens = []
        self.special_token_ids = []
        for i, piece in enumerate(tokenizer.all_pieces):  # special tokens rendered as their text
            attr = tokenizer.token_attr(i)
            if attr & TokenAttr.CONTROL or (attr & TokenAttr.USER_DEFINED and piece.startswith(b"<")
                                            and piece.endswith(b">")):
                piece = _SPECIAL_MARK + piece
                self.special_token_ids.append(i)
            self.tokens.append(piece)
        eog = sorted(tokenizer.eog_ids)
        self.eos_token_id = eog[0] if eog else 0
        self.bos_token_id = None
        self.eog_ids = eog

    def __call__(self, text: bytes) -> list[int]:
        return self._tokenizer.tokenize(bytes(text), add_special=False, parse_special=False)


def matcher_tokenizer(tokenizer):
    """The ``llguidance.LLTokenizer`` for a lamina :class:`~lamina.tokenizer.Tokenizer` (cached on it)."""
    cached = getattr(tokenizer, "_llguidance_tokenizer", None)
    if cached is not None:
        return cached
    import llguidance

    view = _VocabularyView(tokenizer)
    made = llguidance.LLTokenizer(llguidance.TokenizerWrapper(view), n_vocab=tokenizer.n_vocab,
                                  eos_token=view.eog_ids or None)
    tokenizer._llguidance_tokenizer = made
    return made


N_SPECIAL_BYTES_VOCAB = 32


class _ByteVocabulary:
    """A vocabulary of 32 special tokens (ids 0..31, 0 ending the sequence) and the 256 bytes
    (ids 32..287): what a grammar allows can be checked on text with no model, as llama.cpp's
    grammar tests do, and ``<[10]>`` in a grammar is a token that no text spells."""

    def __init__(self):
        n = N_SPECIAL_BYTES_VOCAB
        self.tokens = [b"\xff<|s%d|>" % i for i in range(n)] + [bytes([b]) for b in range(256)]
        self.eos_token_id = 0
        self.bos_token_id = None
        self.special_token_ids = list(range(n))

    def __call__(self, data: bytes) -> list[int]:
        return [N_SPECIAL_BYTES_VOCAB + b for b in data]


_BYTE_TOKENIZER = None


def byte_tokenizer():
    """The ``LLTokenizer`` of the byte vocabulary (made once)."""
    global _BYTE_TOKENIZER
    if _BYTE_TOKENIZER is None:
        import llguidance

        _BYTE_TOKENIZER = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_ByteVocabulary()), slices=[])
    return _BYTE_TOKENIZER


def byte_ids(text: str) -> list[int]:
    """``text`` as ids of the byte vocabulary."""
    return [N_SPECIAL_BYTES_VOCAB + b for b in text.encode("utf-8")]

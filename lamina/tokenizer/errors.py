"""The tokenizer's error type."""

from __future__ import annotations


class TokenizerError(ValueError):
    """A request the tokenizer cannot serve: an id outside the vocabulary, text it cannot encode.

    Malformed vocabulary metadata is reported as :class:`lamina.gguf.GGUFError` instead,
    because the file is what is wrong.
    """

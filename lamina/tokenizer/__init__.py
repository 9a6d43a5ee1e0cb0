"""Tokenizers that give exactly llama.cpp's token ids, built from GGUF ``tokenizer.*`` metadata alone.

>>> from lamina.tokenizer import Tokenizer
>>> tok = Tokenizer.from_gguf(lamina.gguf.read("model.gguf"))
>>> ids = tok.tokenize("Hello world")          # add_special=True, parse_special=False
>>> tok.detokenize(ids)                         # bytes

Modules: :mod:`.vocab` (metadata, special ids, attributes), :mod:`.pretokenize` (the
pre-tokenizer table), :mod:`.spm`, :mod:`.bpe`, :mod:`.wpm`, :mod:`.ugm` (the algorithms),
:mod:`.detokenize` (pieces, detokenizing, streaming), :mod:`.unicode` (llama.cpp's view of
code points).
"""

from .detokenize import IncrementalDetokenizer
from .errors import TokenizerError
from .tokenizer import Tokenizer
from .vocab import TokenAttr, TokenType, Vocab

__all__ = ["IncrementalDetokenizer", "TokenAttr", "TokenType", "Tokenizer", "TokenizerError", "Vocab"]

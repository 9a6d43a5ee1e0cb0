"""Ids back to bytes, as llama.cpp's ``llama_token_to_piece`` and ``llama_detokenize``, plus streaming.

A token's *piece* is the bytes it stands for: SPM texts with "▁" turned back into spaces,
``<0xXX>`` byte tokens as their byte, GPT-2 byte characters mapped back to bytes, control
and unknown tokens as their text only when ``special`` is asked for (else nothing),
user-defined tokens always as their text. Pieces are made on first use and kept.
"""

from __future__ import annotations

import codecs
import re

from .errors import TokenizerError
from .unicode import gpt2_char_to_byte
from .vocab import TokenAttr, Vocab

_SPECIAL = TokenAttr.UNKNOWN | TokenAttr.CONTROL


class PieceTable:
    """Per-token pieces (``special=True`` form), computed lazily from the vocabulary."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self.n_vocab = vocab.n_tokens
        self._pieces: dict[int, bytes] = {}
        self._spm_style = vocab.kind in ("spm", "wpm", "ugm") or (vocab.kind == "bpe" and vocab.flags.escape_whitespaces)

    def check(self, token_id) -> int:
        try:
            token_id = int(token_id)
        except (TypeError, ValueError):
            raise TokenizerError(f"token id {token_id!r} is not an integer") from None
        if not 0 <= token_id < self.n_vocab:
            raise TokenizerError(f"token id {token_id} is outside the vocabulary (valid ids are 0 to {self.n_vocab - 1})")
        return token_id

    def piece(self, token_id: int, special: bool) -> bytes:
        """The bytes of one (already range-checked) id."""
        if not special and self.vocab.attrs[token_id] & _SPECIAL:
            return b""
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self._make(token_id)
        return piece

    def _make(self, token_id: int) -> bytes:
        vocab = self.vocab
        attr = int(vocab.attrs[token_id])
        text = vocab.tokens[token_id]
        if attr & (_SPECIAL | TokenAttr.USER_DEFINED):
            return _raw(text)
        if attr & TokenAttr.NORMAL:
            if self._spm_style:
                return _raw(text.replace("\u2581", " "))
            return gpt2_decode(text)
        if attr & TokenAttr.BYTE:
            return bytes([int(text[3:5], 16)])
        return b""  # unused and undefined tokens render as nothing


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def gpt2_decode(text: str) -> bytes:
    """GPT-2 byte characters back to bytes; a character outside the table is spelled out as llama.cpp does."""
    table = gpt2_char_to_byte()
    try:
        return bytes(table[c] for c in text)
    except KeyError:
        pass
    out = bytearray()
    for c in text:
        b = table.get(c)
        if b is not None:
            out.append(b)
        else:
            utf8 = _raw(c)
            out += b"[UNK_BYTE_0x" + utf8.hex().encode() + _raw(text) + b"]"
    return bytes(out)


_SPACE_BEFORE_PUNCT = re.compile(rb" (?=[?!.,])")
_SPACED_APOSTROPHE = re.compile(rb" ' ")
_SPACE_BEFORE_CONTRACTION = re.compile(rb" '(?=s|m|re|ve)")


def clean_up_spaces(text: bytes) -> bytes:
    """HF's ``clean_up_tokenization_spaces`` as llama.cpp applies it: its three passes, in order.

    1. drop a space before ``? ! . ,``; 2. `` ' `` becomes ``'``; 3. drop the space before
    ``'s``, ``'m``, ``'re`` and ``'ve`` (not before ``'t``, ``'d``, ``'ll``).
    """
    text = _SPACE_BEFORE_PUNCT.sub(b"", text)
    text = _SPACED_APOSTROPHE.sub(b"'", text)
    return _SPACE_BEFORE_CONTRACTION.sub(b"'", text)


def detokenize(pieces: PieceTable, ids, special: bool = False, remove_special: bool = False) -> bytes:
    """llama.cpp's ``llama_detokenize(..., remove_special, unparse_special=special)``."""
    vocab = pieces.vocab
    flags = vocab.flags
    ids = [pieces.check(t) for t in ids]
    remove_space = flags.add_space_prefix
    if remove_special and flags.add_bos and ids and ids[0] == vocab.ids["bos"]:
        remove_space = False
        ids = ids[1:]
    if remove_special and flags.add_eos and ids and ids[-1] == vocab.ids["eos"]:
        ids = ids[:-1]
    parts = [pieces.piece(t, special) for t in ids]
    if parts and remove_space and parts[0][:1] == b" ":
        parts[0] = parts[0][1:]
    text = b"".join(parts)
    if flags.clean_spaces:
        text = clean_up_spaces(text)
    return text


class IncrementalDetokenizer:
    """Turns a stream of ids into text without ever emitting half of a UTF-8 character.

    ``feed(ids)`` returns the text that is complete so far; bytes of a character cut between
    two tokens are held back until the rest arrives. Bytes that can never form a character
    come out as U+FFFD. ``flush()`` returns whatever is still held (as U+FFFD).
    """

    def __init__(self, tokenizer, special: bool = False):
        self._pieces: PieceTable = tokenizer.pieces
        self.special = special
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, ids) -> str:
        if isinstance(ids, int):
            ids = (ids,)
        data = b"".join(self._pieces.piece(self._pieces.check(t), self.special) for t in ids)
        return self._decoder.decode(data)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)

    def reset(self) -> None:
        self._decoder.reset()

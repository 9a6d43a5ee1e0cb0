"""The tokenizer: text to llama.cpp's exact token ids and back, built from GGUF metadata alone.

>>> tok = Tokenizer.from_gguf(lamina.gguf.read("model.gguf"))
>>> tok.tokenize("<|im_start|>user\\nHi", parse_special=True)
>>> tok.detokenize(ids)

Tokenizing follows ``llama_vocab::impl::tokenize``: the texts of special tokens are cut out
of the input first (control and unknown tokens only when ``parse_special``; user-defined
tokens always), then each remaining fragment goes through the vocabulary's algorithm (SPM,
BPE, WordPiece or Unigram), and BOS/EOS/SEP are added as the vocabulary asks when
``add_special``.

Input may be ``bytes`` or ``str``. Bytes are what llama.cpp sees; invalid UTF-8 in them is
handled as llama.cpp handles it: SPM vocabularies fall back to byte tokens for the raw bytes,
the others see each undecodable byte as U+FFFD (see :func:`unicode.decode_utf8_lenient`). A
``str`` is encoded as UTF-8 first, lone surrogates included (as their 3-byte forms).
"""

from __future__ import annotations

import functools
import gc
import os
import re

from .bpe import BpeEncoder
from .detokenize import IncrementalDetokenizer, PieceTable, detokenize
from .errors import TokenizerError
from .pretokenize import KINDS, PreTokenizer
from .spm import SpmEncoder
from .unicode import decode_utf8_lenient
from .vocab import NONE, TokenAttr, Vocab
from .wpm import WpmEncoder

_SPECIAL_UNPARSED = int(TokenAttr.CONTROL | TokenAttr.UNKNOWN)
_LSTRIP, _RSTRIP = int(TokenAttr.LSTRIP), int(TokenAttr.RSTRIP)
_C_SPACE = " \t\n\v\f\r"  # C isspace(): what lstrip/rstrip attributes strip
_SURROGATE = re.compile("[\ud800-\udfff]")


class Tokenizer:
    """llama.cpp's tokenizer for one vocabulary (see the module docstring)."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self.pieces = PieceTable(vocab)
        self._plans: dict[bool, list] = {}
        self._special_groups: dict[bool, dict[str, list[int]]] = {}
        self._special_plan(False)  # cheap, and keeps the first tokenize call from paying for it
        # Building made large young containers (token and merge lists); one young-generation
        # collection now moves them out of the way, instead of during the first tokenize call.
        gc.collect(1)
        kind = vocab.kind
        if kind == "spm":
            self._encoder = SpmEncoder(vocab.tokens, vocab.token_to_id, vocab.scores, vocab.ids["unk"], vocab.path)
        elif kind == "bpe":
            pre = PreTokenizer(KINDS[vocab.pre_kind])
            self._encoder = BpeEncoder(vocab.token_to_id, vocab.merges, pre, vocab.flags.ignore_merges,
                                       vocab.flags.escape_whitespaces)
        elif kind == "wpm":
            self._encoder = WpmEncoder(vocab.tokens, vocab.token_to_id, vocab.ids["unk"], vocab.flags.lowercase,
                                       vocab.flags.strip_accents)
        else:
            from .ugm import UgmEncoder  # noqa: PLC0415 - rare; keep its tables out of the common path

            self._encoder = UgmEncoder(vocab)

    @classmethod
    def from_gguf(cls, gguf_file) -> "Tokenizer":
        """Build from an open :class:`lamina.gguf.GGUFFile` (only its metadata is read)."""
        return cls(Vocab(gguf_file))

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> "Tokenizer":
        from lamina.gguf import read  # noqa: PLC0415

        return cls.from_gguf(read(path))

    # -- properties ---------------------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        return self.vocab.n_tokens

    @property
    def kind(self) -> str:
        """"spm", "bpe", "wpm" or "ugm"."""
        return self.vocab.kind

    def _id(self, name: str) -> int:
        return self.vocab.ids[name]

    bos_id = property(lambda self: self._id("bos"), doc="beginning-of-sequence id, -1 if none")
    eos_id = property(lambda self: self._id("eos"), doc="end-of-sequence id, -1 if none")
    eot_id = property(lambda self: self._id("eot"), doc="end-of-turn id, -1 if none")
    eom_id = property(lambda self: self._id("eom"), doc="end-of-message id, -1 if none")
    unk_id = property(lambda self: self._id("unk"), doc="unknown-token id, -1 if none")
    sep_id = property(lambda self: self._id("sep"), doc="separator id, -1 if none")
    pad_id = property(lambda self: self._id("pad"), doc="padding id, -1 if none")

    @property
    def eog_ids(self) -> frozenset[int]:
        """Every id that ends generation (eos, eot, eom and the end-of-turn tokens found by text)."""
        return self.vocab.eog_ids

    @property
    def add_bos(self) -> bool:
        return self.vocab.flags.add_bos

    @property
    def add_eos(self) -> bool:
        return self.vocab.flags.add_eos

    @property
    def add_sep(self) -> bool:
        """Whether a separator goes between the two texts of a pair (a reranker's query and document)."""
        return self.vocab.flags.add_sep

    def is_eog(self, token_id: int) -> bool:
        return token_id in self.vocab.eog_ids

    def token_text(self, token_id: int) -> str:
        """The token's text as stored in the vocabulary (e.g. "▁the", "Ġthe", "<0x0A>")."""
        return self.vocab.tokens[self.pieces.check(token_id)]

    def token_attr(self, token_id: int) -> TokenAttr:
        return TokenAttr(int(self.vocab.attrs[self.pieces.check(token_id)]))

    def token_score(self, token_id: int) -> float:
        scores = self.vocab.scores
        return 0.0 if scores is None else scores[self.pieces.check(token_id)]

    # -- text to ids ----------------------------------------------------------------------------

    def tokenize(self, text: bytes | str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``, exactly as ``llama_tokenize(text, add_special, parse_special)``."""
        raw = _as_raw_text(text)
        fragments = self._partition(raw, parse_special) if raw else []
        flags = self.vocab.flags
        out: list[int] = []
        kind = self.vocab.kind
        if kind == "wpm":
            if add_special:
                out.append(self._required("bos"))
        elif add_special and flags.add_bos:
            out.append(self._required("bos"))

        if kind == "spm":
            prev_special = True
            for frag in fragments:
                if type(frag) is int:
                    out.append(frag)
                    prev_special = True
                    continue
                if flags.add_space_prefix and prev_special:
                    frag = " " + frag
                out.extend(self._encoder.encode(frag.replace(" ", "\u2581")))
                prev_special = False
        else:
            for frag in fragments:
                if type(frag) is int:
                    out.append(frag)
                else:
                    out.extend(self._encoder.encode(_code_points(frag)))

        if kind == "wpm":
            if add_special:
                out.append(self._required("sep"))
        elif add_special and flags.add_eos:
            out.append(self._required("eos"))
        return out

    def _required(self, name: str) -> int:
        token_id = self.vocab.ids[name]
        if token_id == NONE:
            raise TokenizerError(f"the vocabulary asks for a {name.upper()} token but defines none")
        return token_id

    def _partition(self, text: str, parse_special: bool) -> list:
        """Cut special-token texts out of ``text``: a list of text fragments (str) and ids (int).

        Longest special texts go first; each splits every text fragment at all of its
        occurrences, left to right, as llama.cpp's ``tokenizer_st_partition``.
        """
        fragments: list = [text]
        for token_id, special, lstrip, rstrip in self._present_specials(text, parse_special):
            out = []
            for frag in fragments:
                if type(frag) is int or special not in frag:
                    out.append(frag)
                    continue
                pos = 0
                while True:
                    at = frag.find(special, pos)
                    if at < 0:
                        break
                    left = frag[pos:at]
                    if lstrip:
                        left = left.rstrip(_C_SPACE)
                    if left:
                        out.append(left)
                    out.append(token_id)
                    pos = at + len(special)
                    if rstrip:
                        while pos < len(frag) and frag[pos] in _C_SPACE:
                            pos += 1
                if pos < len(frag):
                    out.append(frag[pos:])
            fragments = out
        return fragments

    def _present_specials(self, text: str, parse_special: bool) -> list[tuple[int, str, bool, bool]]:
        """The plan's entries whose text occurs in ``text``, in plan order.

        Special texts are grouped by their first four characters, so that a vocabulary with
        thousands of control tokens ("<unused0>" ... "<unused6241>") costs a few substring
        searches, not thousands.
        """
        plan, groups = self._special_plan(parse_special), self._special_groups[parse_special]
        present_groups = {head for head in groups if head in text}
        if len(present_groups) == len(groups):
            return [entry for entry in plan if entry[1] in text]
        present = set()
        for head in present_groups:
            present.update(i for i in groups[head] if plan[i][1] in text)
        return [plan[i] for i in sorted(present)]

    def _special_plan(self, parse_special: bool) -> list[tuple[int, str, bool, bool]]:
        """(id, text, lstrip, rstrip) of the special tokens to cut out, longest first; made once per mode."""
        plan = self._plans.get(parse_special)
        if plan is None:
            vocab = self.vocab
            ids = vocab.special_token_ids
            attrs = vocab.attrs[ids].tolist() if ids else []
            plan = [(token_id, vocab.tokens[token_id], bool(attr & _LSTRIP), bool(attr & _RSTRIP))
                    for token_id, attr in zip(ids, attrs) if parse_special or not attr & _SPECIAL_UNPARSED]
            self._plans[parse_special] = plan
            groups: dict[str, list[int]] = {}
            for index, entry in enumerate(plan):
                groups.setdefault(entry[1][:4], []).append(index)
            self._special_groups[parse_special] = groups
        return plan

    # -- ids to text ----------------------------------------------------------------------------

    def token_to_piece(self, token_id: int, special: bool = False) -> bytes:
        """The bytes of one token, as ``llama_token_to_piece(token, lstrip=0, special)``."""
        return self.pieces.piece(self.pieces.check(token_id), special)

    @functools.cached_property
    def all_pieces(self) -> tuple[bytes, ...]:
        """Every token's bytes, special tokens rendered; built once (DRY sampling needs the whole
        table for each request that enables it)."""
        return tuple(self.token_to_piece(i, special=True) for i in range(self.n_vocab))

    def detokenize(self, ids, special: bool = False, remove_special: bool = False) -> bytes:
        """Bytes of a token sequence, as ``llama_detokenize(ids, remove_special, unparse_special=special)``.

        An id outside the vocabulary raises :class:`TokenizerError` naming it.
        """
        return detokenize(self.pieces, ids, special, remove_special)

    def incremental_detokenizer(self, special: bool = False) -> IncrementalDetokenizer:
        """A streaming detokenizer: feed ids, get text that never splits a UTF-8 character."""
        return IncrementalDetokenizer(self, special)

    def __repr__(self) -> str:
        return (f"Tokenizer({self.vocab.model!r}/{self.vocab.pre or '-'}, n_vocab={self.n_vocab}, "
                f"bos={self.bos_id}, eos={self.eos_id})")


def _as_raw_text(text: bytes | str) -> str:
    """The input as llama.cpp receives it (bytes), held as a str with invalid bytes surrogate-escaped."""
    if isinstance(text, str):
        if text.isascii():
            return text
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:
            return text.encode("utf-8", "surrogatepass").decode("utf-8", "surrogateescape")
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text).decode("utf-8", "surrogateescape")
    raise TypeError(f"text to tokenize must be bytes or str, not {type(text).__name__}")


def _code_points(fragment: str) -> str:
    """A fragment's code points as llama.cpp decodes its bytes (invalid bytes become U+FFFD)."""
    if fragment.isascii() or _SURROGATE.search(fragment) is None:
        return fragment
    return decode_utf8_lenient(fragment.encode("utf-8", "surrogateescape"))

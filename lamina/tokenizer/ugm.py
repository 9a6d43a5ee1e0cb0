"""Unigram (``tokenizer.ggml.model = "t5"``), as llama.cpp's ``llm_tokenizer_ugm``.

The text is first normalized: user-defined tokens pass through untouched, other prefixes
are rewritten by SentencePiece's precompiled character map (a XOR-compressed double-array
trie, ``tokenizer.ggml.precompiled_charsmap``), spaces become "▁" and are added, merged or
dropped as the flags say. Then a Viterbi pass picks the segmentation with the highest sum
of token scores; a code point no token covers costs (lowest score - 10) as <unk>, and runs
of <unk> collapse into one.
"""

from __future__ import annotations

import struct

from .errors import TokenizerError
from .unicode import utf8_sequence_length
from .vocab import TokenAttr, Vocab

SPACE = "\u2581".encode()


class CharsMap:
    """SentencePiece's precompiled normalization map: longest-prefix rewrite rules."""

    def __init__(self, blob: bytes):
        size = int.from_bytes(blob[:4], "little")
        self.nodes = struct.unpack_from(f"<{size // 4}I", blob, 4)
        self.replacements = blob[4 + size:]

    def _node(self, index: int) -> int:
        if index >= len(self.nodes):
            raise TokenizerError("the precompiled charsmap is corrupt: a trie index points past its end")
        return self.nodes[index]

    def _base(self, index: int) -> int:
        node = self._node(index)
        return (node >> 10) << ((node & (1 << 9)) >> 6)

    def longest_prefix(self, text: bytes, start: int) -> tuple[int, bytes] | None:
        """(bytes consumed, replacement) for the longest rule matching ``text[start:]``, if any."""
        best = None
        index = self._base(0)
        for pos in range(start, len(text)):
            c = text[pos]
            if c == 0:
                break
            index ^= c
            node = self._node(index)
            if node & ((1 << 31) | 0xFF) != c:
                break
            is_leaf = (node >> 8) & 1
            index ^= self._base(index)
            if is_leaf:
                best = (pos - start + 1, self._node(index) & ((1 << 31) - 1))
        if best is None:
            return None
        length, offset = best
        if offset >= len(self.replacements):
            raise TokenizerError("the precompiled charsmap is corrupt: a replacement offset points past its end")
        end = self.replacements.find(b"\x00", offset)
        if end < 0:
            raise TokenizerError("the precompiled charsmap is corrupt: a replacement string is not terminated")
        return length, self.replacements[offset:end]


class UgmEncoder:
    """Viterbi segmentation over one Unigram vocabulary."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        flags = vocab.flags
        self.unk_id = vocab.ids["unk"]
        attrs = vocab.attrs.tolist()
        scores = vocab.scores
        normal, user = int(TokenAttr.NORMAL), int(TokenAttr.USER_DEFINED)
        matchable = normal | user | int(TokenAttr.UNUSED)
        self.pieces: dict[bytes, int] = {}
        self.prefixes: set[bytes] = set()
        self.user_defined: set[bytes] = set()
        self.user_prefixes: set[bytes] = set()
        self.score: dict[int, float] = {}
        min_score = float("inf")
        for token_id, (text, attr) in enumerate(zip(vocab.tokens, attrs)):
            score = scores[token_id] if scores is not None else 0.0
            if attr & normal:
                min_score = min(min_score, score)
            if attr & matchable:
                raw = text.encode("utf-8", "surrogateescape")
                self.pieces[raw] = token_id  # later duplicates win, as llama.cpp's trie insert
                self.score[token_id] = 0.0 if attr & user else score
                for k in range(1, len(raw)):
                    self.prefixes.add(raw[:k])
                if attr & user:
                    self.user_defined.add(raw)
                    for k in range(1, len(raw)):
                        self.user_prefixes.add(raw[:k])
        self.unknown_score = (min_score if min_score != float("inf") else 3.4028234663852886e38) - 10.0
        self.charsmap = CharsMap(vocab.precompiled_charsmap) if vocab.precompiled_charsmap else None
        self.space = SPACE if flags.escape_whitespaces else b" "
        self.prepend = not flags.treat_whitespace_as_suffix and flags.add_space_prefix
        self.append = flags.treat_whitespace_as_suffix and flags.add_space_prefix
        self.merge_spaces = flags.remove_extra_whitespaces

    def encode(self, text: str) -> list[int]:
        """Ids of one fragment (code points; encoded back to the bytes llama.cpp sees)."""
        data = text.encode("utf-8", "surrogatepass")
        return self.segment(self.normalize(data))

    # -- normalization ----------------------------------------------------------------------------

    def _longest_user_defined(self, data: bytes, start: int) -> int:
        best = 0
        end = start
        while end < len(data):
            end += 1
            piece = data[start:end]
            if piece in self.user_defined:
                best = end - start
            if piece not in self.user_prefixes:
                break
        return best

    def _normalize_prefix(self, data: bytes, start: int) -> tuple[bytes, int]:
        n = self._longest_user_defined(data, start) if self.user_defined else 0
        if n:
            return data[start:start + n], n
        if self.charsmap is not None:
            found = self.charsmap.longest_prefix(data, start)
            if found is not None:
                length, replacement = found
                return replacement, length
        k = utf8_sequence_length(data[start])
        chunk = data[start:start + k]
        try:
            if len(chunk) < k:
                raise UnicodeDecodeError("utf-8", chunk, 0, len(chunk), "cut off")
            _lenient_check(chunk)
            return chunk, k
        except UnicodeDecodeError:
            return "\ufffd".encode(), 1

    def normalize(self, data: bytes) -> bytes:
        out = bytearray()
        space = self.space
        space_prepended = False
        in_word = False
        pos = 0
        while pos < len(data):
            piece, consumed = self._normalize_prefix(data, pos)
            for c in piece:
                if c != 0x20:
                    if not in_word:
                        in_word = True
                        if (self.prepend and not space_prepended) or self.merge_spaces:
                            out += space
                            space_prepended = True
                    out.append(c)
                else:
                    in_word = False
                    if not self.merge_spaces:
                        out += space
            pos += consumed
        if self.append:
            out += space
        return bytes(out)

    # -- Viterbi --------------------------------------------------------------------------------

    def segment(self, text: bytes) -> list[int]:
        n = len(text)
        if n == 0:
            return []
        neg = -1.7976931348623157e308
        best_score = [neg] * (n + 1)
        best_token = [self.unk_id] * (n + 1)
        best_start = [0] * (n + 1)
        best_score[0] = 0.0
        pieces, prefixes, score = self.pieces, self.prefixes, self.score
        pos = 0
        while pos < n:
            units = min(utf8_sequence_length(text[pos]), n - pos)
            here = best_score[pos]
            whole_char = False
            end = pos
            while end < n:
                end += 1
                piece = text[pos:end]
                token_id = pieces.get(piece)
                if token_id is not None:
                    if end - pos == units:
                        whole_char = True
                    challenger = here + score[token_id]
                    if challenger > best_score[end]:
                        best_score[end], best_token[end], best_start[end] = challenger, token_id, pos
                if piece not in prefixes:
                    break
            if not whole_char:
                end = pos + units
                challenger = here + self.unknown_score
                if challenger > best_score[end]:
                    best_score[end], best_token[end], best_start[end] = challenger, self.unk_id, pos
            pos += units
        out = []
        prev_unknown = False
        pos = n
        while True:  # walk back from the end; runs of <unk> become one
            token_id = best_token[pos]
            unknown = token_id == self.unk_id
            if not (prev_unknown and unknown):
                out.append(token_id)
            if best_start[pos] == 0:
                break
            prev_unknown = unknown
            pos = best_start[pos]
        out.reverse()
        return out


def _lenient_check(chunk: bytes) -> None:
    """Raise UnicodeDecodeError unless llama.cpp's lenient decoder accepts this one sequence."""
    lead = chunk[0]
    if lead < 0x80:
        return
    if lead < 0xC0 or lead >= 0xF8:
        raise UnicodeDecodeError("utf-8", chunk, 0, 1, "not a lead byte")
    for c in chunk[1:]:
        if c & 0xC0 != 0x80:
            raise UnicodeDecodeError("utf-8", chunk, 0, 1, "not a continuation byte")

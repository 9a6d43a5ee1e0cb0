"""Code points as llama.cpp's tokenizers see them (its ``src/unicode.cpp``, re-derived).

Three things here differ from what Python does by default, and each changes token ids:

- **Classes.** llama.cpp groups code points into number, letter, separator, mark,
  punctuation, symbol, control and undefined using Unicode 15.1 tables; Python's
  ``unicodedata`` and the ``regex`` module carry other Unicode versions. The tables in
  ``_unicode_data.py`` are Unicode 15.1.
- **Whitespace** is the Unicode White_Space set (no U+001C..U+001F, which ``str.isspace``
  counts).
- **Invalid UTF-8.** llama.cpp decodes leniently: overlong forms and surrogates decode to
  their code points, and each byte that starts no decodable sequence becomes one U+FFFD
  (Python's ``errors="replace"`` merges some of those bytes into a single U+FFFD).

It also holds GPT-2's byte-to-character table used by byte-level BPE vocabularies.
"""

from __future__ import annotations

import bisect
from functools import cache

from . import _unicode_data

UNICODE_VERSION = _unicode_data.UNICODE_VERSION
MAX_CODEPOINT = 0x110000
REPLACEMENT = "\ufffd"

# Unicode White_Space, as llama.cpp's table lists it.
WHITESPACE = frozenset(
    [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F,
     0x205F, 0x3000])

# One character per class in the "collapsed" text the regexes run on: every code point of
# 128 and above is replaced by the character of its class (ASCII stays itself), exactly the
# reduction llama.cpp makes before handing text to std::regex. Whitespace collapses to \v.
COLLAPSED_WHITESPACE = "\x0b"
COLLAPSED_CLASS_CHAR = {"N": "\xd1", "L": "\xd2", "P": "\xd3", "M": "\xd4", "S": "\xd5"}
COLLAPSED_OTHER = "\xd0"  # separators that are not whitespace, controls, undefined


@cache
def category_ranges() -> tuple[list[int], list[str]]:
    """Run starts and the class letter of each run (see ``_unicode_data``)."""
    starts, classes = [], []
    for item in "".join(_unicode_data.CATEGORY_RANGES).split():
        start, cls = item.split(":")
        starts.append(int(start, 16))
        classes.append(cls)
    return starts, classes


def category(cp: int) -> str:
    """The class letter of one code point: U N L Z M P S C."""
    if not 0 <= cp < MAX_CODEPOINT:
        return "U"
    starts, classes = category_ranges()
    return classes[bisect.bisect_right(starts, cp) - 1]


def collapsed_char(cp: int) -> str:
    """The character that stands for ``cp`` in collapsed text."""
    if cp < 128:
        return chr(cp)
    if cp in WHITESPACE:
        return COLLAPSED_WHITESPACE
    return COLLAPSED_CLASS_CHAR.get(category(cp), COLLAPSED_OTHER)


def collapse(text: str) -> str:
    """Replace every non-ASCII code point by its class character (same length as ``text``)."""
    if text.isascii():
        return text
    return text.translate(_collapse_map())


class _CollapseMap(dict):
    """``str.translate`` mapping that fills itself as characters appear (no 1.1M-entry table)."""

    def __missing__(self, cp: int) -> str:
        value = self[cp] = collapsed_char(cp)
        return value


@cache
def _collapse_map() -> _CollapseMap:
    return _CollapseMap()


@cache
def whitespace_to_vt_map() -> dict[int, str]:
    """Non-ASCII whitespace to \\v: what llama.cpp does before a regex without \\p classes."""
    return {cp: COLLAPSED_WHITESPACE for cp in WHITESPACE if cp >= 128}


@cache
def _lowercase() -> dict[int, int]:
    pairs = {}
    for item in "".join(_unicode_data.LOWERCASE).split():
        a, b = item.split(":")
        pairs[int(a, 16)] = int(b, 16)
    return pairs


def tolower(cp: int) -> int:
    """Simple (single code point) lowercase mapping, as llama.cpp's ``unicode_tolower``."""
    return _lowercase().get(cp, cp)


@cache
def _nfd_runs() -> tuple[list[int], list[int], list[int]]:
    firsts, lasts, bases = [], [], []
    for item in "".join(_unicode_data.NFD_FIRST).split():
        span, base = item.split(":")
        first, last = span.split("-")
        firsts.append(int(first, 16))
        lasts.append(int(last, 16))
        bases.append(int(base, 16))
    return firsts, lasts, bases


def nfd_first(cp: int) -> int:
    """The first code point of ``cp``'s canonical decomposition (llama.cpp's NFD step)."""
    firsts, lasts, bases = _nfd_runs()
    i = bisect.bisect_right(firsts, cp) - 1
    if i >= 0 and cp <= lasts[i]:
        return bases[i]
    return cp


def decode_utf8_lenient(data: bytes) -> str:
    """Bytes to code points exactly as llama.cpp's ``unicode_cpts_from_utf8`` does.

    Valid UTF-8 takes the fast path. Otherwise a lead byte takes as many following
    continuation bytes as it announces without checking for overlong forms or surrogates
    (which therefore decode, and survive as lone surrogates in the Python string), and a
    byte that cannot start a complete sequence becomes one U+FFFD. Four-byte forms above
    U+10FFFF, which llama.cpp cannot encode back (it aborts), become U+FFFD here.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    out = []
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b < 0x80:
            out.append(chr(b))
            i += 1
            continue
        if b < 0xC0 or b >= 0xF8:
            need, cp = 0, -1
        elif b < 0xE0:
            need, cp = 1, b & 0x1F
        elif b < 0xF0:
            need, cp = 2, b & 0x0F
        else:
            need, cp = 3, b & 0x07
        if need == 0 or i + need >= n:
            # not a lead byte, or the announced sequence runs past the end
            out.append(REPLACEMENT)
            i += 1
            continue
        ok = True
        for k in range(1, need + 1):
            c = data[i + k]
            if c & 0xC0 != 0x80:
                ok = False
                break
            cp = (cp << 6) | (c & 0x3F)
        if not ok:
            out.append(REPLACEMENT)
            i += 1
            continue
        out.append(chr(cp) if cp < MAX_CODEPOINT else REPLACEMENT)
        i += need + 1
    return "".join(out)


def encode_utf8_lenient(text: str) -> bytes:
    """Code points back to bytes; lone surrogates are encoded as llama.cpp would (3 bytes)."""
    return text.encode("utf-8", "surrogatepass")


def utf8_sequence_length(lead: int) -> int:
    """Length of the UTF-8 sequence a byte announces, llama.cpp's ``unicode_len_utf8``."""
    return (1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4)[lead >> 4]


@cache
def gpt2_byte_to_char() -> tuple[str, ...]:
    """GPT-2's reversible mapping of the 256 byte values to printable characters."""
    direct = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = [""] * 256
    for b in direct:
        table[b] = chr(b)
    extra = 0
    for b in range(256):
        if not table[b]:
            table[b] = chr(256 + extra)
            extra += 1
    return tuple(table)


@cache
def gpt2_byte_translation() -> dict[int, str]:
    """``str.translate`` table from latin-1-decoded bytes to GPT-2 byte characters."""
    return {b: c for b, c in enumerate(gpt2_byte_to_char())}


@cache
def gpt2_char_to_byte() -> dict[str, int]:
    return {c: b for b, c in enumerate(gpt2_byte_to_char())}

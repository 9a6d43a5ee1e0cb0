"""One sequence's generation after its prompt: when it ends, and which text is safe to show yet.

Every way lamina generates text feeds the tokens it samples to a :class:`TextGeneration`:
``Llama.create_completion`` and chat completions (one sequence, through ``Llama.generate``)
and the server's slots (many sequences, one decode step for all). So an end-of-generation
token, a stop string or the token limit ends a completion in the same way everywhere, and
streamed text never cuts a multi-byte UTF-8 character in two nor shows the start of what may
turn out to be a stop string.
"""

from __future__ import annotations

from collections.abc import Sequence

# llama-server's stop types: still running, an end-of-generation token, a stop string, the token limit
STOP_NONE, STOP_EOS, STOP_WORD, STOP_LIMIT = "none", "eos", "word", "limit"


def utf8_complete_end(data: bytes, end: int) -> int:
    """The largest cut point <= ``end`` that does not split a UTF-8 character."""
    i = end
    for back in range(1, min(4, end) + 1):
        b = data[end - back]
        if b & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        need = 1 if b < 0x80 else 2 if b >> 5 == 0b110 else 3 if b >> 4 == 0b1110 else 4 if b >> 3 == 0b11110 else 1
        i = end if back >= need else end - back
        break
    return i


def stop_hold_back(text: bytes, stops: Sequence[bytes]) -> int:
    """How many trailing bytes of ``text`` could still grow into a stop sequence."""
    held = 0
    for s in stops:
        for i in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:i]):
                held = max(held, i)
                break
    return held


def find_stop(text: bytes, stops: Sequence[bytes]) -> tuple[int, bytes] | None:
    """Index and text of the earliest stop sequence in ``text``, if any."""
    hits = [(text.find(s), s) for s in stops if s and s in text]
    return min(hits) if hits else None


class TextGeneration:
    """The state of one completion: its tokens, its text, and why it ended.

    ``add`` takes each sampled token in turn; once ``stop_type`` is no longer ``"none"`` the
    completion is over. An end-of-generation token ends it without becoming part of it (unless
    ``ignore_eos``); a stop string ends it with the text cut just before the string; the token
    limit ends it after the ``max_tokens``-th token (``max_tokens`` < 0: no limit).
    """

    def __init__(self, tokenizer, *, max_tokens: int = -1, stops: Sequence[str] = (), ignore_eos: bool = False,
                 special: bool = False):
        self.tokenizer = tokenizer
        self.max_tokens = int(max_tokens)
        self.stops = [s.encode("utf-8") for s in stops if s]
        self.ignore_eos = ignore_eos
        self.special = special
        self.tokens: list[int] = []
        self.text = b""
        self.released = 0  # bytes of ``text`` already handed out
        self.stop_type = STOP_NONE
        self.stopping_word = ""
        self.end_token: int | None = None  # the end-of-generation token that ended it, if one did
        if self.max_tokens == 0:
            self.stop_type = STOP_LIMIT

    @property
    def finished(self) -> bool:
        return self.stop_type != STOP_NONE

    @property
    def finish_reason(self) -> str:
        """OpenAI's ``finish_reason``: "stop" for an end-of-generation token or a stop string, else "length"."""
        return "stop" if self.stop_type in (STOP_EOS, STOP_WORD) else "length"

    def add(self, token: int) -> bytes:
        """Take the next sampled token; return the text that became safe to show (all that is left
        once the generation has ended)."""
        if self.finished:
            raise RuntimeError("this generation has already ended")
        if self.tokenizer.is_eog(token) and not self.ignore_eos:
            self.stop_type = STOP_EOS
            self.end_token = int(token)
            return self.release_all()
        self.tokens.append(int(token))
        self.text += self.tokenizer.token_to_piece(int(token), special=self.special)
        hit = find_stop(self.text, self.stops) if self.stops else None
        if hit is not None:
            self.text = self.text[:hit[0]]
            self.stop_type = STOP_WORD
            self.stopping_word = hit[1].decode("utf-8", "replace")
            return self.release_all()
        if 0 <= self.max_tokens <= len(self.tokens):
            self.stop_type = STOP_LIMIT
            return self.release_all()
        safe = utf8_complete_end(self.text, len(self.text) - stop_hold_back(self.text, self.stops))
        return self._release(safe)

    def release_all(self) -> bytes:
        """Everything not handed out yet (at the end, or when the caller shows text token by token)."""
        return self._release(len(self.text))

    def _release(self, end: int) -> bytes:
        if end <= self.released:
            return b""
        out = self.text[self.released:end]
        self.released = end
        return out

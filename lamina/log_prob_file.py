"""The base model's log-probabilities, saved for a later KL-divergence run.

The layout is that of llama-perplexity's ``--kl-divergence-base`` file (read from
tools/perplexity/perplexity.cpp), and the rows are encoded with its arithmetic, so files
made by either tool are meant to work with the other (all numbers little-endian):

    "_logits_"                       8 bytes of magic
    n_ctx    uint32                  tokens per chunk
    n_vocab  int32                   vocabulary size (width of every row below)
    n_chunk  int32                   number of chunks
    tokens   int32[n_chunk * n_ctx]  the evaluated text, BOS included, as tokenized
    rows     n_chunk * (n_ctx - 1 - n_ctx // 2) rows, one per scored token, in order;
             each row is ``row_width(n_vocab)`` uint16: float32 scale, float32 min_log_prob,
             n_vocab uint16 codes q (then one zero when n_vocab is odd), and decodes as
             log p[i] = scale * q[i] + min_log_prob.

Why 16 bits: a float32 row per token would make the file twice as large (smollm2's
49152-token vocabulary on GPL-3.txt at -c 512 already takes 351 MB). Only the top 16
nats of each distribution are resolved: logits more than 16 below the maximum all get
code 0, i.e. the smallest representable log-probability, and llama-perplexity's KLD
sum ignores every entry whose decoded log-probability is at most -16 anyway. The
quantization step is ``scale = (max - min) / 65535`` ≤ 16/65535 ≈ 2.4e-4 nats, so a
decoded log-probability is within half of that (plus float32 rounding) of the truth.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

MAGIC = b"_logits_"
_HEADER = struct.Struct("<8sIii")
LOG_PROB_RANGE = np.float32(16)  # nats below the most likely token that are resolved
_CODES = np.float32(65535)


class LogProbFileError(ValueError):
    """A log-probability file is not one, is damaged, or does not fit the model or settings."""


def row_width(n_vocab: int) -> int:
    """uint16 entries per stored row: two float32 values, then n_vocab codes padded to an even count."""
    return 2 * ((n_vocab + 1) // 2) + 4


def scored_per_chunk(n_ctx: int) -> int:
    """Tokens scored in each chunk: positions n_ctx // 2 .. n_ctx - 2 (the last predicts nothing in the chunk)."""
    return n_ctx - 1 - n_ctx // 2


def compress_log_probs(logits: np.ndarray) -> np.ndarray:
    """Rows of logits (rows, n_vocab) -> stored rows (rows, row_width) of uint16, as llama-perplexity encodes them.

    In float32 like llama-perplexity, except the exp-sum, which is accumulated in double.
    """
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    rows, n_vocab = logits.shape
    out = np.zeros((rows, row_width(n_vocab)), dtype=np.uint16)
    header = out.view(np.float32)  # (rows, row_width / 2): columns 0 and 1 are scale and min_log_prob
    max_logit = logits.max(axis=1)
    min_logit = np.maximum(logits.min(axis=1), max_logit - LOG_PROB_RANGE)
    log_sum_exp = np.log(np.exp(logits - max_logit[:, None]).sum(axis=1, dtype=np.float64)).astype(np.float32)
    scale = (max_logit - min_logit) / _CODES
    header[:, 0] = scale
    header[:, 1] = (min_logit - max_logit) - log_sum_exp
    resolved = scale > 0
    if resolved.any():
        inv_scale = np.float32(1) / scale[resolved]
        part = logits[resolved]
        low = min_logit[resolved][:, None]
        codes = np.rint(inv_scale[:, None] * (part - low))
        codes = np.where(part > low, np.minimum(codes, _CODES), np.float32(0))
        out[resolved, 4:4 + n_vocab] = codes.astype(np.uint16)
    return out


def decompress_log_probs(rows: np.ndarray, n_vocab: int) -> np.ndarray:
    """Stored rows (rows, row_width) of uint16 -> log-probabilities (rows, n_vocab) float32."""
    scale, min_log_prob = split_rows(rows, n_vocab)[:2]
    codes = rows[:, 4:4 + n_vocab]
    return scale[:, None] * codes.astype(np.float32) + min_log_prob[:, None]


def split_rows(rows: np.ndarray, n_vocab: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scale, min_log_prob, codes) of stored rows, without copying the codes."""
    header = np.ascontiguousarray(rows[:, :4]).view(np.float32)
    return header[:, 0], header[:, 1], rows[:, 4:4 + n_vocab]


@dataclass(frozen=True)
class LogProbHeader:
    n_ctx: int
    n_vocab: int
    n_chunk: int
    tokens: np.ndarray  # int32 (n_chunk * n_ctx,)

    @property
    def rows_per_chunk(self) -> int:
        return scored_per_chunk(self.n_ctx)

    @property
    def data_offset(self) -> int:
        return _HEADER.size + 4 * self.n_chunk * self.n_ctx

    @property
    def chunk_bytes(self) -> int:
        return self.rows_per_chunk * row_width(self.n_vocab) * 2

    @property
    def file_bytes(self) -> int:
        return self.data_offset + self.n_chunk * self.chunk_bytes


def file_bytes(n_ctx: int, n_vocab: int, n_chunk: int) -> int:
    """Size of a complete file with these settings (to check free disk space or report it)."""
    return LogProbHeader(n_ctx, n_vocab, n_chunk, np.zeros(0, np.int32)).file_bytes


class LogProbWriter:
    """Writes the header, then one chunk of rows at a time, to an open binary file."""

    def __init__(self, out: BinaryIO, n_ctx: int, n_vocab: int, tokens: np.ndarray):
        tokens = np.asarray(tokens, dtype="<i4")
        if len(tokens) == 0 or len(tokens) % n_ctx:
            raise ValueError(f"{len(tokens)} tokens are not a whole number of chunks of {n_ctx}")
        if scored_per_chunk(n_ctx) < 1:
            raise ValueError(f"a context of {n_ctx} scores no tokens")
        self.out, self.n_ctx, self.n_vocab = out, n_ctx, n_vocab
        self.n_chunk = len(tokens) // n_ctx
        self.written = 0
        out.write(_HEADER.pack(MAGIC, n_ctx, n_vocab, self.n_chunk))
        out.write(tokens.tobytes())

    def write_chunk(self, logits: np.ndarray) -> None:
        """Compress and append the logits of one chunk's scored positions."""
        if logits.shape != (scored_per_chunk(self.n_ctx), self.n_vocab):
            raise ValueError(f"a chunk has {scored_per_chunk(self.n_ctx)} scored rows of {self.n_vocab} logits, "
                             f"got an array of shape {logits.shape}")
        if self.written >= self.n_chunk:
            raise ValueError(f"the header announced {self.n_chunk} chunks; cannot write more")
        self.out.write(compress_log_probs(logits).astype("<u2", copy=False).tobytes())
        self.written += 1


class LogProbReader:
    """Reads and checks a log-probability file: the header at once, the rows one chunk at a time.

    Every size is checked against the real file size before anything large is allocated,
    so a damaged or hostile header costs nothing.
    """

    def __init__(self, path: str):
        self.path = str(path)
        try:
            self._f = open(self.path, "rb")
        except OSError as e:
            raise LogProbFileError(f"{self.path}: cannot open the log-probability file: {e.strerror}") from e
        try:
            self.header = self._read_header()
        except BaseException:
            self._f.close()
            raise
        self._next_chunk = 0

    def _fail(self, what: str) -> LogProbFileError:
        return LogProbFileError(f"{self.path}: {what}")

    def _read_header(self) -> LogProbHeader:
        size = os.fstat(self._f.fileno()).st_size
        raw = self._f.read(_HEADER.size)
        if raw[:8] != MAGIC and not (len(raw) < 8 and MAGIC.startswith(raw)):
            raise self._fail(f"does not look like a file of log-probabilities (starts with {raw[:8]!r}, "
                             f"expected {MAGIC!r}); make one with --kl-divergence-base FILE (without "
                             f"--kl-divergence) from the base model")
        if len(raw) < _HEADER.size:
            raise self._fail(f"truncated: {size} bytes, fewer than the {_HEADER.size}-byte header")
        _, n_ctx, n_vocab, n_chunk = _HEADER.unpack(raw)
        if scored_per_chunk(n_ctx) < 1 or n_ctx > 1 << 24:
            raise self._fail(f"n_ctx {n_ctx} in the header is not a usable context size")
        if n_vocab <= 0:
            raise self._fail(f"n_vocab {n_vocab} in the header is not a vocabulary size")
        if n_chunk <= 0:
            raise self._fail(f"n_chunk {n_chunk} in the header: the file holds no chunks")
        expected = LogProbHeader(n_ctx, n_vocab, n_chunk, np.zeros(0, np.int32)).file_bytes
        if size < expected:
            raise self._fail(f"truncated: {size} bytes, but n_ctx {n_ctx}, n_vocab {n_vocab} and n_chunk {n_chunk} "
                             f"need {expected} (the run that wrote it may have been interrupted)")
        if size > expected:
            raise self._fail(f"{size - expected} unexpected bytes after the {expected} that n_ctx {n_ctx}, "
                             f"n_vocab {n_vocab} and n_chunk {n_chunk} account for")
        tokens = np.frombuffer(self._read_exact(4 * n_chunk * n_ctx, "the tokens"), dtype="<i4").astype(np.int32)
        bad = (tokens < 0) | (tokens >= n_vocab)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise self._fail(f"token {i} is {int(tokens[i])}, outside the vocabulary of {n_vocab}")
        return LogProbHeader(n_ctx, n_vocab, n_chunk, tokens)

    def _read_exact(self, n: int, what: str) -> bytes:
        raw = self._f.read(n)
        if len(raw) != n:
            raise self._fail(f"truncated while reading {what} (the file changed while being read?)")
        return raw

    def read_chunk(self) -> np.ndarray:
        """The next chunk's stored rows, (rows_per_chunk, row_width) uint16, checked for sane scales."""
        h = self.header
        if self._next_chunk >= h.n_chunk:
            raise self._fail(f"all {h.n_chunk} chunks have been read")
        raw = self._read_exact(h.chunk_bytes, f"chunk {self._next_chunk + 1}")
        rows = np.frombuffer(raw, dtype="<u2").reshape(h.rows_per_chunk, row_width(h.n_vocab))
        scale, min_log_prob, _ = split_rows(rows, h.n_vocab)
        bad = ~(np.isfinite(scale) & np.isfinite(min_log_prob) & (scale >= 0) & (min_log_prob <= 0))
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise self._fail(f"chunk {self._next_chunk + 1}, row {r}: scale {scale[r]} and minimum log-probability "
                             f"{min_log_prob[r]} are not a valid encoding")
        self._next_chunk += 1
        return rows

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "LogProbReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

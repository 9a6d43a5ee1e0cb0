"""How far a quantized model's predictions drift from its base model's: llama-perplexity's KL-divergence mode.

Two passes over the same tokens. The base pass (``save_base_log_probs``) evaluates the
text like perplexity and saves, for every scored token, the base model's whole
log-probability distribution in 16 bits per entry (lamina.log_prob_file). The second
pass (``kl_divergence``) evaluates the saved tokens with another model and compares, token
by token: its perplexity against the base's, the KL divergence KL(base || model), how
often both models put the same token on top, and how the probability of the true next
token moved (Δp).

The per-token arithmetic follows llama-perplexity's: float32 logits, the exp-sum
accumulated in double, only base log-probabilities above -16 counted in the KLD sum,
the top token chosen as the first index of the maximum. Sums are in double, so they
may differ from llama.cpp's (which adds per-thread partial sums) only in the last bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lamina.gguf import write_atomically
from lamina.log_prob_file import LogProbFileError, LogProbReader, LogProbWriter, split_rows
from lamina.perplexity import (PerplexityError, PerplexityResult, ScoredChunk, check_enough_tokens, chunk_count,
                               evaluate_chunks, perplexity)

_LOG_PROB_FLOOR = np.float32(-16)  # base log-probabilities at or below this add nothing to the KLD sum
_ROWS_PER_BLOCK = 64               # rows compared at once: bounds the (rows, n_vocab) temporaries


def mean_and_uncertainty(total: float, total2: float, count: int) -> tuple[float, float]:
    """Mean of a sample given its sum and sum of squares, and the standard error of that mean.

    As llama-perplexity reports them: the error is 0 for ten values or fewer.
    """
    if count < 1:
        return 0.0, 0.0
    mean = total / count
    var = total2 / count - mean * mean
    return mean, math.sqrt(var / (count - 1)) if var > 0 and count > 10 else 0.0


def covariance_of_means(total_a: float, total_b: float, total_ab: float, count: int) -> float:
    """Covariance of the means of two paired samples (0 below ten pairs, as llama-perplexity)."""
    if count < 10:
        return 0.0
    return (total_ab / count - (total_a / count) * (total_b / count)) / (count - 1)


def percentile(sorted_values: np.ndarray, fraction: float) -> float:
    """Linear interpolation between the two nearest ranks, as llama-perplexity's percentile."""
    if fraction <= 0:
        return float(sorted_values[0])
    if fraction >= 1:
        return float(sorted_values[-1])
    p = fraction * (len(sorted_values) - 1)
    i = int(p)
    p -= i
    return float((1 - p) * sorted_values[i] + p * sorted_values[min(i + 1, len(sorted_values) - 1)])


def median(sorted_values: np.ndarray) -> float:
    n = len(sorted_values)
    return float(sorted_values[n // 2]) if n % 2 else 0.5 * float(sorted_values[n // 2] + sorted_values[n // 2 - 1])


@dataclass
class Estimate:
    value: float
    uncertainty: float


class KLDivergence:
    """Running sums of llama-perplexity's kl_divergence_result, plus every token's KLD and Δp for percentiles."""

    def __init__(self) -> None:
        self.sum_nll = self.sum_nll2 = 0.0
        self.sum_nll_base = self.sum_nll_base2 = self.sum_nll_nll_base = 0.0
        self.sum_kld = self.sum_kld2 = 0.0
        self.sum_p_diff = self.sum_p_diff2 = self.sum_p_diff4 = 0.0
        self.max_p_diff = 0.0
        self.n_same_top = 0
        self.count = 0
        self._kld: list[np.ndarray] = []
        self._p_diff: list[np.ndarray] = []

    def add(self, logits: np.ndarray, base_rows: np.ndarray, targets: np.ndarray) -> None:
        """Compare the model's logits (rows, n_vocab) with the base's stored rows for the same positions."""
        if len(logits) != len(base_rows) or len(logits) != len(targets):
            raise ValueError(f"{len(logits)} logits rows, {len(base_rows)} base rows and {len(targets)} targets")
        for start in range(0, len(logits), _ROWS_PER_BLOCK):
            part = slice(start, start + _ROWS_PER_BLOCK)
            self._add_block(np.asarray(logits[part], dtype=np.float32), base_rows[part],
                            np.asarray(targets[part], dtype=np.intp))

    def _add_block(self, logits: np.ndarray, base_rows: np.ndarray, targets: np.ndarray) -> None:
        rows = np.arange(len(logits))
        n_vocab = logits.shape[1]
        scale, min_log_prob, codes = split_rows(base_rows, n_vocab)
        # the model's log-softmax, float32 with a double exp-sum
        top = logits.argmax(axis=1)
        max_logit = logits[rows, top]
        log_sum_exp = np.log(np.exp(logits - max_logit[:, None]).sum(axis=1, dtype=np.float64)).astype(np.float32)
        log_norm = max_logit + log_sum_exp                      # log p[i] = logits[i] - log_norm
        nll = log_norm - logits[rows, targets]
        # the base's decoded log-probabilities
        base_log_p = scale[:, None] * codes.astype(np.float32) + min_log_prob[:, None]
        nll_base = -base_log_p[rows, targets]
        top_base = base_log_p.argmax(axis=1)
        terms = np.exp(base_log_p) * ((base_log_p - logits) + log_norm[:, None])
        kld = np.where(base_log_p > _LOG_PROB_FLOOR, terms, np.float32(0)).sum(axis=1, dtype=np.float64)
        p_diff = np.exp(-nll) - np.exp(-nll_base)
        p_diff2 = (p_diff * p_diff).astype(np.float64)

        self.sum_nll += float(nll.sum(dtype=np.float64))
        self.sum_nll2 += float((nll * nll).sum(dtype=np.float64))
        self.sum_nll_base += float(nll_base.sum(dtype=np.float64))
        self.sum_nll_base2 += float((nll_base * nll_base).sum(dtype=np.float64))
        self.sum_nll_nll_base += float((nll * nll_base).sum(dtype=np.float64))
        self.sum_kld += float(kld.sum())
        self.sum_kld2 += float((kld * kld).sum())
        self.sum_p_diff += float(p_diff.sum(dtype=np.float64))
        self.sum_p_diff2 += float(p_diff2.sum())
        self.sum_p_diff4 += float((p_diff2 * p_diff2).sum())
        self.max_p_diff = max(self.max_p_diff, float(np.abs(p_diff).max()))
        self.n_same_top += int((top == top_base).sum())
        self.count += len(logits)
        self._kld.append(kld.astype(np.float32))
        self._p_diff.append(p_diff.astype(np.float32))

    # -- the reported figures -------------------------------------------------------------------
    def _log_ppl(self) -> tuple[float, float]:
        return mean_and_uncertainty(self.sum_nll, self.sum_nll2, self.count)

    def _log_ppl_base(self) -> tuple[float, float]:
        return mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, self.count)

    def _log_ppl_cov(self) -> float:
        return covariance_of_means(self.sum_nll, self.sum_nll_base, self.sum_nll_nll_base, self.count)

    def ppl(self) -> Estimate:
        mean, unc = self._log_ppl()
        return Estimate(math.exp(mean), math.exp(mean) * unc)

    def ppl_base(self) -> Estimate:
        mean, unc = self._log_ppl_base()
        return Estimate(math.exp(mean), math.exp(mean) * unc)

    def log_ppl_correlation(self) -> float:
        (_, a), (_, b) = self._log_ppl(), self._log_ppl_base()
        return self._log_ppl_cov() / (a * b) if a * b > 0 else float("nan")

    def log_ppl_ratio(self) -> Estimate:
        (m, a), (mb, b) = self._log_ppl(), self._log_ppl_base()
        return Estimate(m - mb, math.sqrt(max(0.0, a * a + b * b - 2 * self._log_ppl_cov())))

    def ppl_ratio(self) -> Estimate:
        log_ratio = self.log_ppl_ratio()
        value = math.exp(log_ratio.value)
        return Estimate(value, value * log_ratio.uncertainty)

    def ppl_difference(self) -> Estimate:
        q, base = self.ppl(), self.ppl_base()
        cov = q.value * base.value * self._log_ppl_cov()
        var = q.uncertainty ** 2 + base.uncertainty ** 2 - 2 * cov
        return Estimate(q.value - base.value, math.sqrt(max(0.0, var)))

    def kld(self) -> Estimate:
        return Estimate(*mean_and_uncertainty(self.sum_kld, self.sum_kld2, self.count))

    def p_diff(self) -> Estimate:
        return Estimate(*mean_and_uncertainty(self.sum_p_diff, self.sum_p_diff2, self.count))

    def p_diff_rms(self) -> Estimate:
        mse, mse_unc = mean_and_uncertainty(self.sum_p_diff2, self.sum_p_diff4, self.count)
        rms = math.sqrt(mse)
        return Estimate(rms, 0.5 / rms * mse_unc if rms > 0 else 0.0)

    def same_top(self) -> Estimate:
        p = self.n_same_top / self.count if self.count else 0.0
        return Estimate(p, math.sqrt(p * (1 - p) / (self.count - 1)) if self.count > 1 else 0.0)

    def kld_values(self) -> np.ndarray:
        """Every scored token's KLD, sorted."""
        return np.sort(np.concatenate(self._kld)) if self._kld else np.zeros(0, np.float32)

    def p_diff_values(self) -> np.ndarray:
        """Every scored token's p(model) - p(base) of the true next token, sorted."""
        return np.sort(np.concatenate(self._p_diff)) if self._p_diff else np.zeros(0, np.float32)


def save_base_log_probs(ctx, tokens, n_ctx: int, bos: int | None, n_vocab: int, path: str, n_chunks: int = -1,
                        progress: Callable[[int, float], None] | None = None) -> PerplexityResult:
    """The base pass: perplexity of ``tokens``, saving each scored token's log-probabilities to ``path``.

    The file appears only once complete (written beside it, then renamed): an
    interrupted or failed run leaves nothing behind.
    """
    tokens = np.asarray(tokens, dtype=np.int32)
    check_enough_tokens(len(tokens), n_ctx)
    n_chunk = chunk_count(len(tokens), n_ctx, n_chunks)
    if n_chunk == 0:
        raise PerplexityError("no chunks to evaluate (the chunk limit is 0)")
    result: list[PerplexityResult] = []

    def emit(f) -> None:
        writer = LogProbWriter(f, n_ctx, n_vocab, tokens[:n_chunk * n_ctx])

        def save(chunk: ScoredChunk) -> None:
            writer.write_chunk(chunk.logits)

        result.append(perplexity(ctx, tokens, n_ctx, bos, n_chunks, progress, on_chunk=save))

    write_atomically(path, emit)
    return result[0]



def open_base_log_probs(path: str, n_vocab: int, n_ctx: int | None = None) -> LogProbReader:
    """Open a base file and check it fits a model with ``n_vocab`` tokens (and the context ``n_ctx``, if given)."""
    reader = LogProbReader(path)
    try:
        check_base_fits(reader, n_vocab, n_ctx)
    except LogProbFileError:
        reader.close()
        raise
    return reader


def check_base_fits(reader: LogProbReader, n_vocab: int | None = None, n_ctx: int | None = None) -> None:
    """Refuse a base file made with another vocabulary, or with a context other than an explicit ``n_ctx``."""
    h = reader.header
    if n_vocab is not None and h.n_vocab != n_vocab:
        raise LogProbFileError(f"{reader.path}: inconsistent vocabulary: the file was made with {h.n_vocab} tokens, "
                               f"this model has {n_vocab}; compare models that share a vocabulary")
    if n_ctx is not None and h.n_ctx != n_ctx:
        raise LogProbFileError(f"{reader.path}: was computed with a context of {h.n_ctx}, but -c {n_ctx} was given; "
                               f"use -c {h.n_ctx} (or leave -c out)")


def kl_divergence(ctx, reader: LogProbReader, bos: int | None, n_chunks: int = -1,
                  progress: Callable[[int, KLDivergence], None] | None = None) -> KLDivergence:
    """The second pass: evaluate the base file's tokens with ``ctx``'s model and compare with the saved rows."""
    h = reader.header
    n_chunk = h.n_chunk if n_chunks < 0 else min(n_chunks, h.n_chunk)
    stats = KLDivergence()
    for chunk in evaluate_chunks(ctx, h.tokens, h.n_ctx, bos, n_chunk):
        if chunk.logits.shape[1] != h.n_vocab:
            raise LogProbFileError(f"{reader.path}: the model gives {chunk.logits.shape[1]} logits per token, the "
                                   f"file holds {h.n_vocab}")
        stats.add(chunk.logits, reader.read_chunk(), chunk.targets)
        if progress is not None:
            progress(chunk.index + 1, stats)
    return stats

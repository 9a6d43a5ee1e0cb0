"""llama.cpp's samplers (src/llama-sampler.cpp), one class each.

A sampler narrows or reshapes the candidates (``apply``), may remember accepted
tokens (``accept``) and forgets them on ``reset``. The last sampler of a chain
selects a token (``Dist``, ``Mirostat``, ``MirostatV2``, ``Greedy``) by setting
``Candidates.selected``. Each docstring states the rule it applies so a test can
check it on a hand-made logit vector.
"""

from __future__ import annotations

import math
from collections import Counter, deque

import numpy as np

from .candidates import Candidates, expf, float_running_sum, keep_top_k, softmax, sort_descending
from .errors import SamplingError
from .rng import Mt19937

_F32 = np.float32


class Sampler:
    """One step of the chain; the base does nothing."""

    name = "sampler"

    def apply(self, cand: Candidates) -> None:
        raise NotImplementedError

    def accept(self, token: int) -> None:
        pass

    def reset(self) -> None:
        pass


class LogitBias(Sampler):
    """Adds a fixed bias to chosen tokens' logits (-inf bans a token)."""

    name = "logit-bias"

    def __init__(self, biases: dict[int, float]):
        tokens = sorted(biases)
        self.tokens = np.array(tokens, dtype=np.int64)
        self.biases = np.array([biases[t] for t in tokens], dtype=np.float32)

    def apply(self, cand: Candidates) -> None:
        positions, which = cand.find(self.tokens)
        if len(positions):
            logits = cand.writable_logits()
            logits[positions] += self.biases[which]
            cand.probs = None
            cand.sorted = False


class Penalties(Sampler):
    """Repetition, frequency and presence penalties over the last ``last_n`` accepted tokens.

    For each candidate seen ``count`` times in that window: a positive logit is
    divided by ``repeat``, a negative (or zero) one multiplied by it; then
    ``count * frequency + presence`` is subtracted.
    """

    name = "penalties"

    def __init__(self, last_n: int, repeat: float, frequency: float, presence: float):
        self.last_n = last_n
        self.repeat = _F32(repeat)
        self.frequency = _F32(frequency)
        self.presence = _F32(presence)
        self.window: deque[int] = deque(maxlen=last_n)
        self.counts: Counter[int] = Counter()

    def accept(self, token: int) -> None:
        if len(self.window) == self.last_n:
            old = self.window[0]
            self.counts[old] -= 1
            if self.counts[old] == 0:
                del self.counts[old]
        self.window.append(token)
        self.counts[token] += 1

    def reset(self) -> None:
        self.window.clear()
        self.counts.clear()

    def apply(self, cand: Candidates) -> None:
        if not self.counts:
            return
        seen = np.fromiter(self.counts.keys(), dtype=np.int64, count=len(self.counts))
        counts = np.fromiter(self.counts.values(), dtype=np.float32, count=len(self.counts))
        order = np.argsort(seen)
        seen, counts = seen[order], counts[order]
        positions, which = cand.find(seen)
        cand.sorted = False
        if len(positions) == 0:
            return
        logits = cand.writable_logits()
        values = logits[positions]
        values = np.where(values <= 0, values * self.repeat, values / self.repeat)
        values = values - (counts[which] * self.frequency + self.presence)
        logits[positions] = values.astype(np.float32)
        cand.probs = None


class TopNSigma(Sampler):
    """Keeps tokens whose logit is within ``n`` standard deviations of the top logit.

    Mean and (population) standard deviation are taken over the finite logits;
    the others are set to -inf. ``n <= 0`` or a single candidate changes nothing.
    """

    name = "top-n-sigma"

    def __init__(self, n: float):
        self.n = _F32(n)

    def apply(self, cand: Candidates) -> None:
        if self.n <= 0 or len(cand) <= 1:
            return
        logits = cand.logits
        finite = logits != -np.inf
        valid = logits[finite]
        if len(valid) == 0:
            return
        top = valid.max()
        mean = float_running_sum(valid) / _F32(len(valid))
        std = _F32(math.sqrt(float(np.sum((valid.astype(np.float64) - float(mean)) ** 2)) / len(valid)))
        cut = logits < top - self.n * std
        if cut.any():
            logits = cand.writable_logits()
            logits[cut] = -np.inf
            cand.probs = None


class TopK(Sampler):
    """Keeps the ``k`` highest logits, sorted; ``k <= 0`` disables it."""

    name = "top-k"

    def __init__(self, k: int):
        self.k = k

    def apply(self, cand: Candidates) -> None:
        keep_top_k(cand, self.k)


class TypicalP(Sampler):
    """Locally typical sampling (Meister et al. 2022).

    Tokens are ordered by ``|-log p - H|`` (H the entropy) and kept until their
    probabilities add up to more than ``p``. ``p >= 1`` disables it. A zero
    probability contributes nothing to H (where llama.cpp would get NaN).
    """

    name = "typical"

    def __init__(self, p: float, min_keep: int):
        self.p = _F32(p)
        self.min_keep = min_keep

    def apply(self, cand: Candidates) -> None:
        if self.p >= 1.0:
            return
        softmax(cand, do_sort=True)
        p = cand.probs
        with np.errstate(divide="ignore", invalid="ignore"):
            log_p = np.log(p.astype(np.float64)).astype(np.float32)
            terms = np.where(p > 0, -p * log_p, _F32(0.0)).astype(np.float32)
        entropy = float_running_sum(terms)
        shifted = np.abs(-log_p - entropy)
        order = np.argsort(shifted, kind="stable")
        cumulative = np.cumsum(p[order], dtype=np.float32)
        last = len(order)
        for i in np.flatnonzero(cumulative > self.p):
            if self.min_keep == 0 or i >= self.min_keep - 1:
                last = int(i) + 1
                break
        cand.keep(order[:last], sorted=False)


class TopP(Sampler):
    """Nucleus sampling: keeps the most likely tokens until their probability reaches ``p``.

    The first token whose running (float32) sum is ``>= p`` is still kept, and at
    least ``min_keep`` tokens are. ``p >= 1`` disables it. For a large unsorted
    list only the top 256 are sorted first, as llama.cpp does; the rest only if needed.
    """

    name = "top-p"

    def __init__(self, p: float, min_keep: int):
        self.p = _F32(p)
        self.min_keep = min_keep

    def apply(self, cand: Candidates) -> None:
        if self.p >= 1.0:
            return
        softmax(cand, do_sort=False)
        if not cand.sorted and len(cand) > 1024:
            keep_top_k_by_logit = Candidates(cand.ids, cand.logits, cand.probs, owns_logits=False)
            keep_top_k(keep_top_k_by_logit, 256)
            last = self._cutoff(keep_top_k_by_logit.probs)
            if last is not None:
                cand.ids, cand.logits, cand.probs = (keep_top_k_by_logit.ids, keep_top_k_by_logit.logits,
                                                     keep_top_k_by_logit.probs)
                cand.sorted = True
                cand.keep(slice(0, last))
                return
        sort_descending(cand)
        last = self._cutoff(cand.probs)
        cand.keep(slice(0, len(cand) if last is None else last))

    def _cutoff(self, probs: np.ndarray) -> int | None:
        cumulative = np.cumsum(probs, dtype=np.float32)
        for i in np.flatnonzero(cumulative >= self.p):
            if i + 1 >= self.min_keep:
                return int(i) + 1
        return None


class MinP(Sampler):
    """Keeps tokens whose probability is at least ``p`` times the top token's.

    In logits: ``logit >= max_logit + log(p)``. ``p <= 0`` disables it; at least
    ``min_keep`` tokens are kept (then the list is sorted first).
    """

    name = "min-p"

    def __init__(self, p: float, min_keep: int):
        self.p = _F32(p)
        self.min_keep = min_keep

    def apply(self, cand: Candidates) -> None:
        if self.p <= 0.0 or len(cand) == 0:
            return
        log_p = _F32(math.log(float(self.p)))
        if not cand.sorted:
            min_logit = cand.logits.max() + log_p
            kept = np.flatnonzero(cand.logits >= min_logit)
            if len(kept) and len(kept) >= self.min_keep:
                cand.keep(kept)
                return
            sort_descending(cand)
        min_logit = cand.logits[0] + log_p
        below = np.flatnonzero(cand.logits[1:] < min_logit) + 1
        below = below[below >= self.min_keep]
        cand.keep(slice(0, int(below[0]) if len(below) else len(cand)))


class Xtc(Sampler):
    """Exclude Top Choices: with chance ``probability``, drops every token at or above
    ``threshold`` probability except the least likely of them.

    Disabled when ``probability <= 0``, ``threshold > 0.5`` or fewer than 2 candidates.
    """

    name = "xtc"

    def __init__(self, probability: float, threshold: float, min_keep: int, seed: int):
        self.probability = _F32(probability)
        self.threshold = _F32(threshold)
        self.min_keep = min_keep
        self.seed = seed
        self.rng = Mt19937(seed)

    def reset(self) -> None:
        self.rng.reseed(self.seed)

    def apply(self, cand: Candidates) -> None:
        if self.probability <= 0.0 or self.threshold > 0.5 or len(cand) < 2:
            return
        if self.rng.uniform_float() > self.probability:
            return
        softmax(cand, do_sort=True)
        above = cand.probs >= self.threshold
        pos_last = 0 if not above[0] else (int(np.argmin(above)) - 1 if not above.all() else len(cand) - 1)
        if len(cand) - pos_last >= self.min_keep and pos_last > 0:
            cand.keep(slice(pos_last, None))


class Temperature(Sampler):
    """Divides logits by the temperature; with ``dynatemp_range > 0`` the temperature
    follows the normalised entropy (dynamic temperature, "entropy sampling").

    ``temp <= 0`` keeps the first highest logit and sets all others to -inf.
    Dynamic: ``T = min_t + (max_t - min_t) * (H / log n) ** exponent`` with
    ``min_t = max(0, temp - range)``, ``max_t = temp + range``.
    """

    name = "temp-ext"

    def __init__(self, temp: float, dynatemp_range: float = 0.0, dynatemp_exponent: float = 1.0):
        self.temp = _F32(temp)
        self.delta = _F32(dynatemp_range)
        self.exponent = _F32(dynatemp_exponent)

    def apply(self, cand: Candidates) -> None:
        if self.delta > 0:
            self._apply_dynamic(cand)
        else:
            scale_by_temperature(cand, self.temp)

    def _apply_dynamic(self, cand: Candidates) -> None:
        if len(cand) <= 1:
            return
        min_temp = max(_F32(0.0), self.temp - self.delta)
        max_temp = self.temp + self.delta
        max_entropy = _F32(-math.log(float(_F32(1.0) / _F32(len(cand)))))
        softmax(cand, do_sort=True)
        p = cand.probs
        positive = p[p > 0]
        entropy = -float_running_sum(positive * np.log(positive.astype(np.float64)).astype(np.float32))
        normalized = _F32(entropy / max_entropy)
        dyn_temp = _F32(min_temp + (max_temp - min_temp) * _F32(float(normalized) ** float(self.exponent)))
        scale_by_temperature(cand, dyn_temp)
        weights = np.exp(cand.logits.astype(np.float64) - float(cand.logits[0]))
        cand.probs = (weights / np.cumsum(weights)[-1]).astype(np.float32)


def scale_by_temperature(cand: Candidates, temp: np.float32) -> None:
    """llama.cpp's ``temp_impl``: ``logit / temp``, or keep only the first maximum when ``temp <= 0``."""
    if len(cand) == 0:
        return
    sorted_ = cand.sorted  # neither branch changes the order of the finite logits
    if temp <= 0:
        best = int(np.argmax(cand.logits))
        logits = np.full(len(cand), -np.inf, dtype=np.float32)
        logits[best] = cand.logits[best]
        cand.set_logits(logits)
    else:
        cand.set_logits(cand.logits / temp)
    cand.sorted = sorted_


class Dist(Sampler):
    """Draws a token from the softmax of the remaining logits (one uniform double per draw)."""

    name = "dist"

    def __init__(self, seed: int):
        self.seed = seed
        self.rng = Mt19937(seed)

    def reset(self) -> None:
        self.rng.reseed(self.seed)

    def apply(self, cand: Candidates) -> None:
        if len(cand) == 0:
            raise SamplingError("no candidates left to sample from")
        u = self.rng.uniform_double()  # drawn even for a single candidate, as llama.cpp does
        if len(cand) == 1:
            cand.probs = np.ones(1, dtype=np.float32)
            cand.selected = 0
            return
        max_logit = cand.logits[0] if cand.sorted else cand.logits.max()
        if max_logit == -np.inf:
            raise SamplingError("every remaining candidate has a -inf logit: no token can be sampled")
        p = expf(cand.logits - max_logit)
        running = np.cumsum(p.astype(np.float64))
        total = running[-1]
        cand.selected = min(int(np.searchsorted(running, total * u, side="left")), len(cand) - 1)
        cand.probs = (p / total).astype(np.float32)


class Greedy(Sampler):
    """Selects the first candidate with the highest logit."""

    name = "greedy"

    def apply(self, cand: Candidates) -> None:
        if len(cand) == 0:
            raise SamplingError("no candidates left to sample from")
        cand.selected = int(np.argmax(cand.logits))


class Mirostat(Sampler):
    """Mirostat 1.0 (Basu et al. 2021): estimates the Zipf exponent from the top ``m``
    probabilities, picks the top-k that targets surprise ``mu``, draws, and moves
    ``mu`` towards ``tau`` by ``eta`` times the observed error.
    """

    name = "mirostat"

    def __init__(self, n_vocab: int, seed: int, tau: float, eta: float, m: int = 100):
        self.n_vocab = n_vocab
        self.seed = seed
        self.tau = _F32(tau)
        self.eta = _F32(eta)
        self.m = m
        self.mu = _F32(2.0) * self.tau
        self.rng = Mt19937(seed)

    def reset(self) -> None:
        self.mu = _F32(2.0) * self.tau
        self.rng.reseed(self.seed)

    def apply(self, cand: Candidates) -> None:
        softmax(cand, do_sort=True)
        p = cand.probs
        n = min(self.m - 1, len(cand) - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            i = np.arange(n, dtype=np.float32)
            t = np.log(((i + 2) / (i + 1)).astype(np.float64)).astype(np.float32)
            b = np.log((p[:n] / p[1:n + 1]).astype(np.float64)).astype(np.float32)
            s_hat = float_running_sum(t * b) / float_running_sum(t * t)
            epsilon = s_hat - _F32(1.0)
            k = _F32((epsilon * _F32(2.0 ** float(self.mu))) / (_F32(1.0) - _F32(float(self.n_vocab) ** -float(epsilon))))
            k = _F32(float(k) ** float(_F32(1.0) / s_hat)) if np.isfinite(k) and k >= 0 else _F32(np.nan)
        # C's int(k) of NaN, infinity or anything past INT_MAX is INT_MIN on x86, then max(.., 1).
        keep = int(k) if np.isfinite(k) and k < 2**31 else 1
        keep_top_k(cand, max(keep, 1))
        softmax(cand, do_sort=True)
        cand.selected = self.rng.discrete(cand.probs)
        surprise = -_F32(math.log2(float(cand.probs[cand.selected])))
        self.mu = _F32(self.mu - self.eta * (surprise - self.tau))


class MirostatV2(Sampler):
    """Mirostat 2.0: drops tokens whose surprise ``-log2 p`` exceeds ``mu`` (keeping at
    least one), draws from the rest, and updates ``mu`` as Mirostat 1.0 does.
    """

    name = "mirostat-v2"

    def __init__(self, seed: int, tau: float, eta: float):
        self.seed = seed
        self.tau = _F32(tau)
        self.eta = _F32(eta)
        self.mu = _F32(2.0) * self.tau
        self.rng = Mt19937(seed)

    def reset(self) -> None:
        self.mu = _F32(2.0) * self.tau
        self.rng.reseed(self.seed)

    def apply(self, cand: Candidates) -> None:
        softmax(cand, do_sort=True)
        with np.errstate(divide="ignore"):
            surprise = -np.log2(cand.probs.astype(np.float64)).astype(np.float32)
        too_surprising = np.flatnonzero(surprise > self.mu)
        cand.keep(slice(0, max(1, int(too_surprising[0]) if len(too_surprising) else len(cand))))
        softmax(cand, do_sort=True)
        cand.selected = self.rng.discrete(cand.probs)
        observed = -_F32(math.log2(float(cand.probs[cand.selected])))
        self.mu = _F32(self.mu - self.eta * (observed - self.tau))

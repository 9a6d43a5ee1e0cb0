"""The candidate list the samplers narrow down: llama.cpp's ``llama_token_data_array`` in NumPy.

Each sampler sees token ids, their logits, perhaps their probabilities, and
whether the list is sorted by logit (descending). Samplers replace the arrays
with smaller ones rather than editing the caller's logits, so a 262k-entry
vocabulary is copied only by samplers that must change every entry.

Arithmetic follows llama.cpp's float32 where it decides which tokens survive
(``expf`` of ``logit - max``, running float sums in candidate order), so the
same logits give the same survivors; ties in sorting are broken by the earlier
position, where ``std::sort`` leaves the order unspecified.
"""

from __future__ import annotations

import numpy as np

from .errors import SamplingError

# Above this many candidates a top-k selection narrows the search with group
# maxima instead of partitioning the whole vocabulary (see top_indices).
_GROUPED_SELECT_MIN = 8192
_GROUPS = 32


class Candidates:
    """Token ids with their logits (and, once a softmax ran, probabilities)."""

    __slots__ = ("ids", "logits", "probs", "sorted", "selected", "_owns_logits", "_whole_vocab")

    def __init__(self, ids: np.ndarray, logits: np.ndarray, probs: np.ndarray | None = None,
                 sorted: bool = False, owns_logits: bool = True):
        self.ids = ids
        self.logits = logits
        self.probs = probs
        self.sorted = sorted
        self.selected = -1
        self._owns_logits = owns_logits
        self._whole_vocab = False  # ids == arange(n): a token's position is its id

    @classmethod
    def from_logits(cls, logits: np.ndarray, all_ids: np.ndarray) -> "Candidates":
        """The whole vocabulary, sharing the caller's logits (copied only when a sampler edits them)."""
        cand = cls(all_ids, logits, owns_logits=False)
        cand._whole_vocab = True
        return cand

    def __len__(self) -> int:
        return len(self.ids)

    def keep(self, index: np.ndarray | slice, sorted: bool | None = None) -> None:
        """Keep only the candidates at ``index`` (a slice or an index array), in that order."""
        self.ids = self.ids[index]
        self.logits = self.logits[index]
        self._whole_vocab = False
        if not isinstance(index, slice):
            self._owns_logits = True  # fancy indexing made a copy
        if self.probs is not None:
            self.probs = self.probs[index]
        if sorted is not None:
            self.sorted = sorted

    def set_logits(self, logits: np.ndarray) -> None:
        """New logits for the same candidates: probabilities and order are no longer known."""
        self.logits = logits
        self.probs = None
        self.sorted = False
        self._owns_logits = True

    def find(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each of ``tokens`` (sorted, unique ids) sits among the candidates.

        Returns (positions in this list, indexes into ``tokens``) for the tokens present.
        """
        n = len(self.ids)
        if self._whole_vocab:
            present = np.flatnonzero(tokens < n)
            return tokens[present], present
        if n > 4096:
            positions = np.flatnonzero(np.isin(self.ids, tokens, kind="table"))
            return positions, np.searchsorted(tokens, self.ids[positions])
        where = np.minimum(np.searchsorted(tokens, self.ids), len(tokens) - 1)
        positions = np.flatnonzero(tokens[where] == self.ids)
        return positions, where[positions]

    def writable_logits(self) -> np.ndarray:
        """The logits as an array this chain owns, so a sampler may change entries in place."""
        if not self._owns_logits:
            self.logits = np.array(self.logits, dtype=np.float32)
            self._owns_logits = True
        return self.logits


def expf(x: np.ndarray) -> np.ndarray:
    """float32 ``expf``: exp in double, rounded once to float32, as a correctly rounded expf gives."""
    return np.exp(x.astype(np.float64)).astype(np.float32)


def float_running_sum(values: np.ndarray) -> np.float32:
    """``float s = 0; for (...) s += v;``: a sequential float32 sum, not NumPy's pairwise one."""
    if len(values) == 0:
        return np.float32(0.0)
    return np.cumsum(values, dtype=np.float32)[-1]


def sort_descending(cand: Candidates) -> None:
    """Sort all candidates by logit, highest first; equal logits keep their order."""
    if not cand.sorted:
        order = np.argsort(-cand.logits, kind="stable")
        cand.keep(order, sorted=True)


def top_indices(logits: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest logits, highest first (ties: lower position first).

    For a large vocabulary the logits are viewed as ``_GROUPS`` rows and the
    column maxima taken (one vectorised pass): each column is a group of
    positions ``j, j + m, j + 2m, ...``. With ``T`` the k-th largest group
    maximum, at least k logits are ``>= T``, so every one of the k best lies in
    a group whose maximum is ``>= T``; only those few groups are gathered and
    sorted. The result is exact, at about a fifth of a full partition's cost.
    """
    n = len(logits)
    k = min(k, n)
    m = n // _GROUPS
    if n < _GROUPED_SELECT_MIN or k * _GROUPS * 8 > n:
        if k == n:
            return np.argsort(-logits, kind="stable")
        threshold = np.partition(logits, n - k)[n - k]
        above = np.flatnonzero(logits >= threshold)
        return above[np.argsort(-logits[above], kind="stable")[:k]]
    group_max = logits[:m * _GROUPS].reshape(_GROUPS, m).max(axis=0)
    threshold = np.partition(group_max, m - k)[m - k]
    groups = np.flatnonzero(group_max >= threshold)
    positions = (groups[None, :] + m * np.arange(_GROUPS)[:, None]).ravel()
    positions = np.concatenate([positions, np.arange(m * _GROUPS, n)])  # the few logits past the last row
    values = logits[positions]
    keep = values >= threshold
    positions, values = positions[keep], values[keep]
    order = np.lexsort((positions, -values))[:k]
    return positions[order]


def keep_top_k(cand: Candidates, k: int) -> None:
    """llama.cpp's ``top_k_impl``: keep the k best (sorted); k <= 0 changes nothing."""
    if k <= 0:
        return
    k = min(k, len(cand))
    if cand.sorted:
        cand.keep(slice(0, k))
    else:
        cand.keep(top_indices(cand.logits, k), sorted=True)


def softmax(cand: Candidates, do_sort: bool) -> None:
    """llama.cpp's ``softmax_impl``: probabilities from logits (float32), sorting first if asked."""
    if len(cand) == 0:
        raise SamplingError("no candidates left to sample from")
    if do_sort:
        sort_descending(cand)
    max_logit = cand.logits[0] if cand.sorted else cand.logits.max()
    if max_logit == -np.inf:
        raise SamplingError("every remaining candidate has a -inf logit: no token can be sampled")
    p = expf(cand.logits - max_logit)
    cand.probs = p / float_running_sum(p)


def logits_must_be_valid(logits: np.ndarray, n_vocab: int) -> np.ndarray:
    """The logits as float32, checked for shape and NaN (a model bug, not something to sample from)."""
    if not isinstance(logits, np.ndarray):
        logits = np.asarray(logits)
    if logits.ndim != 1 or logits.shape[0] != n_vocab:
        raise SamplingError(f"logits must be a 1-D array of {n_vocab} values, got shape {logits.shape}")
    if logits.dtype != np.float32:
        logits = logits.astype(np.float32)
    top = logits.max()
    if np.isnan(top):
        raise SamplingError("logits contain NaN")
    if top == -np.inf:
        raise SamplingError("every logit is -inf: no token can be sampled")
    return logits

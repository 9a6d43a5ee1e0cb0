"""llama-cpp-python's hooks into generation: logits processors and stopping criteria.

A logits processor is ``f(input_ids, scores) -> scores`` (it may change the logits before the
sampler sees them); a stopping criterion is ``f(input_ids, logits) -> bool`` (True ends the
generation). ``Llama`` takes one callable, a ``LogitsProcessorList``/``StoppingCriteriaList``, or a
plain list of callables, which it treats as the list classes do.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

LogitsProcessor = Callable[[np.ndarray, np.ndarray], np.ndarray]
StoppingCriteria = Callable[[np.ndarray, np.ndarray], bool]


class LogitsProcessorList(list):
    """Processors applied in order, each to the previous one's scores."""

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        for processor in self:
            scores = processor(input_ids, scores)
        return scores


class StoppingCriteriaList(list):
    """Stops when any of its criteria says to."""

    def __call__(self, input_ids: np.ndarray, logits: np.ndarray) -> bool:
        return any([criterion(input_ids, logits) for criterion in self])


def _one_callable(value, list_class, what: str):
    """None, a callable, or a list or tuple of callables (made a ``list_class``)."""
    if value is None or (callable(value) and not isinstance(value, (list, tuple))):
        return value
    if isinstance(value, (list, tuple)) and all(callable(v) for v in value):
        return value if isinstance(value, list_class) else list_class(value)
    raise TypeError(f"{what}, or a list of them")


def as_logits_processor(value):
    return _one_callable(value, LogitsProcessorList,
                         "logits_processor must be a callable f(input_ids, scores) -> scores")


def as_stopping_criteria(value):
    return _one_callable(value, StoppingCriteriaList,
                         "stopping_criteria must be a callable f(input_ids, logits) -> bool")

"""Tensors computed only when they are written.

A conversion first decides every output tensor's name, shape and type (which fixes the GGUF
header), then writes the tensors one by one. A :class:`Lazy` carries the shape and dtype a
tensor will have and the function that makes it, so renames, permutations and stacking are
planned without reading any weights, and each tensor's data exists only while it is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class Lazy:
    shape: tuple[int, ...]
    dtype: np.dtype
    compute: Callable[[], np.ndarray]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def then(self, fn: Callable[[np.ndarray], np.ndarray], shape: Sequence[int] | None = None,
             dtype: np.dtype | None = None) -> "Lazy":
        """``fn`` applied to the values, giving ``shape``/``dtype`` (the same as now when not given)."""
        source = self.compute
        return Lazy(tuple(self.shape if shape is None else shape), np.dtype(self.dtype if dtype is None else dtype),
                    lambda: fn(source()))

    def rows(self, stop: int) -> "Lazy":
        """The first ``stop`` rows (along the first axis)."""
        stop = min(stop, self.shape[0]) if stop >= 0 else self.shape[0]
        return self.then(lambda a: a[:stop], (stop, *self.shape[1:]))


def constant(values: np.ndarray) -> Lazy:
    values = np.asarray(values)
    return Lazy(values.shape, values.dtype, lambda: values)


def stack(parts: Sequence[Lazy]) -> Lazy:
    """The parts stacked along a new first axis (PyTorch's ``torch.stack(parts, dim=0)``)."""
    shapes = {p.shape for p in parts}
    if len(shapes) != 1:
        raise ValueError(f"cannot stack tensors of shapes {sorted(shapes)}")
    dtype = np.result_type(*(p.dtype for p in parts))
    return Lazy((len(parts), *parts[0].shape), dtype, lambda: np.stack([p.compute() for p in parts]).astype(dtype))

"""Split GGUF files, as llama.cpp names, reads, writes and merges them (``llama-gguf-split``).

A model split in N parts is ``PREFIX-00001-of-0000N.gguf`` … ``PREFIX-0000N-of-0000N.gguf``.
Every part is a GGUF file of its own with three keys: ``split.no`` (UINT16, from 0),
``split.count`` (UINT16) and ``split.tensors.count`` (INT32, the tensors of all parts). The
first part also holds all the model's metadata; the tensors are spread over the parts in
their original order.

:func:`open_parts` loads the other parts behind a first part (each memory-mapped and validated
as any GGUF file is); :func:`split` and :func:`merge` write the same bytes as llama-gguf-split's
``--split-max-tensors`` / ``--split-max-size`` and ``--merge``, each file atomically.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from .constants import ValueType
from .reader import GGUFError, MetadataValue, TensorInfo
from .writer import write

if TYPE_CHECKING:
    from .reader import GGUFFile

KEY_NO, KEY_COUNT, KEY_TENSORS = "split.no", "split.count", "split.tensors.count"
_PART = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
DEFAULT_MAX_TENSORS = 128  # llama-gguf-split's default
ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT: llama-gguf-split pads every tensor to it


def part_path(prefix: str, index: int, count: int) -> str:
    """llama_split_path: ``PREFIX-0000{index+1}-of-0000{count}.gguf``."""
    return f"{prefix}-{index + 1:05d}-of-{count:05d}.gguf"


def part_prefix(path: str, index: int, count: int) -> str | None:
    """llama_split_prefix: the prefix of a part's path, or None if the name does not say this part."""
    suffix = f"-{index + 1:05d}-of-{count:05d}.gguf"
    return path[:-len(suffix)] if len(path) > len(suffix) and path.endswith(suffix) else None


def split_count(f: "GGUFFile") -> int:
    """How many parts ``f`` says the model has (0 or 1: not split)."""
    return f.get_int(KEY_COUNT, 0) if KEY_COUNT in f else 0


def open_parts(first: "GGUFFile") -> list["GGUFFile"]:
    """The parts after ``first`` (which must be part 1), each opened and checked against it."""
    from .reader import read_one

    count = split_count(first)
    if first.get_int(KEY_NO, 0) != 0:
        raise GGUFError(f"this is part {first.get_int(KEY_NO) + 1} of {count} of a split model: open the first "
                        f"part ({part_path(_prefix_of(first), 0, count)})", first.path)
    prefix = _prefix_of(first)
    expected_total = first.get_int(KEY_TENSORS, -1) if KEY_TENSORS in first else -1
    parts = []
    for i in range(1, count):
        path = part_path(prefix, i, count)
        if not os.path.exists(path):
            raise GGUFError(f"part {i + 1} of {count} of this split model is missing: {path}", first.path)
        part = read_one(path)
        if part.get_int(KEY_NO, -1) != i or split_count(part) != count:
            raise GGUFError(f"says it is part {part.get_int(KEY_NO, -1) + 1} of {split_count(part)}, "
                            f"but its name makes it part {i + 1} of {count}", path)
        clash = next((name for name in part.tensors if name in first.tensors or
                      any(name in p.tensors for p in parts)), None)
        if clash is not None:
            raise GGUFError(f"tensor {clash!r} is also in an earlier part", path)
        parts.append(part)
    total = len(first.tensors) + sum(len(p.tensors) for p in parts)
    if expected_total >= 0 and total != expected_total:
        raise GGUFError(f"the {count} parts hold {total} tensors, but {KEY_TENSORS} says {expected_total}", first.path)
    return parts


def _prefix_of(first: "GGUFFile") -> str:
    count = split_count(first)
    no = first.get_int(KEY_NO, 0)
    prefix = part_prefix(first.path, no, count)
    if prefix is None:
        raise GGUFError(f"{KEY_COUNT} says this file is part {no + 1} of {count}, but its name does not end in "
                        f"-{no + 1:05d}-of-{count:05d}.gguf, so the other parts cannot be found", first.path)
    return prefix


def _with(metadata: dict[str, MetadataValue], key: str, value: int, vtype: ValueType) -> None:
    """gguf_set_val_*: a key that is set again moves to the end."""
    metadata.pop(key, None)
    metadata[key] = MetadataValue(value, vtype)


def plan(tensors: list[TensorInfo], *, max_tensors: int | None = None, max_bytes: int | None = None,
         no_tensor_first_split: bool = False) -> list[list[TensorInfo]]:
    """Which tensors go in which part, by llama-gguf-split's rule (tensor count, else padded bytes)."""
    if max_tensors is not None and max_bytes is not None:
        raise ValueError("give either a tensor limit or a size limit, not both")
    if max_tensors is None and max_bytes is None:
        max_tensors = DEFAULT_MAX_TENSORS
    if (max_tensors is not None and max_tensors < 1) or (max_bytes is not None and max_bytes < 1):
        raise ValueError("the limit per part must be positive")
    parts: list[list[TensorInfo]] = [[]]
    if no_tensor_first_split:
        parts.append([])
    size = 0
    for i, t in enumerate(tensors):
        n = -(-t.n_bytes // ALIGNMENT) * ALIGNMENT
        if max_bytes is not None:
            cut = size + n > max_bytes
        else:
            cut = 0 < i < len(tensors) and i % max_tensors == 0
        if cut:
            if not parts[-1]:
                raise ValueError(f"tensor {t.name!r} ({n} bytes) does not fit in a part of {max_bytes} bytes: "
                                 "one of the parts would have no tensors")
            parts.append([])
            size = n
        else:
            size += n
        parts[-1].append(t)
    return parts


def split(f: "GGUFFile", output_prefix: str, **limits) -> list[str]:
    """Write ``f`` as parts ``output_prefix-0000i-of-0000N.gguf``; return their paths."""
    parts = plan(list(f.tensors.values()), **limits)
    count, n_tensors = len(parts), len(f.tensors)
    paths = [part_path(output_prefix, i, count) for i in range(count)]
    written = []
    try:
        for i, (tensors, path) in enumerate(zip(parts, paths)):
            metadata = dict(f.fields) if i == 0 else {}
            _with(metadata, KEY_NO, i, ValueType.UINT16)
            _with(metadata, KEY_COUNT, 0, ValueType.UINT16)
            _with(metadata, KEY_TENSORS, n_tensors, ValueType.INT32)
            _with(metadata, KEY_COUNT, count, ValueType.UINT16)
            write(path, metadata, tensors)
            written.append(path)
    except BaseException:
        for path in written:  # all the parts or none
            os.unlink(path)
        raise
    return paths


def merge(first_part: str, output: str) -> int:
    """Write the model split from ``first_part`` on as one file ``output``; return its tensor count.

    As llama-gguf-split --merge: the first part's metadata (``split.count`` set to 0), every
    part's tensors in order. An existing ``output`` is never overwritten."""
    from .reader import read_one

    if os.path.exists(output):
        raise GGUFError("the output file already exists; it is not overwritten", output)
    first = read_one(first_part)
    if split_count(first) < 1:
        raise GGUFError(f"not part of a split model: it has no {KEY_COUNT}", first_part)
    parts = [first, *open_parts(first)] if split_count(first) > 1 else [first]
    metadata = dict(first.fields)
    _with(metadata, KEY_COUNT, 0, ValueType.UINT16)
    tensors = [t for p in parts for t in p.tensors.values()]
    write(output, metadata, tensors)
    return len(tensors)

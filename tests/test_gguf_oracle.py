"""Agreement with the ``gguf`` package's reader (the test-only oracle) on every real GGUF file we have.

Same metadata keys in the same order, at the same byte offsets, with the same type
tags and the same bytes for every value (strings compared as raw bytes, arrays
element by element); the same tensor index (names, shapes, types, absolute data
offsets, sizes). The oracle is slow on big vocabularies (about 10 s for gemma-3's
262k tokens), so each file is read by it exactly once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType

from lamina.gguf import ValueType, read
from lamina.gguf.constants import SCALAR_DTYPES
from lamina.testing.models import MODEL_NAMES, shared_dir

_REFDATA = shared_dir() / "refdata"
SHARED_FILES = sorted((_REFDATA / "vocab").glob("*.gguf")) + sorted((_REFDATA / "tiny").glob("*.gguf"))


def test_the_shared_files_are_there():
    # An empty parametrization would make the agreement test below silently vacuous.
    assert len(list((_REFDATA / "vocab").glob("*.gguf"))) == 11
    assert len(list((_REFDATA / "tiny").glob("*.gguf"))) == 8


def _their_value_bytes(field, etype: ValueType) -> list[bytes] | bytes:
    if etype == ValueType.STRING:
        return [bytes(field.parts[i]) for i in field.data]
    if not field.data:
        return b""
    return np.concatenate([field.parts[i] for i in field.data]).tobytes()


def _my_value_bytes(value, etype: ValueType, is_array: bool) -> list[bytes] | bytes:
    if etype == ValueType.STRING:
        items = value if is_array else [value]
        return [s.encode("utf-8", "surrogateescape") for s in items]
    if is_array:
        assert isinstance(value, np.ndarray) and value.dtype == SCALAR_DTYPES[etype]
        return value.tobytes()
    return np.asarray(value, dtype=SCALAR_DTYPES[etype]).tobytes()


def assert_agrees_with_oracle(path: Path) -> None:
    mine = read(path)
    theirs = GGUFReader(path)

    assert mine.version == theirs.fields["GGUF.version"].contents()
    their_fields = {k: v for k, v in theirs.fields.items() if not k.startswith("GGUF.")}
    assert list(mine.fields) == list(their_fields)
    for key, field in mine.fields.items():
        t = their_fields[key]
        assert mine.field_offsets[key] == t.offset, key
        assert GGUFValueType(field.type) == t.types[0], key
        if field.type == ValueType.ARRAY:
            # parts: key length, key, value type, element type, count, elements...
            assert field.element_type == ValueType(int(t.parts[3][0])), key
            assert len(field.value) == int(t.parts[4][0]), key
            etype = field.element_type
        else:
            etype = field.type
        is_array = field.type == ValueType.ARRAY
        assert _my_value_bytes(field.value, etype, is_array) == _their_value_bytes(t, etype), key

    assert list(mine.tensors) == [t.name for t in theirs.tensors]
    for t in theirs.tensors:
        m = mine.tensors[t.name]
        assert m.shape == tuple(int(d) for d in t.shape), t.name
        assert m.type == t.tensor_type.name, t.name
        assert mine.data_offset + m.offset == t.data_offset, t.name
        assert (m.n_elements, m.n_bytes) == (int(t.n_elements), int(t.n_bytes)), t.name
        assert m.data.nbytes == t.data.nbytes, t.name
        if m.data.dtype == t.data.dtype:
            assert m.data.shape == t.data.shape, t.name
        n = min(m.data.nbytes, 256)
        assert m.data.reshape(-1).view(np.uint8)[:n].tobytes() == t.data.reshape(-1).view(np.uint8)[:n].tobytes()


@pytest.mark.parametrize("name", list(MODEL_NAMES))
def test_real_models_agree_with_gguf_package(model_paths, name):
    assert_agrees_with_oracle(model_paths[name])


@pytest.mark.parametrize("path", SHARED_FILES, ids=[p.name for p in SHARED_FILES])
def test_shared_files_agree_with_gguf_package(path):
    assert_agrees_with_oracle(path)

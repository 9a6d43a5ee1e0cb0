"""Random byte flips and truncations of a small valid file (BAD-INPUTS.md item 12).

Whatever the damage, reading either succeeds or raises GGUFError: no other
exception, no hang, no allocation beyond the file's own size. When a damaged file
does load, everything a caller can then touch (typed getters, tensor views) must
work too.
"""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamina.gguf import GGUFError, MetadataValue, NewTensor, ValueType, read, write

V = ValueType
_names = itertools.count()


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> bytes:
    """A small model-like file: metadata of many types, arrays, and F32/F16/Q4_0/Q8_0 tensors."""
    path = tmp_path_factory.mktemp("fuzz") / "valid.gguf"
    metadata = {
        "general.architecture": "llama",
        "general.alignment": MetadataValue(32, V.UINT32),
        "llama.block_count": MetadataValue(2, V.UINT32),
        "llama.context_length": MetadataValue(128, V.UINT64),
        "llama.rope.freq_base": MetadataValue(10000.0, V.FLOAT32),
        "llama.attention.layer_norm_rms_epsilon": MetadataValue(1e-6, V.FLOAT64),
        "llama.small": MetadataValue(-3, V.INT8),
        "llama.half": MetadataValue(-300, V.INT16),
        "llama.word": MetadataValue(60000, V.UINT16),
        "llama.byte": MetadataValue(200, V.UINT8),
        "llama.signed": MetadataValue(-(2**40), V.INT64),
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.tokens": ["<s>", "</s>", "a", "b", "ab", "▁c"],
        "tokenizer.ggml.scores": MetadataValue(np.array([0, 0, -1, -2, -3, -4], "<f4"), V.ARRAY, V.FLOAT32),
        "tokenizer.ggml.token_type": MetadataValue([3, 3, 1, 1, 1, 1], V.ARRAY, V.INT32),
        "tokenizer.flags": MetadataValue([True, False], V.ARRAY, V.BOOL),
        "tokenizer.chat_template": "{{ messages }}",
    }
    tensors = [
        NewTensor("token_embd.weight", (8, 6), "F32", np.linspace(-1, 1, 48, dtype="<f4")),
        NewTensor("blk.0.attn_norm.weight", (8,), "F16", np.ones(8, "<f2")),
        NewTensor("blk.0.ffn_up.weight", (32, 2), "Q4_0", (np.arange(36) * 7 % 256).astype(np.uint8)),
        NewTensor("blk.1.ffn_up.weight", (32, 1), "Q8_0", np.arange(34, dtype=np.uint8)),
        NewTensor("output_norm.weight", (0, 3), "F32", np.zeros(0, "<f4")),
    ]
    write(path, metadata, tensors)
    content = path.read_bytes()
    assert len(read(path).tensors) == 5
    return content


def _exercise(f) -> None:
    """Everything a loader does with a file that opened."""
    for key in f.fields:
        for getter in (f.get_int, f.get_float, f.get_str, f.get_bool, f.get_array):
            try:
                getter(key)
            except GGUFError:
                pass
    for t in f.tensors.values():
        assert t.data.nbytes == t.n_bytes
        np.asarray(t.data).view(np.uint8).sum()  # touches every byte of the view


def _check(tmp_dir, content: bytes) -> None:
    path = tmp_dir / f"case-{next(_names)}.gguf"
    path.write_bytes(content)
    tracemalloc.start()
    try:
        try:
            f = read(path)
        except GGUFError as e:
            assert str(path) in str(e)
            return
        try:
            _exercise(f)
        finally:
            f.close()
        _, peak = tracemalloc.get_traced_memory()
        assert peak < 64 * len(content) + (1 << 20), f"opening {len(content)} bytes allocated {peak}"
    finally:
        tracemalloc.stop()
        path.unlink()


FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.data())
def test_random_byte_flips(valid, tmp_path, data):
    content = bytearray(valid)
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(content) - 1), st.integers(0, 255)), min_size=1, max_size=8))
    for position, value in flips:
        content[position] = value
    _check(tmp_path, bytes(content))


@FUZZ
@given(data=st.data())
def test_random_truncations(valid, tmp_path, data):
    cut = data.draw(st.integers(0, len(valid) - 1))
    _check(tmp_path, valid[:cut])


@FUZZ
@given(data=st.data())
def test_flips_in_the_header_and_index(valid, tmp_path, data):
    # Most of the bytes that matter (counts, lengths, types, dims, offsets) are in the first few hundred.
    header_end = read_data_offset(valid, tmp_path)
    content = bytearray(valid)
    positions = st.integers(0, header_end - 1)
    for position, value in data.draw(st.lists(st.tuples(positions, st.integers(0, 255)), min_size=1, max_size=4)):
        content[position] = value
    if data.draw(st.booleans()):
        content = content[: data.draw(st.integers(0, len(content)))]
    _check(tmp_path, bytes(content))


def read_data_offset(content: bytes, tmp_dir) -> int:
    path = tmp_dir / "probe.gguf"
    if not path.exists():
        path.write_bytes(content)
    return read(path).data_offset


def test_every_single_truncation(valid, tmp_path):
    # Exhaustive over the header and index: each prefix is either refused or (past the index) loads.
    header_end = read_data_offset(valid, tmp_path)
    for cut in range(header_end + 1):
        _check(tmp_path, valid[:cut])

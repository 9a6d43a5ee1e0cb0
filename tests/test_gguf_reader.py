"""lamina.gguf.read: versions, every metadata value type, alignment, zero-copy tensor views.

Small files are written with lamina's writer and checked twice: by lamina's reader
and by the ``gguf`` package's reader (the oracle), so a mistake shared by lamina's
reader and writer shows up as a disagreement.
"""

from __future__ import annotations

import mmap
import struct

import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType

import lamina.gguf as lg
from lamina.gguf import MetadataValue, NewTensor, ValueType, read, write

V = ValueType

# One value of every scalar type at its extremes, and an array of every element type.
SCALARS = {
    "t.u8": MetadataValue(255, V.UINT8),
    "t.i8": MetadataValue(-128, V.INT8),
    "t.u16": MetadataValue(65535, V.UINT16),
    "t.i16": MetadataValue(-32768, V.INT16),
    "t.u32": MetadataValue(2**32 - 1, V.UINT32),
    "t.i32": MetadataValue(-(2**31), V.INT32),
    "t.u64": MetadataValue(2**64 - 1, V.UINT64),
    "t.i64": MetadataValue(-(2**63), V.INT64),
    "t.f32": MetadataValue(float(np.float32(3.14159)), V.FLOAT32),
    "t.f64": MetadataValue(2.718281828459045, V.FLOAT64),
    "t.true": MetadataValue(True, V.BOOL),
    "t.false": MetadataValue(False, V.BOOL),
    "t.str": MetadataValue("héllo ✓ <|im_end|>", V.STRING),
    "t.empty_str": MetadataValue("", V.STRING),
}
ARRAYS = {
    "a.u8": (V.UINT8, [0, 1, 255]),
    "a.i8": (V.INT8, [-128, 0, 127]),
    "a.u16": (V.UINT16, [0, 65535]),
    "a.i16": (V.INT16, [-32768, 32767]),
    "a.u32": (V.UINT32, [0, 2**32 - 1]),
    "a.i32": (V.INT32, [-(2**31), 2**31 - 1, 3]),
    "a.u64": (V.UINT64, [0, 2**64 - 1]),
    "a.i64": (V.INT64, [-(2**63), 2**63 - 1]),
    "a.f32": (V.FLOAT32, [0.5, -1.25, float("inf")]),
    "a.f64": (V.FLOAT64, [1e300, -1e-300]),
    "a.bool": (V.BOOL, [True, False, True]),
    "a.str": (V.STRING, ["a", "", "Ġthe", "▁世界", "\n"]),
    "a.empty": (V.INT32, []),
    "a.empty_str": (V.STRING, []),
}


def _metadata():
    md = dict(SCALARS)
    for key, (etype, values) in ARRAYS.items():
        md[key] = MetadataValue(values, V.ARRAY, etype)
    return md


def _tensors():
    q4 = np.arange(2 * 18, dtype=np.uint8)  # two Q4_0 blocks, as raw bytes
    return [
        NewTensor("f32", (4, 3), "F32", np.arange(12, dtype="<f4")),
        NewTensor("f16", (5,), "F16", np.array([1, -2, 0.5, 65504, 0], dtype="<f2")),
        NewTensor("q4", (32, 2), "Q4_0", q4),
        NewTensor("i32", (3,), "I32", np.array([-1, 0, 7], dtype="<i4")),
    ]


@pytest.fixture(scope="module", params=[2, 3])
def every_type(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("types") / f"every-type-v{request.param}.gguf"
    write(path, _metadata(), _tensors(), version=request.param)
    return path, request.param


def test_versions_and_counts(every_type):
    path, version = every_type
    f = read(path)
    assert f.version == version
    assert list(f.metadata) == list(_metadata())
    assert list(f.tensors) == ["f32", "f16", "q4", "i32"]


def test_every_scalar_type(every_type):
    f = read(every_type[0])
    for key, expected in SCALARS.items():
        field = f.fields[key]
        assert field.type == expected.type and field.element_type is None, key
        assert f.metadata[key] == expected.value and type(f.metadata[key]) is type(expected.value), key


def test_every_array_type(every_type):
    f = read(every_type[0])
    for key, (etype, values) in ARRAYS.items():
        field = f.fields[key]
        assert field.type == V.ARRAY and field.element_type == etype, key
        if etype == V.STRING:
            assert f.metadata[key] == values, key
        else:
            assert isinstance(f.metadata[key], np.ndarray), key
            assert f.metadata[key].tolist() == values, key


def test_oracle_reads_the_same_values(every_type):
    f = read(every_type[0])
    oracle = GGUFReader(every_type[0])
    assert oracle.fields["GGUF.version"].contents() == every_type[1]
    for key, field in f.fields.items():
        theirs = oracle.fields[key]
        assert theirs.types[0] == GGUFValueType(field.type), key
        assert theirs.offset == f.field_offsets[key], key
        if field.element_type is not None and len(field.value):
            assert theirs.types[-1] == GGUFValueType(field.element_type), key
        mine = field.value.tolist() if isinstance(field.value, np.ndarray) else field.value
        assert theirs.contents() == mine, key


def test_tensor_index_and_values(every_type):
    f = read(every_type[0])
    t = f.tensors["f32"]
    assert (t.shape, t.type, t.n_elements, t.n_bytes) == ((4, 3), "F32", 12, 48)
    assert t.data.shape == (3, 4) and t.data.dtype == np.float32  # NumPy order is ggml's reversed
    assert t.data.tolist() == np.arange(12, dtype=np.float32).reshape(3, 4).tolist()
    assert f.tensors["f16"].data.dtype == np.float16 and f.tensors["f16"].data.tolist() == [1, -2, 0.5, 65504, 0]
    q4 = f.tensors["q4"]
    assert q4.type == "Q4_0" and q4.data.dtype == np.uint8 and q4.data.shape == (2, 18)
    assert q4.data.tobytes() == bytes(range(36))
    assert f.tensors["i32"].data.tolist() == [-1, 0, 7]
    offsets = [t.offset for t in f.tensors.values()]
    assert offsets == [0, 64, 96, 160] and all(o % f.alignment == 0 for o in offsets)


def _owner(array: np.ndarray):
    """What finally holds a view's memory: follow ``.base`` (and a memoryview's ``.obj``) to the end."""
    while True:
        if isinstance(array, np.ndarray) and array.base is not None:
            array = array.base
        elif isinstance(array, memoryview):
            array = array.obj
        else:
            return array


def test_tensor_data_are_zero_copy_views_of_the_map(every_type):
    f = read(every_type[0])
    for t in f.tensors.values():
        assert isinstance(_owner(t.data), mmap.mmap), t.name
        assert not t.data.flags.writeable and not t.data.flags.owndata
        assert np.shares_memory(t.data, f._buffer)
        start = f.data_offset + t.offset
        assert t.data.ctypes.data == f._buffer.ctypes.data + start


def test_real_model_tensors_are_views(model_paths):
    f = read(model_paths["smollm2"])
    embd = f.tensors["token_embd.weight"]
    assert embd.shape == (576, 49152) and embd.type == "Q8_0"
    assert embd.data.shape == (49152, 576 // 32 * 34) and embd.data.dtype == np.uint8
    assert isinstance(_owner(embd.data), mmap.mmap)
    assert all(np.shares_memory(t.data, f._buffer) for t in f.tensors.values() if t.n_bytes)


@pytest.mark.parametrize("alignment", [1, 8, 64, 4096])
def test_general_alignment_is_honoured(tmp_path, alignment):
    path = tmp_path / "aligned.gguf"
    md = {"general.alignment": MetadataValue(alignment, V.UINT32), "general.name": "x" * 5}
    tensors = [NewTensor("a", (3,), "F32", np.ones(3, "<f4")), NewTensor("b", (1,), "F32", np.full(1, 2, "<f4"))]
    write(path, md, tensors)
    f = read(path)
    assert f.alignment == alignment and f.data_offset % alignment == 0
    assert f.tensors["b"].offset == -(-12 // alignment) * alignment
    assert f.tensors["b"].data.tolist() == [2.0]
    oracle = GGUFReader(path)
    assert [t.data_offset for t in oracle.tensors] == [f.data_offset + t.offset for t in f.tensors.values()]


def test_default_alignment_is_32(tmp_path):
    path = tmp_path / "plain.gguf"
    write(path, {"general.name": "abc"}, [NewTensor("a", (1,), "F32", np.ones(1, "<f4"))])
    f = read(path)
    assert f.alignment == 32 and f.data_offset % 32 == 0 and f.file_size == f.data_offset + 32


def test_non_utf8_string_value_survives_a_round_trip(tmp_path):
    # Values are meant to be UTF-8, but real vocabularies hold byte pieces; they must be kept exactly.
    raw = b"\xff\xfepiece"
    kv = struct.pack("<Q", 4) + b"t.sv" + struct.pack("<IQ", 8, len(raw)) + raw
    path = tmp_path / "bytes.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv)
    f = read(path)
    assert f.metadata["t.sv"].encode("utf-8", "surrogateescape") == raw
    write(tmp_path / "copy.gguf", f.typed_metadata(), [])
    original = path.read_bytes()
    # llama.cpp's writer pads the header to the alignment even without tensors (gguf-py's does not).
    assert (tmp_path / "copy.gguf").read_bytes() == original + bytes(-len(original) % 32)


def test_close_and_context_manager(every_type):
    with read(every_type[0]) as f:
        assert f.tensors
        kept = f.tensors["f32"].data
    assert f.tensors == {}
    assert kept.tolist()[0] == [0, 1, 2, 3]  # a view kept alive keeps its map alive


def test_public_api():
    for name in ["read", "write", "write_atomically", "tensor_from_array", "ggml_type", "GGUFFile", "GGUFError",
                 "TensorInfo", "MetadataValue", "NewTensor", "GGML_TYPES", "ValueType", "file_type_name"]:
        assert hasattr(lg, name), name
    assert issubclass(lg.GGUFError, ValueError)

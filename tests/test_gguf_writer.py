"""lamina.gguf.write: byte-identical round trips, atomic replacement, refusal of inconsistent input."""

from __future__ import annotations

import errno
import filecmp
import os

import numpy as np
import pytest

import lamina.gguf.writer as writer_module
from lamina.gguf import GGUFError, MetadataValue, NewTensor, ValueType, read, tensor_from_array, write, write_atomically


def test_real_model_round_trip_is_byte_identical(model_path, tmp_path):
    original = read(model_path)
    copy = tmp_path / "copy.gguf"
    write(copy, original.typed_metadata(), original.tensors.values(), version=original.version)
    assert copy.stat().st_size == model_path.stat().st_size
    assert filecmp.cmp(copy, model_path, shallow=False)


def test_the_readers_own_objects_write_back_byte_for_byte(model_path, tmp_path):
    """``write(path, f)`` and ``write(path, f.metadata, f.tensors)``, as a user would first try them."""
    original = read(model_path)
    whole, parts = tmp_path / "whole.gguf", tmp_path / "parts.gguf"
    write(whole, original)
    write(parts, original.metadata, original.tensors)
    assert filecmp.cmp(whole, model_path, shallow=False) and filecmp.cmp(parts, model_path, shallow=False)
    edited = original.metadata
    edited["general.name"] = "renamed"
    edited["tokenizer.ggml.token_type"] = list(edited["tokenizer.ggml.token_type"])  # a list now, not an array
    write(tmp_path / "edited.gguf", edited, original.tensors)
    again = read(tmp_path / "edited.gguf")
    assert again.metadata["general.name"] == "renamed"
    assert {k: (f.type, f.element_type) for k, f in again.fields.items()} == \
        {k: (f.type, f.element_type) for k, f in original.fields.items()}  # each key kept its own type
    with pytest.raises(GGUFError, match="takes the tensors from f"):
        write(tmp_path / "x.gguf", original, [])


def test_tensor_order_and_padding_follow_llama_cpp(tmp_path):
    path = tmp_path / "t.gguf"
    tensors = [NewTensor("b", (3,), "F32", np.array([1, 2, 3], "<f4")),
               NewTensor("a", (32,), "Q8_0", np.arange(34, dtype=np.uint8))]
    write(path, {"general.architecture": "test"}, tensors)
    raw = path.read_bytes()
    f = read(path)
    assert list(f.tensors) == ["b", "a"]  # the order given, not sorted
    index_end = 24 + (8 + 20 + 4 + 8 + 4) + 2 * (8 + 1 + 4 + 8 + 4 + 8)  # header, one string pair, two records
    assert f.data_offset == 160 and raw[index_end:160] == bytes(160 - index_end)  # zero padding to 32
    assert raw[f.data_offset + 12 : f.data_offset + 32] == bytes(20)  # zero padding after "b"
    assert len(raw) == f.data_offset + 32 + 64  # the last tensor is padded too, as gguf_write_out does


def test_tensor_from_array_plain_types(tmp_path):
    values = np.array([[0.1, -2.5, 3.0], [4.0, 1e-3, -7.0]], dtype=np.float64)
    path = tmp_path / "f.gguf"
    write(path, {}, [tensor_from_array("f32", values), tensor_from_array("f16", values, "F16"),
                     tensor_from_array("i32", np.array([1, -2, 3]), "I32")])
    f = read(path)
    assert f.tensors["f32"].shape == (3, 2) and f.tensors["f32"].data.tolist() == values.astype(np.float32).tolist()
    assert f.tensors["f16"].data.tolist() == values.astype(np.float16).tolist()
    assert f.tensors["i32"].data.tolist() == [1, -2, 3]


def test_plain_python_metadata_types(tmp_path):
    path = tmp_path / "m.gguf"
    write(path, {"a.int": 5, "a.neg": -5, "a.big": 2**40, "a.float": 0.5, "a.bool": True, "a.str": "x",
                 "a.list": [1, 2], "a.strs": ["p", "q"], "a.floats": [1.5, 2], "a.np": np.arange(3, dtype=np.int16)}, [])
    f = read(path)
    types = {k: (v.type.name, v.element_type.name if v.element_type is not None else None) for k, v in f.fields.items()}
    assert types == {"a.int": ("UINT32", None), "a.neg": ("INT32", None), "a.big": ("UINT64", None),
                     "a.float": ("FLOAT32", None), "a.bool": ("BOOL", None), "a.str": ("STRING", None),
                     "a.list": ("ARRAY", "UINT32"), "a.strs": ("ARRAY", "STRING"), "a.floats": ("ARRAY", "FLOAT32"),
                     "a.np": ("ARRAY", "INT16")}


# -- atomicity -------------------------------------------------------------------------------------

def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


def test_failure_mid_write_leaves_nothing(tmp_path):
    dest = tmp_path / "out.gguf"

    def emit(f):
        f.write(b"GGUF" + bytes(1000))
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(str(dest), emit)
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_interrupt_mid_write_leaves_existing_destination_untouched(tmp_path):
    dest = tmp_path / "out.gguf"
    dest.write_bytes(b"previous contents")

    def emit(f):
        f.write(b"half a file")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(str(dest), emit)
    assert dest.read_bytes() == b"previous contents" and _leftovers(tmp_path) == []


def test_fsync_failure_during_write_keeps_old_file(tmp_path, monkeypatch):
    dest = tmp_path / "model.gguf"
    write(dest, {"general.name": "old"}, [])
    before = dest.read_bytes()

    def failing_fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(writer_module.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        write(dest, {"general.name": "new"}, [NewTensor("w", (4,), "F32", np.zeros(4, "<f4"))])
    assert dest.read_bytes() == before and _leftovers(tmp_path) == []


def test_failure_in_the_middle_of_tensor_data(tmp_path, monkeypatch):
    dest = tmp_path / "model.gguf"
    real_write = writer_module.os.fdopen
    calls = []

    class FailingFile:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            calls.append(len(data))
            if len(calls) == 3:  # header, first tensor, then the disk fills up
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    monkeypatch.setattr(writer_module.os, "fdopen", lambda fd, mode: FailingFile(real_write(fd, mode)))
    tensors = [NewTensor(f"w{i}", (8,), "F32", np.full(8, i, "<f4")) for i in range(3)]
    with pytest.raises(OSError, match="No space left"):
        write(dest, {"general.name": "x"}, tensors)
    assert len(calls) == 3
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_overwriting_the_file_being_read(tmp_path):
    # Renaming over a mapped file is safe: the old views keep the old inode.
    path = tmp_path / "m.gguf"
    write(path, {"general.name": "one"}, [NewTensor("w", (4,), "F32", np.arange(4, dtype="<f4"))])
    f = read(path)
    write(path, f.typed_metadata(), f.tensors.values())
    assert f.tensors["w"].data.tolist() == [0, 1, 2, 3] and read(path).tensors["w"].data.tolist() == [0, 1, 2, 3]


# -- refusals --------------------------------------------------------------------------------------

BAD_TENSORS = [
    (NewTensor("w", (4,), "F32", np.zeros(3, "<f4")), "12 bytes of data given, but shape [4] of type F32 needs 16"),
    (NewTensor("w", (4,), "F32", np.zeros(4, "<f8")), "32 bytes of data given"),
    (NewTensor("w", (32, 2), "Q4_0", np.zeros(18, np.uint8)), "needs 36"),
    (NewTensor("w", (33,), "Q4_0", np.zeros(18, np.uint8)), "row length 33 is not a multiple of Q4_0's block size 32"),
    (NewTensor("w", (), "F32", np.zeros(1, "<f4")), "0 dimensions"),
    (NewTensor("w", (1, 1, 1, 1, 1), "F32", np.zeros(1, "<f4")), "5 dimensions"),
    (NewTensor("w", (4, -1), "F32", np.zeros(0, "<f4")), "negative dimension"),
    (NewTensor("w", (4,), "Q4_3", np.zeros(4, "<f4")), "unknown ggml type name 'Q4_3'"),
    (NewTensor("x" * 64, (4,), "F32", np.zeros(4, "<f4")), "longer than 63 bytes"),
]


@pytest.mark.parametrize("bad,message", BAD_TENSORS, ids=[m for _, m in BAD_TENSORS])
def test_refuses_inconsistent_tensors(tmp_path, bad, message):
    dest = tmp_path / "out.gguf"
    dest.write_bytes(b"keep me")
    good = NewTensor("ok", (2,), "F32", np.zeros(2, "<f4"))
    with pytest.raises(GGUFError, match=message.replace("[", r"\[").replace("]", r"\]")) as caught:
        write(dest, {}, [good, bad])
    assert str(dest) in str(caught.value)
    assert dest.read_bytes() == b"keep me" and _leftovers(tmp_path) == []


def test_refuses_duplicate_tensor_names(tmp_path):
    t = NewTensor("w", (2,), "F32", np.zeros(2, "<f4"))
    with pytest.raises(GGUFError, match="duplicate tensor name 'w'"):
        write(tmp_path / "out.gguf", {}, [t, t])
    assert list(tmp_path.iterdir()) == []


BAD_METADATA = [
    ({"a": MetadataValue(300, ValueType.UINT8)}, "outside \\[0, 255\\]"),
    ({"a": MetadataValue(-1, ValueType.UINT32)}, "outside"),
    ({"a": MetadataValue(2.5, ValueType.INT32)}, "not all integers"),
    ({"a": MetadataValue([1, 2**40], ValueType.ARRAY, ValueType.INT32)}, "outside"),
    ({"a": MetadataValue(np.array([1.5]), ValueType.ARRAY, ValueType.UINT16)}, "not integers"),
    ({"a": MetadataValue(5, ValueType.STRING)}, "expected a string"),
    ({"a": MetadataValue(["x", 3], ValueType.ARRAY, ValueType.STRING)}, "expected a string"),
    ({"a": MetadataValue([[1]], ValueType.ARRAY, ValueType.ARRAY)}, "nested"),
    ({"a": MetadataValue("yes", ValueType.BOOL)}, "not booleans"),
    ({"a": MetadataValue("1.0", ValueType.FLOAT32)}, "not numbers"),
    ({"a": 1e300}, "finite values too large for FLOAT32"),
    ({"a": MetadataValue([1.0, 1e39], ValueType.ARRAY, ValueType.FLOAT32)}, "too large"),
    ({"": 1}, "non-empty string"),
    ({"general.alignment": 13}, "power of two"),
    ({"general.alignment": 0}, "power of two"),
    ({"general.alignment": 1 << 30}, "power of two up to"),
    ({"general.alignment": MetadataValue(32, ValueType.UINT64)}, "stored as UINT32"),
]


@pytest.mark.parametrize("metadata,message", BAD_METADATA, ids=[str(i) for i in range(len(BAD_METADATA))])
def test_refuses_metadata_it_cannot_store_faithfully(tmp_path, metadata, message):
    with pytest.raises(GGUFError, match=message):
        write(tmp_path / "out.gguf", metadata, [])
    assert list(tmp_path.iterdir()) == []


def test_refuses_unsupported_version(tmp_path):
    with pytest.raises(GGUFError, match="version 1"):
        write(tmp_path / "out.gguf", {}, [], version=1)


@pytest.mark.parametrize("value, words", [
    ({"b": 1}, "cannot store a value of type dict.*give a bool, int, float, str, list, NumPy array, or a MetadataValue"),
    ([], r"empty list has no element type.*MetadataValue\(\[\], ValueType.ARRAY"),
    ([1, "a"], "a list mixing .*int.*str.* give a MetadataValue with ValueType.ARRAY"),
    (None, "type NoneType"),
])
def test_refuses_values_of_unknown_python_types(tmp_path, value, words):
    with pytest.raises(TypeError, match=words):
        write(tmp_path / "out.gguf", {"a": value}, [])
    assert list(tmp_path.iterdir()) == []


def test_zero_sized_tensor_round_trip(tmp_path):
    path = tmp_path / "z.gguf"
    write(path, {}, [NewTensor("empty", (0, 4), "F32", np.zeros(0, "<f4")), NewTensor("q", (32, 0), "Q4_0", np.zeros(0, np.uint8))])
    f = read(path)
    assert f.tensors["empty"].shape == (0, 4) and f.tensors["q"].data.size == 0
    assert os.path.getsize(path) == f.data_offset

"""Malformed GGUF files (shared/docs/BAD-INPUTS.md items 1-11) are refused with a GGUFError.

Every file here is built byte by byte, independently of lamina's writer, so a bug
shared by the reader and the writer cannot hide. Each rejection must name the file,
the byte offset and the problem, and must not allocate more than a little memory
(the incidents behind these cases were heap overflows and huge allocations driven
by counts and lengths read from the file).
"""

from __future__ import annotations

import struct
import tracemalloc

import pytest

from lamina.gguf import GGUFError, read

HEADER = 24  # magic, version, tensor count, key-value count
MAX_ALLOCATION = 1 << 20  # a rejected file of under 1 KB must not make the reader allocate more than this


# -- a byte-level GGUF builder (little-endian, as in ggml's docs/gguf.md) -------------------------

def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def gstr(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return u64(len(raw)) + raw


def header(n_tensors: int = 0, n_kv: int = 0, version: int = 3, magic: bytes = b"GGUF") -> bytes:
    return magic + u32(version) + u64(n_tensors) + u64(n_kv)


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + u32(vtype) + payload


def kv_u32(key: str, v: int) -> bytes:
    return kv(key, 4, u32(v))


def tensor_info(name: str | bytes, dims, type_id: int = 0, offset: int = 0) -> bytes:
    return gstr(name) + u32(len(dims)) + b"".join(struct.pack("<q", d) if d < 0 else u64(d) for d in dims) \
        + u32(type_id) + u64(offset)


def gguf(kvs=(), tensors=(), data: bytes = b"", alignment: int = 32, n_kv=None, n_tensors=None) -> bytes:
    """A whole file: header, key-value pairs, tensor index, padding, data."""
    body = header(len(tensors) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv)
    body += b"".join(kvs) + b"".join(tensors)
    if tensors:
        body += bytes(-len(body) % alignment)
    return body + data


def data_start(kvs=(), tensors=(), alignment: int = 32) -> int:
    n = HEADER + sum(map(len, kvs)) + sum(map(len, tensors))
    return n + (-n % alignment)


def rejected(tmp_path, content: bytes, offset: int | None, *fragments: str, name: str = "bad.gguf") -> GGUFError:
    """Read ``content`` as a file; it must fail with a GGUFError naming the file, ``offset`` and ``fragments``."""
    path = tmp_path / name
    path.write_bytes(content)
    tracemalloc.start()
    try:
        with pytest.raises(GGUFError) as caught:
            read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = caught.value
    message = str(err)
    assert isinstance(err, ValueError)
    assert str(path) in message, message
    assert err.path == str(path)
    if offset is not None:
        assert err.offset == offset, message
        assert f"byte {offset}" in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert peak < MAX_ALLOCATION, f"rejecting {len(content)} bytes allocated {peak} bytes"
    return err


def loads(tmp_path, content: bytes, name: str = "good.gguf"):
    path = tmp_path / name
    path.write_bytes(content)
    return read(path)


# -- item 1: empty, tiny, wrong magic ---------------------------------------------------------------

def test_empty_file(tmp_path):
    rejected(tmp_path, b"", 0, "empty")


@pytest.mark.parametrize("n", [1, 2, 3])
def test_one_to_three_bytes(tmp_path, n):
    rejected(tmp_path, b"GGUF"[:n], 0, "not a GGUF file", "magic")


@pytest.mark.parametrize("magic", [b"GGML", b"FUGG", b"\x00\x00\x00\x00", b"PK\x03\x04"])
def test_wrong_magic(tmp_path, magic):
    rejected(tmp_path, header(magic=magic) + bytes(20), 0, "not a GGUF file", repr(magic))


def test_magic_only(tmp_path):
    rejected(tmp_path, b"GGUF", 4, "version", "truncated")


def test_a_directory_is_not_a_gguf_file(tmp_path):
    with pytest.raises(GGUFError, match="not a regular file"):
        read(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(GGUFError, match="cannot open") as caught:
        read(tmp_path / "nope.gguf")
    assert str(tmp_path / "nope.gguf") in str(caught.value)


# -- item 2: versions ------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [0, 1, 4, 0xFFFFFFFF])
def test_unsupported_version(tmp_path, version):
    rejected(tmp_path, header(version=version) + bytes(20), 4, f"unsupported GGUF version {version}")


@pytest.mark.parametrize("version", [2, 3])
def test_byte_swapped_version_says_big_endian(tmp_path, version):
    content = b"GGUF" + struct.pack(">I", version) + struct.pack(">Q", 0) * 2 + bytes(20)
    rejected(tmp_path, content, 4, "big-endian")


@pytest.mark.parametrize("version", [2, 3])
def test_supported_versions_load(tmp_path, version):
    content = b"GGUF" + u32(version) + u64(0) + u64(1) + kv_u32("general.x", 7)
    f = loads(tmp_path, content)
    assert f.version == version and f.metadata == {"general.x": 7} and f.tensors == {}


# -- item 3: absurd counts in a 44-byte file -------------------------------------------------------

ABSURD_COUNTS = [2**64 - 1, 2**63, 10**8]


@pytest.mark.parametrize("count", ABSURD_COUNTS)
def test_absurd_tensor_count(tmp_path, count):
    content = header(n_tensors=count) + bytes(20)
    assert len(content) == 44
    rejected(tmp_path, content, 8, f"tensor count {count}", "20 bytes remain")


@pytest.mark.parametrize("count", ABSURD_COUNTS)
def test_absurd_key_value_count(tmp_path, count):
    content = header(n_kv=count) + bytes(20)
    assert len(content) == 44
    rejected(tmp_path, content, 16, f"key-value count {count}", "20 bytes remain")


def test_counts_that_fit_alone_but_not_together(tmp_path):
    # 1 pair (>= 14 bytes) and 1 tensor record (>= 33 bytes) cannot share 40 bytes.
    content = header(n_tensors=1, n_kv=1) + bytes(40)
    rejected(tmp_path, content, 8, "cannot fit")


def test_more_pairs_announced_than_present(tmp_path):
    content = header(n_kv=2) + kv_u32("a.b", 1) + u64(5) + b"ab"
    rejected(tmp_path, content, HEADER + len(kv_u32("a.b", 1)), "key of key-value pair 1 claims 5 bytes",
             "only 2 remain")


# -- item 4: keys ----------------------------------------------------------------------------------

def test_key_length_all_ones(tmp_path):
    content = header(n_kv=1) + u64(2**64 - 1) + bytes(20)
    rejected(tmp_path, content, HEADER, "key of key-value pair 0", f"claims {2**64 - 1} bytes")


def test_key_length_past_the_end(tmp_path):
    content = header(n_kv=1) + u64(100) + b"general.name" + bytes(8)
    rejected(tmp_path, content, HEADER, "claims 100 bytes", "only 20 remain")


def test_empty_key(tmp_path):
    rejected(tmp_path, gguf([kv_u32("", 1)]), HEADER, "empty key")


def test_duplicate_key(tmp_path):
    first = kv_u32("llama.block_count", 1)
    rejected(tmp_path, gguf([first, kv_u32("llama.block_count", 2)]), HEADER + len(first),
             "duplicate key 'llama.block_count'")


def test_key_not_utf8(tmp_path):
    rejected(tmp_path, gguf([kv_u32(b"general.\xff\xfe", 1)]), HEADER, "not valid UTF-8")


# -- item 5: value types and arrays ----------------------------------------------------------------

@pytest.mark.parametrize("vtype", [13, 0x7FFFFFFF, 0xFFFFFFFF])
def test_unknown_value_type(tmp_path, vtype):
    content = gguf([kv("general.x", vtype, u32(0))])
    rejected(tmp_path, content, HEADER + len(gstr("general.x")), f"unknown value type {vtype}")


def test_array_of_arrays(tmp_path):
    content = gguf([kv("general.x", 9, u32(9) + u64(1) + u32(4) + u64(1) + u32(5))])
    rejected(tmp_path, content, HEADER + len(gstr("general.x")) + 4, "array of arrays")


@pytest.mark.parametrize("etype,size", [(0, 1), (5, 4), (10, 8), (12, 8), (7, 1)])
def test_array_larger_than_the_bytes_left(tmp_path, etype, size):
    count = 1000  # 1000 elements announced, 16 bytes present
    content = gguf([kv("general.x", 9, u32(etype) + u64(count) + bytes(16))])
    rejected(tmp_path, content, HEADER + len(gstr("general.x")) + 8, f"claims {count} elements of {size} bytes")


@pytest.mark.parametrize("count", [2**30, 2**64 - 1, 2**61])
def test_huge_string_array(tmp_path, count):
    content = gguf([kv("tokenizer.ggml.tokens", 9, u32(8) + u64(count) + gstr("a") + gstr("b"))])
    rejected(tmp_path, content, HEADER + len(gstr("tokenizer.ggml.tokens")) + 8, f"claims {count} strings")


def test_string_inside_array_cut_off(tmp_path):
    content = gguf([kv("tokenizer.ggml.tokens", 9, u32(8) + u64(3) + gstr("a") + u64(50) + b"bc" + bytes(6))])
    at = HEADER + len(gstr("tokenizer.ggml.tokens")) + 4 + 4 + 8 + len(gstr("a"))
    rejected(tmp_path, content, at, "string 1 of 'tokenizer.ggml.tokens' claims 50 bytes", "only 8 remain")


def test_last_string_of_array_cut_off(tmp_path):
    content = gguf([kv("tokenizer.ggml.tokens", 9, u32(8) + u64(3) + gstr("a") + gstr("b") + bytes(7))])
    at = HEADER + len(gstr("tokenizer.ggml.tokens")) + 4 + 4 + 8 + 2 * len(gstr("a"))
    rejected(tmp_path, content, at, "string 2 of 'tokenizer.ggml.tokens' is cut off by the end of the file")


def test_string_value_longer_than_file(tmp_path):
    content = gguf([kv("general.name", 8, u64(2**63) + b"x" * 8)])
    rejected(tmp_path, content, HEADER + len(gstr("general.name")) + 4, f"claims {2**63} bytes")


@pytest.mark.parametrize("vtype,size", [(0, 1), (2, 2), (4, 4), (10, 8), (12, 8)])
def test_scalar_cut_off_by_end_of_file(tmp_path, vtype, size):
    content = header(n_kv=1) + kv("general.x", vtype, bytes(size - 1))
    rejected(tmp_path, content, HEADER + len(gstr("general.x")) + 4, f"needs {size} bytes", "truncated")


# -- item 6: general.alignment ---------------------------------------------------------------------

@pytest.mark.parametrize("value,vtype_name", [
    (kv("general.alignment", 10, u64(32)), "UINT64"),
    (kv("general.alignment", 5, struct.pack("<i", 32)), "INT32"),
    (kv("general.alignment", 8, gstr("32")), "STRING"),
    (kv("general.alignment", 9, u32(4) + u64(1) + u32(32)), "ARRAY of UINT32"),
])
def test_alignment_of_the_wrong_type(tmp_path, value, vtype_name):
    rejected(tmp_path, gguf([value]), HEADER, "general.alignment must be a UINT32", vtype_name)


@pytest.mark.parametrize("alignment,why", [(0, "not a power of two"), (13, "not a power of two"),
                                           (2**31, "absurdly large"), (2**32 - 1, "not a power of two")])
def test_bad_alignment_value(tmp_path, alignment, why):
    other = kv_u32("general.x", 1)
    rejected(tmp_path, gguf([other, kv_u32("general.alignment", alignment)]), HEADER + len(other),
             f"general.alignment is {alignment}", why)


def test_alignment_64_is_honoured(tmp_path):
    kvs = [kv_u32("general.alignment", 64)]
    tensors = [tensor_info("a", [4]), tensor_info("b", [2], offset=64)]
    data = struct.pack("<4f", 1, 2, 3, 4) + bytes(48) + struct.pack("<2f", 5, 6)
    f = loads(tmp_path, gguf(kvs, tensors, data, alignment=64))
    assert f.alignment == 64 and f.data_offset % 64 == 0 and f.data_offset == data_start(kvs, tensors, 64)
    assert f.tensors["a"].data.tolist() == [1, 2, 3, 4] and f.tensors["b"].data.tolist() == [5, 6]


# -- item 7: tensor names --------------------------------------------------------------------------

def test_tensor_name_of_64_bytes(tmp_path):
    tensors = [tensor_info("t" * 64, [1])]
    rejected(tmp_path, gguf([], tensors, bytes(32)), HEADER, "64 bytes, longer than ggml's limit of 63")


def test_tensor_name_of_63_bytes_loads(tmp_path):
    f = loads(tmp_path, gguf([], [tensor_info("t" * 63, [1])], bytes(32)))
    assert list(f.tensors) == ["t" * 63]


def test_duplicate_tensor_name(tmp_path):
    first = tensor_info("w", [8])
    rejected(tmp_path, gguf([], [first, tensor_info("w", [8], offset=32)], bytes(64)), HEADER + len(first),
             "duplicate tensor name 'w'")


def test_tensor_name_not_utf8(tmp_path):
    rejected(tmp_path, gguf([], [tensor_info(b"w\xc3", [8])], bytes(32)), HEADER, "not valid UTF-8")


# -- item 8: dimensions ----------------------------------------------------------------------------

@pytest.mark.parametrize("dims", [[], [1, 1, 1, 1, 1], [1] * 64])
def test_dimension_count_out_of_range(tmp_path, dims):
    content = gguf([], [tensor_info("w", dims)], bytes(32))
    rejected(tmp_path, content, HEADER + len(gstr("w")), f"has {len(dims)} dimensions (must be 1 to 4)")


def test_dimension_count_all_ones(tmp_path):
    content = gguf([], [gstr("w") + u32(2**32 - 1) + bytes(24)], bytes(32))
    rejected(tmp_path, content, HEADER + len(gstr("w")), f"has {2**32 - 1} dimensions")


@pytest.mark.parametrize("dims,bad", [([-1], 0), ([4, -5], 1), ([4, 2**64 - 1], 1)])
def test_negative_dimension(tmp_path, dims, bad):
    dims = [d - 2**64 if d >= 2**63 else d for d in dims]
    content = gguf([], [tensor_info("w", dims)], bytes(64))
    rejected(tmp_path, content, HEADER + len(gstr("w")) + 4 + 8 * bad, f"dimension {bad} is negative")


@pytest.mark.parametrize("dims", [[2**62, 4], [2**32, 2**32], [2**31, 2**31, 2**31], [2**62, 2**62, 0],
                                  [0, 2**62, 2**62], [32, 0, 2**62, 2**62]])
def test_overflowing_dimensions(tmp_path, dims):
    content = gguf([], [tensor_info("w", dims)], bytes(64))
    rejected(tmp_path, content, HEADER + len(gstr("w")), "overflows")


@pytest.mark.parametrize("dims,type_id", [([0], 0), ([32, 0], 2), ([0, 7], 0), ([256, 3, 0, 5], 12)])
def test_zero_sized_dimension_loads(tmp_path, dims, type_id):
    tensors = [tensor_info("empty", dims, type_id), tensor_info("after", [2], 0, 0)]
    f = loads(tmp_path, gguf([], tensors, struct.pack("<2f", 1.5, -2)))
    assert f.tensors["empty"].shape == tuple(dims)
    assert f.tensors["empty"].data.size == 0 and f.tensors["empty"].n_bytes == 0
    assert f.tensors["after"].data.tolist() == [1.5, -2]


def test_byte_size_overflow_for_a_quantized_type(tmp_path):
    # Q8_K stores 256 values in 292 bytes: 0.95 * 2^63 elements fit in int64, their bytes do not.
    n = (int(0.95 * 2**63) // 256) * 256
    content = gguf([], [tensor_info("w", [n], 15)], bytes(64))
    rejected(tmp_path, content, HEADER + len(gstr("w")), "Q8_K", "byte size that overflows")


def test_tensor_record_cut_off(tmp_path):
    name = "w" * 20
    record = tensor_info(name, [8, 8])
    content = header(n_tensors=1) + record[:-10]  # the type field is cut after 2 of its 4 bytes
    rejected(tmp_path, content, HEADER + len(gstr(name)) + 4 + 16, f"type of tensor {name!r} needs 4 bytes",
             "only 2 remain")


# -- item 9: tensor types --------------------------------------------------------------------------

@pytest.mark.parametrize("type_id", [4, 5, 31, 43, 99, 2**32 - 1])
def test_unknown_ggml_type(tmp_path, type_id):
    content = gguf([], [tensor_info("w", [32], type_id)], bytes(64))
    rejected(tmp_path, content, HEADER + len(gstr("w")) + 4 + 8, f"unknown ggml type {type_id}")


@pytest.mark.parametrize("row,type_id,name", [(33, 2, "Q4_0"), (100, 12, "Q4_K"), (31, 8, "Q8_0")])
def test_row_not_a_multiple_of_the_block_size(tmp_path, row, type_id, name):
    content = gguf([], [tensor_info("w", [row, 2], type_id)], bytes(1024))
    rejected(tmp_path, content, HEADER + len(gstr("w")), f"row length {row}", f"{name}'s block size")


# -- item 10: tensor offsets and data --------------------------------------------------------------

def test_offset_not_aligned(tmp_path):
    first = tensor_info("a", [4])
    content = gguf([], [first, tensor_info("b", [4], offset=17)], bytes(64))
    rejected(tmp_path, content, HEADER + len(first), "offset 17", "not aligned", "expected 32")


def test_offset_all_ones(tmp_path):
    content = gguf([], [tensor_info("a", [4], offset=2**64 - 1)], bytes(32))
    rejected(tmp_path, content, HEADER, f"offset {2**64 - 1}")


def test_offset_overlapping_the_previous_tensor(tmp_path):
    first = tensor_info("a", [16])
    content = gguf([], [first, tensor_info("b", [4], offset=32)], bytes(128))
    rejected(tmp_path, content, HEADER + len(first), "offset 32", "not where the previous tensor ends")


def test_data_past_the_end_of_the_file(tmp_path):
    content = gguf([], [tensor_info("w", [1024])], bytes(64))
    err = rejected(tmp_path, content, HEADER, "runs past the end of the file")
    assert f"{4096 - 64} bytes short" in str(err)


def test_data_one_byte_short(tmp_path):
    content = gguf([], [tensor_info("w", [32], 2)], bytes(17))  # one Q4_0 block is 18 bytes
    rejected(tmp_path, content, HEADER, "1 bytes short")


def test_data_section_start_past_the_end(tmp_path):
    record = tensor_info("w", [0])
    content = header(n_tensors=1) + record  # the padding to 32 is missing
    assert len(content) % 32
    rejected(tmp_path, content, None, "data section would start")


def test_exact_data_loads(tmp_path):
    f = loads(tmp_path, gguf([], [tensor_info("w", [32], 2)], bytes(range(18))))
    assert f.tensors["w"].type == "Q4_0" and f.tensors["w"].data.tobytes() == bytes(range(18))


# -- item 11: metadata of the wrong type for what reads it (the typed getters) ---------------------

@pytest.fixture
def typed_file(tmp_path):
    kvs = [kv_u32("llama.context_length", 2048),
           kv("llama.block_count", 8, gstr("thirty")),
           kv("tokenizer.ggml.scores", 9, u32(5) + u64(2) + u32(1) + u32(2)),
           kv("general.name", 8, gstr("tiny")),
           kv("tokenizer.ggml.add_bos_token", 7, b"\x01"),
           kv("llama.rope.freq_base", 6, struct.pack("<f", 10000.0))]
    return loads(tmp_path, gguf(kvs)), {key: HEADER + sum(map(len, kvs[:i]))
                                        for i, key in enumerate(["llama.context_length", "llama.block_count",
                                                                 "tokenizer.ggml.scores", "general.name"])}


def test_string_where_a_count_is_expected(typed_file):
    f, at = typed_file
    for getter in (f.get_int, f.require_int):
        with pytest.raises(GGUFError) as caught:
            getter("llama.block_count")
        message = str(caught.value)
        assert f.path in message and f"byte {at['llama.block_count']}" in message
        assert "'llama.block_count' should be an integer but is STRING" in message
    with pytest.raises(GGUFError, match="should be an integer"):
        f.get_int("llama.block_count", 12)  # a default is for a missing key, not a wrong one


def test_scores_stored_as_integers(typed_file):
    f, at = typed_file
    with pytest.raises(GGUFError, match=r"'tokenizer.ggml.scores' should be an array of floats but is ARRAY of INT32"):
        f.get_array("tokenizer.ggml.scores", element="float")
    assert f.get_array("tokenizer.ggml.scores", element="int").tolist() == [1, 2]
    assert f.get_array("tokenizer.ggml.scores", element="number").tolist() == [1, 2]


@pytest.mark.parametrize("getter,key,kind", [
    ("get_str", "llama.context_length", "a string"),
    ("get_bool", "general.name", "a bool"),
    ("get_float", "general.name", "a number"),
    ("get_array", "general.name", "an array"),
    ("get_int", "tokenizer.ggml.scores", "an integer"),
    ("get_int", "tokenizer.ggml.add_bos_token", "an integer"),
])
def test_wrong_type_for_each_getter(typed_file, getter, key, kind):
    f, _ = typed_file
    with pytest.raises(GGUFError, match=f"{key!r} should be {kind}") as caught:
        getattr(f, getter)(key)
    assert caught.value.offset is not None


def test_right_types_and_defaults(typed_file):
    f, _ = typed_file
    assert f.get_int("llama.context_length") == 2048 and type(f.get_int("llama.context_length")) is int
    assert f.get_float("llama.context_length") == 2048.0  # integers are accepted as numbers
    assert f.get_float("llama.rope.freq_base") == 10000.0
    assert f.get_str("general.name") == "tiny" and f.require_str("general.name") == "tiny"
    assert f.get_bool("tokenizer.ggml.add_bos_token") is True and f.require_bool("tokenizer.ggml.add_bos_token")
    assert f.get_int("llama.missing", 7) == 7 and f.get_str("general.missing") is None
    assert f.get_array("general.missing", default=[]) == []
    for require in (f.require_int, f.require_str, f.require_float, f.require_bool, f.require_array):
        with pytest.raises(GGUFError, match="required metadata key 'general.missing' is missing"):
            require("general.missing")

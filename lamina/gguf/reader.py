"""Memory-mapped, validating GGUF reader.

Every count and length read from the file is checked against the bytes that are
left before anything is allocated, so a corrupt or hostile file yields a
:class:`GGUFError` naming the file, the byte offset and the problem — never an
``IndexError``, a ``MemoryError`` or a huge allocation (see shared/docs/BAD-INPUTS.md
items 1-12). Tensor data is never read at open time: each tensor's ``data`` is a
zero-copy NumPy view into the map, so opening a model costs only its header.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .constants import (
    DEFAULT_ALIGNMENT,
    FLOAT_TYPES,
    GGUF_MAGIC,
    INTEGER_TYPES,
    KEY_ALIGNMENT,
    MAX_ALIGNMENT,
    MAX_DIMS,
    MAX_TENSOR_NAME,
    SCALAR_DTYPES,
    SUPPORTED_VERSIONS,
    ValueType,
)
from .types import GGML_TYPES, GGMLType

INT64_MAX = (1 << 63) - 1

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I64x4 = [struct.Struct(f"<{n}q") for n in range(MAX_DIMS + 1)]

# Smallest possible size of one record, used to reject absurd counts up front.
_MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, 1-byte key, type tag, 1-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name length, name, n_dims, one dim, type, offset

# NumPy dtypes for the tensor types that have one; everything else is exposed as raw bytes.
_TENSOR_DTYPES = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "F64": np.dtype("<f8"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
}


class GGUFError(ValueError):
    """A GGUF file (or metadata read from one) is malformed.

    ``path`` and ``offset`` say where; the message says what is wrong.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, offset: int | None = None):
        self.path = None if path is None else os.fspath(path)
        self.offset = offset
        where = []
        if self.path is not None:
            where.append(self.path)
        if offset is not None:
            where.append(f"byte {offset}")
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


@dataclass(frozen=True)
class MetadataValue:
    """A metadata value together with its GGUF type tag (and element type for arrays).

    The reader keeps these so that a file can be written back byte for byte;
    the writer accepts them wherever a plain value would be ambiguous.
    """

    value: Any
    type: ValueType
    element_type: ValueType | None = None


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor index.

    ``shape`` is in ggml order (``ne[0]`` first, the row length), as gguf-dump
    prints it. ``offset`` is relative to the start of the data section. ``data`` is
    a view into the file: typed for float and integer types (NumPy shape is the
    reverse of ``shape``), raw block bytes (``uint8``, one row of blocks per last
    axis) for quantized types and BF16.
    """

    name: str
    shape: tuple[int, ...]
    type: str
    offset: int
    data: np.ndarray

    @property
    def ggml_type(self) -> GGMLType:
        from .types import ggml_type

        return ggml_type(self.type)

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def n_bytes(self) -> int:
        return tensor_nbytes(self.shape, self.ggml_type)


def tensor_nbytes(shape: tuple[int, ...], gtype: GGMLType) -> int:
    """Bytes a tensor of ``shape`` (ggml order) and type takes in a file."""
    rows = 1
    for d in shape[1:]:
        rows *= d
    return gtype.row_bytes(shape[0]) * rows if shape else 0


def tensor_data_view(buffer: np.ndarray, start: int, shape: tuple[int, ...], gtype: GGMLType) -> np.ndarray:
    """A NumPy view of a tensor's bytes inside ``buffer`` (uint8), shaped as gguf-py does."""
    nbytes = tensor_nbytes(shape, gtype)
    raw = buffer[start : start + nbytes]
    np_shape = tuple(reversed(shape[1:]))
    dtype = _TENSOR_DTYPES.get(gtype.name)
    if dtype is not None:
        return raw.view(dtype).reshape(np_shape + (shape[0],))
    return raw.reshape(np_shape + (gtype.row_bytes(shape[0]),))


class _Cursor:
    """Bounds-checked little-endian reads from a buffer; errors carry path and offset."""

    __slots__ = ("buf", "pos", "size", "path")

    def __init__(self, buf, size: int, path: str):
        self.buf = buf
        self.pos = 0
        self.size = size
        self.path = path

    def error(self, message: str, offset: int | None = None) -> GGUFError:
        return GGUFError(message, self.path, self.pos if offset is None else offset)

    @property
    def remaining(self) -> int:
        return self.size - self.pos

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.error(f"{what} needs {n} bytes but only {self.size - self.pos} remain (file is truncated or corrupt)")

    def u32(self, what: str) -> int:
        self.need(4, what)
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def raw_string(self, what: str) -> bytes:
        start = self.pos
        n = self.u64(f"length of {what}")
        if n > self.size - self.pos:
            raise self.error(f"{what} claims {n} bytes but only {self.size - self.pos} remain", start)
        s = self.buf[self.pos : self.pos + n]
        self.pos += n
        return s

    def utf8(self, what: str) -> str:
        start = self.pos
        raw = self.raw_string(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.error(f"{what} is not valid UTF-8 ({e.reason} at byte {e.start} of it)", start) from None

    def value_type(self, what: str) -> ValueType:
        start = self.pos
        t = self.u32(f"type of {what}")
        try:
            return ValueType(t)
        except ValueError:
            raise self.error(f"{what} has unknown value type {t} (known: 0-12)", start) from None

    def scalar(self, vtype: ValueType, what: str) -> Any:
        if vtype == ValueType.STRING:
            return _decode_value_string(self.raw_string(what))
        dtype = SCALAR_DTYPES[vtype]
        self.need(dtype.itemsize, what)
        v = np.frombuffer(self.buf, dtype, 1, self.pos)[0]
        self.pos += dtype.itemsize
        if vtype == ValueType.BOOL:
            return bool(v)
        return v.item()

    def array(self, what: str) -> MetadataValue:
        start = self.pos
        etype = self.value_type(f"elements of {what}")
        if etype == ValueType.ARRAY:
            raise self.error(f"{what} is an array of arrays, which GGUF does not allow", start)
        count = self.u64(f"element count of {what}")
        if etype == ValueType.STRING:
            if count > self.remaining // 8:
                raise self.error(
                    f"{what} claims {count} strings but only {self.remaining} bytes remain "
                    f"(each string needs at least 8)", start + 4)
            return MetadataValue(self._string_array(count, what), ValueType.ARRAY, etype)
        dtype = SCALAR_DTYPES[etype]
        if count > self.remaining // dtype.itemsize:
            raise self.error(
                f"{what} claims {count} elements of {dtype.itemsize} bytes but only "
                f"{self.remaining} bytes remain", start + 4)
        arr = np.frombuffer(self.buf, dtype, count, self.pos).copy()
        self.pos += count * dtype.itemsize
        return MetadataValue(arr, ValueType.ARRAY, etype)

    def _string_array(self, count: int, what: str) -> list[str]:
        # The hot path of opening a model: gemma-3's vocabulary is 262,144 strings.
        buf, pos, size, unpack = self.buf, self.pos, self.size, _U64.unpack_from
        out: list[str] = [""] * count
        for i in range(count):
            if pos + 8 > size:
                self.pos = pos
                raise self.error(f"string {i} of {what} is cut off by the end of the file")
            (n,) = unpack(buf, pos)
            pos += 8
            if n > size - pos:
                self.pos = pos - 8
                raise self.error(f"string {i} of {what} claims {n} bytes but only {size - pos} remain")
            out[i] = str(buf[pos : pos + n], "utf-8", "surrogateescape")
            pos += n
        self.pos = pos
        return out


def _decode_value_string(raw: bytes) -> str:
    # Values are meant to be UTF-8; bytes that are not survive as surrogate escapes so
    # that writing the file back reproduces them exactly.
    return str(raw, "utf-8", "surrogateescape")


class TypedMetadata(dict):
    """The metadata's plain values (``f.metadata["general.name"]``), which remember the GGUF type
    each key was read with, so ``lamina.gguf.write(path, f.metadata, f.tensors)`` writes every key
    back with its own type (a UINT8 array stays UINT8, a FLOAT64 stays FLOAT64), changed values too."""

    def __init__(self, fields: dict[str, MetadataValue]):
        super().__init__((k, f.value) for k, f in fields.items())
        self.fields = fields

    def typed(self, key: str) -> MetadataValue | None:
        """The key's value with the type it was read with (None for a key added since)."""
        field = self.fields.get(key)
        if field is None:
            return None
        value = self[key]
        return field if value is field.value else MetadataValue(value, field.type, field.element_type)


class GGUFFile:
    """An open GGUF file: header, metadata and tensor index, data left in the memory map."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._mmap = None
        self._buffer = None
        self.parts: list[GGUFFile] = [self]  # a split model's parts, this one first
        self._part_of: dict[str, GGUFFile] = {}
        try:
            # Checked before open(): opening a FIFO for reading would block forever.
            if not stat.S_ISREG(os.stat(self.path).st_mode):
                raise GGUFError("not a regular file", self.path)
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise GGUFError("file is empty, not a GGUF file", self.path, 0)
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise GGUFError(f"cannot open: {e.strerror or e}", self.path) from e
        self.file_size = size
        try:
            self._parse()
        except BaseException:
            self._release_map()
            raise

    def _release_map(self) -> None:
        """Unmap now rather than at garbage collection, so a rejected file leaves no mapping open."""
        self.tensors = {}
        self._buffer = None
        mapped, self._mmap = self._mmap, None
        if mapped is not None:
            try:
                mapped.close()
            except BufferError:  # a view is still alive somewhere; the map goes when it does
                pass

    # -- parsing ---------------------------------------------------------------------

    def _parse(self) -> None:
        cur = _Cursor(self._mmap, self.file_size, self.path)
        if self.file_size < 4 or self._mmap[:4] != GGUF_MAGIC:
            head = bytes(self._mmap[:4])
            raise cur.error(f"not a GGUF file: magic is {head!r}, expected {GGUF_MAGIC!r}", 0)
        cur.pos = 4
        version = cur.u32("version")
        if version not in SUPPORTED_VERSIONS:
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            if swapped in SUPPORTED_VERSIONS:
                raise cur.error(f"version is {version:#x}: the file looks big-endian (version {swapped} byte-swapped), "
                                "only little-endian GGUF is supported", 4)
            raise cur.error(f"unsupported GGUF version {version} (supported: 2 and 3)", 4)
        self.version = version
        n_tensors = cur.u64("tensor count")
        n_kv = cur.u64("key-value count")
        if n_kv > cur.remaining // _MIN_KV_BYTES:
            raise cur.error(f"key-value count {n_kv} is impossible: only {cur.remaining} bytes remain and each "
                            f"key-value pair needs at least {_MIN_KV_BYTES}", 16)
        if n_tensors > cur.remaining // _MIN_TENSOR_INFO_BYTES:
            raise cur.error(f"tensor count {n_tensors} is impossible: only {cur.remaining} bytes remain and each "
                            f"tensor record needs at least {_MIN_TENSOR_INFO_BYTES}", 8)
        if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES > cur.remaining:
            raise cur.error(f"{n_kv} key-value pairs and {n_tensors} tensor records cannot fit in the "
                            f"{cur.remaining} bytes that remain", 8)

        self.fields: dict[str, MetadataValue] = {}
        self.field_offsets: dict[str, int] = {}  # where each key-value pair starts, for error messages
        for i in range(n_kv):
            start = cur.pos
            key = cur.utf8(f"key of key-value pair {i}")
            if not key:
                raise cur.error(f"key-value pair {i} has an empty key", start)
            if key in self.fields:
                raise cur.error(f"duplicate key {key!r} (key-value pair {i})", start)
            self.field_offsets[key] = start
            vtype = cur.value_type(f"value of {key!r}")
            if vtype == ValueType.ARRAY:
                self.fields[key] = cur.array(repr(key))
            else:
                self.fields[key] = MetadataValue(cur.scalar(vtype, f"value of {key!r}"), vtype)
        self.metadata: TypedMetadata = TypedMetadata(self.fields)
        self.alignment = self._alignment(cur)

        infos = []
        names: set[str] = set()
        for i in range(n_tensors):
            infos.append(self._tensor_info(cur, i, names))

        self.data_offset = _pad(cur.pos, self.alignment)
        if n_tensors and self.data_offset > self.file_size:
            raise cur.error(f"data section would start at byte {self.data_offset}, past the end of the file "
                            f"({self.file_size} bytes)")
        # the header now lives in Python objects (a big vocabulary is megabytes of it): let its pages go
        self._release_range(0, self.data_offset)
        self._buffer = np.frombuffer(self._mmap, dtype=np.uint8)
        self.tensors: dict[str, TensorInfo] = {}
        expected = 0
        for name, shape, gtype, offset, info_pos in infos:
            if offset != expected:
                why = "is not aligned" if offset % self.alignment else "is not where the previous tensor ends"
                raise cur.error(f"tensor {name!r} has data offset {offset}, which {why} (expected {expected})", info_pos)
            nbytes = tensor_nbytes(shape, gtype)
            start = self.data_offset + offset
            if start + nbytes > self.file_size:
                raise cur.error(
                    f"tensor {name!r} data [{start}, {start + nbytes}) runs past the end of the file "
                    f"({self.file_size} bytes): the file is {start + nbytes - self.file_size} bytes short", info_pos)
            self.tensors[name] = TensorInfo(name, shape, gtype.name, offset,
                                            tensor_data_view(self._buffer, start, shape, gtype))
            expected = offset + _pad(nbytes, self.alignment)

    def _alignment(self, cur: _Cursor) -> int:
        field = self.fields.get(KEY_ALIGNMENT)
        if field is None:
            return DEFAULT_ALIGNMENT
        at = self.field_offsets[KEY_ALIGNMENT]
        if field.type != ValueType.UINT32:
            raise cur.error(f"{KEY_ALIGNMENT} must be a UINT32, found {_type_name(field)}", at)
        a = field.value
        if a == 0 or a & (a - 1):
            raise cur.error(f"{KEY_ALIGNMENT} is {a}, which is not a power of two", at)
        if a > MAX_ALIGNMENT:
            raise cur.error(f"{KEY_ALIGNMENT} is {a}, absurdly large (at most {MAX_ALIGNMENT})", at)
        return a

    def _tensor_info(self, cur: _Cursor, i: int, names: set[str]):
        start = cur.pos
        name = cur.utf8(f"name of tensor {i}")
        if len(name.encode()) > MAX_TENSOR_NAME:
            raise cur.error(f"tensor {i} name is {len(name.encode())} bytes, longer than ggml's limit of "
                            f"{MAX_TENSOR_NAME}", start)
        if name in names:
            raise cur.error(f"duplicate tensor name {name!r} (tensor {i})", start)
        names.add(name)
        dims_pos = cur.pos
        n_dims = cur.u32(f"dimension count of tensor {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise cur.error(f"tensor {name!r} has {n_dims} dimensions (must be 1 to {MAX_DIMS})", dims_pos)
        cur.need(8 * n_dims, f"dimensions of tensor {name!r}")
        shape = _I64x4[n_dims].unpack_from(cur.buf, cur.pos)
        cur.pos += 8 * n_dims
        # The product skips zeros: a zero-sized tensor is legal, but (2^62, 2^62, 0) is not a shape
        # anything can index (NumPy refuses it too).
        extent = 1
        for j, d in enumerate(shape):
            if d < 0:
                raise cur.error(f"tensor {name!r} dimension {j} is negative ({d}, or {d + (1 << 64)} "
                                "read as unsigned)", dims_pos + 4 + 8 * j)
            extent *= max(d, 1)
            if extent > INT64_MAX:
                raise cur.error(f"tensor {name!r} shape {list(shape)} overflows: more than 2^63-1 elements",
                                dims_pos)
        type_pos = cur.pos
        type_id = cur.u32(f"type of tensor {name!r}")
        gtype = GGML_TYPES.get(type_id)
        if gtype is None:
            raise cur.error(f"tensor {name!r} has unknown ggml type {type_id}", type_pos)
        if shape[0] % gtype.block_size:
            raise cur.error(f"tensor {name!r} row length {shape[0]} is not a multiple of {gtype.name}'s block "
                            f"size {gtype.block_size}", dims_pos)
        if tensor_nbytes(shape, gtype) > INT64_MAX:
            raise cur.error(f"tensor {name!r} of shape {list(shape)} and type {gtype.name} has a byte size "
                            "that overflows 2^63-1", dims_pos)
        offset = cur.u64(f"data offset of tensor {name!r}")
        return name, tuple(shape), gtype, offset, start

    # -- typed access --------------------------------------------------------------------

    def __contains__(self, key: str) -> bool:
        return key in self.fields

    def _typed(self, key: str, default: Any, accept, kind: str):
        field = self.fields.get(key)
        if field is None:
            if default is _MISSING:
                raise GGUFError(f"required metadata key {key!r} is missing", self.path)
            return default
        if not accept(field):
            raise GGUFError(f"metadata {key!r} should be {kind} but is {_type_name(field)}", self.path,
                            self.field_offsets.get(key))
        return field.value

    def get_int(self, key: str, default: Any = None) -> int:
        """An integer value (any width). Missing: ``default``; wrong type: :class:`GGUFError`."""
        return self._typed(key, default, lambda f: f.type in INTEGER_TYPES, "an integer")

    def require_int(self, key: str) -> int:
        return self.get_int(key, _MISSING)

    def get_float(self, key: str, default: Any = None) -> float:
        """A float value; integers are accepted too, as llama.cpp does for hyperparameters."""
        v = self._typed(key, default, lambda f: f.type in FLOAT_TYPES or f.type in INTEGER_TYPES, "a number")
        return v if v is default else float(v)

    def require_float(self, key: str) -> float:
        return self.get_float(key, _MISSING)

    def get_bool(self, key: str, default: Any = None) -> bool:
        return self._typed(key, default, lambda f: f.type == ValueType.BOOL, "a bool")

    def require_bool(self, key: str) -> bool:
        return self.get_bool(key, _MISSING)

    def get_str(self, key: str, default: Any = None) -> str:
        return self._typed(key, default, lambda f: f.type == ValueType.STRING, "a string")

    def require_str(self, key: str) -> str:
        return self.get_str(key, _MISSING)

    def get_array(self, key: str, default: Any = None, element: str | None = None):
        """An array value. ``element`` narrows what is accepted: ``"string"``, ``"int"``, ``"float"``, ``"number"``."""
        accept = _ARRAY_ELEMENT_CHECKS[element]
        return self._typed(key, default, lambda f: f.type == ValueType.ARRAY and accept(f.element_type),
                           "an array" if element is None else f"an array of {element}s")

    def require_array(self, key: str, element: str | None = None):
        return self.get_array(key, _MISSING, element)

    def attach_parts(self, parts: list["GGUFFile"]) -> None:
        """Take the tensors of a split model's other parts (which stay open as long as this file)."""
        for part in parts:
            for name, t in part.tensors.items():
                self.tensors[name] = t
                self._part_of[name] = part
        self.parts = [self, *parts]

    def release(self, tensor: TensorInfo) -> None:
        """Tell the OS a tensor's pages are not needed now (they are re-read from the file if touched again).

        Kernels that keep their own repacked copy call this so a loaded model costs its size once.
        """
        part = self._part_of.get(tensor.name)
        if part is not None:
            part.release(tensor)
            return
        if tensor.n_bytes:
            self._release_range(self.data_offset + tensor.offset, tensor.n_bytes)

    def _release_range(self, start: int, length: int) -> None:
        if self._mmap is None or length <= 0:
            return
        page = mmap.PAGESIZE
        first = start // page * page
        try:
            self._mmap.madvise(mmap.MADV_DONTNEED, first, start + length - first)
        except (AttributeError, OSError, ValueError):
            pass

    def typed_metadata(self) -> dict[str, MetadataValue]:
        """Metadata with type tags, as :func:`lamina.gguf.write` needs it for an exact copy."""
        return dict(self.fields)

    def __iter__(self) -> Iterator[TensorInfo]:
        return iter(self.tensors.values())

    def close(self) -> None:
        """Drop this object's references to the map; it is unmapped now, or once no tensor view is alive."""
        for part in self.parts[1:]:
            part.close()
        self._release_map()

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GGUFFile({self.path!r}, version={self.version}, {len(self.fields)} keys, {len(self.tensors)} tensors)"


_MISSING = object()


def _type_name(field: MetadataValue) -> str:
    return field.type.name if field.element_type is None else f"ARRAY of {field.element_type.name}"


_ARRAY_ELEMENT_CHECKS = {
    None: lambda t: True,
    "string": lambda t: t == ValueType.STRING,
    "int": lambda t: t in INTEGER_TYPES,
    "float": lambda t: t in FLOAT_TYPES,
    "number": lambda t: t in INTEGER_TYPES or t in FLOAT_TYPES,
}


def _pad(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def read_one(path: str | os.PathLike) -> GGUFFile:
    """Open and validate one GGUF file (one part, if it is part of a split model)."""
    return GGUFFile(path)


def read(path: str | os.PathLike) -> GGUFFile:
    """Open and validate a GGUF file; tensor data stays in the memory map.

    The first part of a split model (``…-00001-of-0000N.gguf``) brings in the other parts: their
    tensors join its ``tensors``, each still mapped from its own file (see :mod:`.split`).
    """
    from .split import open_parts, split_count

    f = GGUFFile(path)
    if split_count(f) > 1:
        try:
            f.attach_parts(open_parts(f))
        except BaseException:
            f.close()
            raise
    return f

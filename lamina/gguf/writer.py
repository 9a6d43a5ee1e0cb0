"""Atomic GGUF writer.

The file is laid out as llama.cpp's ``gguf_write_to_file`` lays it out: header,
key-value pairs, tensor index, zero padding to the alignment, then each tensor's
data padded with zeros to the alignment. It is written to a temporary file in the
destination folder, flushed and fsynced, then renamed over the destination, so a
failure (disk full, bad input, Ctrl-C) never leaves a partial file behind.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .constants import (
    DEFAULT_ALIGNMENT,
    DEFAULT_VERSION,
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
from .reader import GGUFError, GGUFFile, MetadataValue, TensorInfo, TypedMetadata, _pad, tensor_nbytes
from .types import GGMLType, ggml_type

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

_DTYPE_TO_VALUE_TYPE = {dt: vt for vt, dt in SCALAR_DTYPES.items()}


@dataclass(frozen=True)
class NewTensor:
    """A tensor to write: ``data`` holds exactly the bytes (or typed values) to store."""

    name: str
    shape: tuple[int, ...]  # ggml order
    type: str
    data: np.ndarray


@dataclass(frozen=True)
class DeferredTensor:
    """A tensor whose data is made only when it is written (``produce()`` returns its stored bytes or values).

    Writing a model of these holds one tensor's data in memory at a time, never the whole model."""

    name: str
    shape: tuple[int, ...]  # ggml order
    type: str
    produce: Callable[[], np.ndarray]


# Types whose stored form is a plain little-endian NumPy dtype: converted here, without the quants package.
_NATIVE_DTYPES = {
    "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "F64": np.dtype("<f8"),
    "I8": np.dtype("i1"), "I16": np.dtype("<i2"), "I32": np.dtype("<i4"), "I64": np.dtype("<i8"),
}


def tensor_from_array(name: str, array: np.ndarray, type: str = "F32") -> NewTensor:
    """Make a tensor to write from a float array, converting or quantizing it to ``type``.

    ``array`` has NumPy shape (..., row length); the ggml shape is its reverse.
    F32/F16/F64 and the integer types are a NumPy conversion (F16 rounds to nearest
    even, as ggml does); every block format is quantized by :mod:`lamina.quants`.
    """
    gtype = ggml_type(type)
    array = np.asarray(array)
    shape = tuple(reversed(array.shape)) or (1,)
    native = _NATIVE_DTYPES.get(gtype.name)
    if native is not None:
        return NewTensor(name, shape, gtype.name, np.ascontiguousarray(array, dtype=native).reshape(-1))
    from lamina.quants import quantize  # the block formats live with the quantization code

    rows = array.reshape(-1, shape[0]).astype(np.float32, copy=False)
    return NewTensor(name, shape, gtype.name, quantize(rows, gtype.name))


def write(
    path: str | os.PathLike,
    metadata,
    tensors: Iterable[TensorInfo | NewTensor] | Mapping[str, TensorInfo | NewTensor] | None = None,
    *,
    version: int | None = None,
    pad_without_tensors: bool = True,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write a GGUF file atomically.

    ``write(path, f)`` copies a file the reader opened, byte for byte. Otherwise ``metadata``
    maps keys to :class:`MetadataValue` or plain values (bool, int, float, str, lists, NumPy
    arrays; ints become UINT32/INT32 if they fit, else 64-bit); a reader's ``f.metadata`` keeps
    each key's own type, changed values included. ``tensors`` are records with ``name``,
    ``shape`` (ggml order), ``type`` and ``data`` (their bytes as stored: raw blocks or typed
    values), e.g. another file's :class:`TensorInfo` or :func:`tensor_from_array`'s result, as a
    list or as a reader's ``f.tensors`` (name -> tensor), or :class:`DeferredTensor` records whose
    data is made as it is written. A file of no tensors is padded to the alignment as llama.cpp
    pads it, unless ``pad_without_tensors`` is false (gguf-py's vocabulary-only files end at their
    last key). ``progress(n)`` is called with each tensor's size in bytes once it is written.
    """
    path = os.fspath(path)
    if isinstance(metadata, GGUFFile):
        if tensors is not None:
            raise GGUFError("write(path, f) takes the tensors from f: give no other tensors", path)
        source = metadata
        metadata, tensors = source.typed_metadata(), source.tensors
        version = source.version if version is None else version
    if tensors is None:
        raise GGUFError("no tensors given: write(path, metadata, tensors) or write(path, gguf_file)", path)
    if isinstance(tensors, Mapping):
        tensors = tensors.values()
    version = DEFAULT_VERSION if version is None else version
    if version not in SUPPORTED_VERSIONS:
        raise GGUFError(f"cannot write GGUF version {version} (supported: 2 and 3)", path)
    typed = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise GGUFError(f"metadata key {key!r} must be a non-empty string", path)
        known = metadata.typed(key) if isinstance(metadata, TypedMetadata) else None
        typed[key] = known if known is not None else _typed_value(key, value)
    alignment = DEFAULT_ALIGNMENT
    if KEY_ALIGNMENT in typed:
        field = typed[KEY_ALIGNMENT]
        if (field.type != ValueType.UINT32 or not isinstance(field.value, (int, np.integer))
                or not 0 < field.value <= MAX_ALIGNMENT or field.value & (field.value - 1)):
            raise GGUFError(f"{KEY_ALIGNMENT} must be a power of two up to {MAX_ALIGNMENT} stored as UINT32, "
                            f"got {field.value!r} as {field.type.name}", path)
        alignment = int(field.value)
    tensors = list(tensors)

    header = bytearray()
    header += GGUF_MAGIC
    header += _U32.pack(version)
    header += _U64.pack(len(tensors))
    header += _U64.pack(len(typed))
    for key, field in typed.items():
        _put_string(header, key)
        header += _U32.pack(field.type)
        try:
            _put_value(header, field)
        except (OverflowError, ValueError, TypeError) as e:
            raise GGUFError(f"metadata {key!r}: cannot store {_short(field.value)} as {field.type.name}"
                            f"{'' if field.element_type is None else ' of ' + field.element_type.name}: {e}",
                            path) from None

    payloads = []
    offset = 0
    seen = set()
    for t in tensors:
        shape, gtype = _checked_tensor(t, seen, path)
        seen.add(t.name)
        nbytes = tensor_nbytes(shape, gtype)
        data = t if isinstance(t, DeferredTensor) else _tensor_bytes(t.name, t.data, shape, gtype, path)
        _put_string(header, t.name)
        header += _U32.pack(len(shape))
        for d in shape:
            header += _U64.pack(d)
        header += _U32.pack(gtype.id)
        header += _U64.pack(offset)
        payloads.append(data)
        offset += _pad(nbytes, alignment)
    if tensors or pad_without_tensors:
        header += bytes(_pad(len(header), alignment) - len(header))

    def emit(f) -> None:
        f.write(header)
        for data in payloads:
            if isinstance(data, DeferredTensor):
                data = _tensor_bytes(data.name, data.produce(), tuple(int(d) for d in data.shape),
                                     ggml_type(data.type), path)
            f.write(memoryview(data))
            f.write(bytes(_pad(data.nbytes, alignment) - data.nbytes))
            if progress is not None:
                progress(data.nbytes)

    write_atomically(path, emit)


def _tensor_bytes(name: str, values: np.ndarray, shape: tuple[int, ...], gtype: GGMLType, path: str) -> np.ndarray:
    data = np.ascontiguousarray(values).reshape(-1).view(np.uint8)
    nbytes = tensor_nbytes(shape, gtype)
    if data.nbytes != nbytes:
        raise GGUFError(f"tensor {name!r}: {data.nbytes} bytes of data given, but shape {list(shape)} "
                        f"of type {gtype.name} needs {nbytes}", path)
    return data


def _checked_tensor(t, seen: set[str], path: str) -> tuple[tuple[int, ...], GGMLType]:
    """Refuse a tensor the reader (or llama.cpp) would reject, before anything is written."""
    try:
        gtype = ggml_type(t.type)
    except ValueError as e:
        raise GGUFError(f"tensor {t.name!r}: {e}", path) from None
    if not isinstance(t.name, str):
        raise GGUFError(f"tensor name {t.name!r} must be a string", path)
    if t.name in seen:
        raise GGUFError(f"duplicate tensor name {t.name!r}", path)
    if len(t.name.encode("utf-8", "surrogateescape")) > MAX_TENSOR_NAME:
        raise GGUFError(f"tensor name {t.name!r} is longer than {MAX_TENSOR_NAME} bytes", path)
    shape = tuple(int(d) for d in t.shape)
    if not 1 <= len(shape) <= MAX_DIMS:
        raise GGUFError(f"tensor {t.name!r} has {len(shape)} dimensions (must be 1 to {MAX_DIMS})", path)
    if any(d < 0 for d in shape):
        raise GGUFError(f"tensor {t.name!r} has a negative dimension in {list(shape)}", path)
    if shape[0] % gtype.block_size:
        raise GGUFError(f"tensor {t.name!r} row length {shape[0]} is not a multiple of {gtype.name}'s block "
                        f"size {gtype.block_size}", path)
    return shape, gtype


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def write_atomically(path: str, emit) -> None:
    """Call ``emit(file)`` on a temporary file beside ``path``, fsync it and rename it into place."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=folder)
    try:
        # mkstemp creates the file private (0600); give it the mode a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            emit(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _put_string(out: bytearray, s: str) -> None:
    if not isinstance(s, str):
        raise TypeError(f"expected a string, got {type(s).__name__}")
    raw = s.encode("utf-8", "surrogateescape")
    out += _U64.pack(len(raw))
    out += raw


def _put_value(out: bytearray, field: MetadataValue) -> None:
    if field.type == ValueType.STRING:
        _put_string(out, field.value)
    elif field.type == ValueType.ARRAY:
        if field.element_type is None or field.element_type == ValueType.ARRAY:
            raise TypeError("an array needs an element type other than ARRAY (GGUF has no nested arrays)")
        out += _U32.pack(field.element_type)
        if field.element_type == ValueType.STRING:
            items = list(field.value)
            out += _U64.pack(len(items))
            for s in items:
                _put_string(out, s)
        else:
            packed = _scalars_bytes(field.value, field.element_type, ndim=1)
            out += _U64.pack(len(packed) // SCALAR_DTYPES[field.element_type].itemsize)
            out += packed
    else:
        out += _scalars_bytes(field.value, field.type, ndim=0)


def _scalars_bytes(value: Any, vtype: ValueType, ndim: int) -> bytes:
    """Little-endian bytes of a scalar (``ndim`` 0) or a 1-D sequence, refusing lossy conversions.

    NumPy would silently truncate 2.5 to an integer or wrap 300 into a uint8; a file
    written that way would hold a value its author never gave.
    """
    dtype = SCALAR_DTYPES[vtype]
    if vtype in INTEGER_TYPES and not isinstance(value, np.ndarray):
        # Python ints: checked one by one, since NumPy turns [0, 2**64 - 1] into float64.
        items = list(value) if ndim else [value]
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items):
            raise TypeError("values are not all integers")
        value = items if ndim else items[0]
        info = np.iinfo(dtype)
        if items and (min(items) < info.min or max(items) > info.max):
            raise OverflowError(f"values outside [{info.min}, {info.max}]")
        return np.array(value, dtype=dtype).tobytes()
    arr = np.asarray(value)
    if arr.ndim != ndim:
        raise TypeError(f"expected {'a scalar' if ndim == 0 else 'a 1-D sequence'}, got shape {arr.shape}")
    kind = arr.dtype.kind
    if arr.size == 0:
        return b""
    if vtype in INTEGER_TYPES:
        if kind not in "iu":
            raise TypeError(f"{arr.dtype} values are not integers")
        info = np.iinfo(dtype)
        if int(arr.min()) < info.min or int(arr.max()) > info.max:
            raise OverflowError(f"values outside [{info.min}, {info.max}]")
    elif vtype == ValueType.BOOL:
        if kind != "b":
            raise TypeError(f"{arr.dtype} values are not booleans")
    elif kind not in "iuf":  # FLOAT32 / FLOAT64
        raise TypeError(f"{arr.dtype} values are not numbers")
    else:
        with np.errstate(over="ignore"):
            converted = arr.astype(dtype)
        if np.count_nonzero(np.isfinite(converted)) != np.count_nonzero(np.isfinite(arr)):
            raise OverflowError(f"finite values too large for {vtype.name}")
        return converted.tobytes()
    return arr.astype(dtype).tobytes()


def _typed_value(key: str, value: Any) -> MetadataValue:
    if isinstance(value, MetadataValue):
        return value
    if isinstance(value, (bool, np.bool_)):
        return MetadataValue(bool(value), ValueType.BOOL)
    if isinstance(value, (int, np.integer)):
        return MetadataValue(int(value), _int_type([int(value)]))
    if isinstance(value, (float, np.floating)):
        return MetadataValue(float(value), ValueType.FLOAT32)
    if isinstance(value, str):
        return MetadataValue(value, ValueType.STRING)
    if isinstance(value, np.ndarray):
        etype = _DTYPE_TO_VALUE_TYPE.get(value.dtype.newbyteorder("<") if value.dtype.byteorder == ">" else value.dtype)
        if etype is None:
            raise TypeError(f"metadata {key!r}: arrays of {value.dtype} cannot be stored in GGUF")
        return MetadataValue(value, ValueType.ARRAY, etype)
    if isinstance(value, (list, tuple)):
        items = list(value)
        if not items:
            raise TypeError(f"metadata {key!r}: an empty list has no element type to write; give "
                            f"MetadataValue([], ValueType.ARRAY, ValueType.INT32) (or the type it should have)")
        if all(isinstance(v, str) for v in items):
            return MetadataValue(items, ValueType.ARRAY, ValueType.STRING)
        if all(isinstance(v, (bool, np.bool_)) for v in items):
            return MetadataValue(items, ValueType.ARRAY, ValueType.BOOL)
        if all(isinstance(v, (int, np.integer)) for v in items):
            return MetadataValue(items, ValueType.ARRAY, _int_type(items))
        if all(isinstance(v, (int, float, np.integer, np.floating)) for v in items):
            return MetadataValue(items, ValueType.ARRAY, ValueType.FLOAT32)
    if isinstance(value, (list, tuple)):
        raise TypeError(f"metadata {key!r}: a list mixing {sorted({type(v).__name__ for v in value})} has no one GGUF "
                        "element type; give a MetadataValue with ValueType.ARRAY and the element type")
    raise TypeError(f"metadata {key!r}: cannot store a value of type {type(value).__name__} in GGUF; give a "
                    "bool, int, float, str, list, NumPy array, or a MetadataValue naming its ValueType")


def _int_type(values: list[int]) -> ValueType:
    lo, hi = (min(values), max(values)) if values else (0, 0)
    if lo >= 0 and hi < 1 << 32:
        return ValueType.UINT32
    if lo >= -(1 << 31) and hi < 1 << 31:
        return ValueType.INT32
    if lo >= 0 and hi < 1 << 64:
        return ValueType.UINT64
    return ValueType.INT64

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
from typing import Any, Iterable, Mapping

import numpy as np

from .constants import (
    DEFAULT_ALIGNMENT,
    DEFAULT_VERSION,
    GGUF_MAGIC,
    KEY_ALIGNMENT,
    MAX_TENSOR_NAME,
    SCALAR_DTYPES,
    ValueType,
)
from .reader import GGUFError, MetadataValue, TensorInfo, _pad, tensor_nbytes
from .types import ggml_type

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


def tensor_from_array(name: str, array: np.ndarray, type: str = "F32") -> NewTensor:
    """Make a tensor to write from a float array, converting or quantizing it to ``type``.

    ``array`` has NumPy shape (..., row length); the ggml shape is its reverse.
    """
    gtype = ggml_type(type)
    array = np.asarray(array)
    shape = tuple(reversed(array.shape)) or (1,)
    from lamina.quants import quantize  # the block formats live with the quantization code

    rows = array.reshape(-1, shape[0]).astype(np.float32, copy=False)
    return NewTensor(name, shape, gtype.name, quantize(rows, gtype.name))


def write(
    path: str | os.PathLike,
    metadata: Mapping[str, Any],
    tensors: Iterable[TensorInfo | NewTensor],
    *,
    version: int = DEFAULT_VERSION,
) -> None:
    """Write a GGUF file atomically.

    ``metadata`` maps keys to :class:`MetadataValue` or plain values (bool, int, float,
    str, lists, NumPy arrays; ints become UINT32/INT32 if they fit, else 64-bit).
    ``tensors`` are records with ``name``, ``shape`` (ggml order), ``type`` and ``data``
    (their bytes as stored: raw blocks or typed values), e.g. another file's
    :class:`TensorInfo` or :func:`tensor_from_array`'s result.
    """
    path = os.fspath(path)
    typed = {key: _typed_value(key, value) for key, value in metadata.items()}
    alignment = DEFAULT_ALIGNMENT
    if KEY_ALIGNMENT in typed:
        field = typed[KEY_ALIGNMENT]
        if field.type != ValueType.UINT32 or field.value <= 0 or field.value & (field.value - 1):
            raise GGUFError(f"{KEY_ALIGNMENT} must be a power of two stored as uint32, got {field.value!r}", path)
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
        _put_value(header, field)

    payloads = []
    offset = 0
    seen = set()
    for t in tensors:
        gtype = ggml_type(t.type)
        shape = tuple(int(d) for d in t.shape)
        if t.name in seen:
            raise GGUFError(f"duplicate tensor name {t.name!r}", path)
        if len(t.name.encode()) > MAX_TENSOR_NAME:
            raise GGUFError(f"tensor name {t.name!r} is longer than {MAX_TENSOR_NAME} bytes", path)
        seen.add(t.name)
        data = np.ascontiguousarray(t.data).reshape(-1).view(np.uint8)
        nbytes = tensor_nbytes(shape, gtype)
        if data.nbytes != nbytes:
            raise GGUFError(f"tensor {t.name!r}: {data.nbytes} bytes of data given, but shape {list(shape)} "
                            f"of type {gtype.name} needs {nbytes}", path)
        _put_string(header, t.name)
        header += _U32.pack(len(shape))
        for d in shape:
            header += _U64.pack(d)
        header += _U32.pack(gtype.id)
        header += _U64.pack(offset)
        payloads.append(data)
        offset += _pad(nbytes, alignment)
    header += bytes(_pad(len(header), alignment) - len(header))

    def emit(f) -> None:
        f.write(header)
        for data in payloads:
            f.write(memoryview(data))
            f.write(bytes(_pad(data.nbytes, alignment) - data.nbytes))

    write_atomically(path, emit)


def write_atomically(path: str, emit) -> None:
    """Call ``emit(file)`` on a temporary file beside ``path``, fsync it and rename it into place."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=folder)
    try:
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
    raw = s.encode("utf-8", "surrogateescape")
    out += _U64.pack(len(raw))
    out += raw


def _put_value(out: bytearray, field: MetadataValue) -> None:
    if field.type == ValueType.STRING:
        _put_string(out, field.value)
    elif field.type == ValueType.ARRAY:
        out += _U32.pack(field.element_type)
        out += _U64.pack(len(field.value))
        if field.element_type == ValueType.STRING:
            for s in field.value:
                _put_string(out, s)
        else:
            out += np.asarray(field.value, dtype=SCALAR_DTYPES[field.element_type]).tobytes()
    else:
        out += np.asarray(field.value, dtype=SCALAR_DTYPES[field.type]).tobytes()


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
        if all(isinstance(v, str) for v in items):
            return MetadataValue(items, ValueType.ARRAY, ValueType.STRING)
        if all(isinstance(v, (bool, np.bool_)) for v in items):
            return MetadataValue(items, ValueType.ARRAY, ValueType.BOOL)
        if all(isinstance(v, (int, np.integer)) for v in items):
            return MetadataValue(items, ValueType.ARRAY, _int_type(items))
        if all(isinstance(v, (int, float, np.integer, np.floating)) for v in items):
            return MetadataValue(items, ValueType.ARRAY, ValueType.FLOAT32)
    raise TypeError(f"metadata {key!r}: cannot store a value of type {type(value).__name__} in GGUF")


def _int_type(values: list[int]) -> ValueType:
    lo, hi = (min(values), max(values)) if values else (0, 0)
    if lo >= 0 and hi < 1 << 32:
        return ValueType.UINT32
    if lo >= -(1 << 31) and hi < 1 << 31:
        return ValueType.INT32
    if lo >= 0 and hi < 1 << 64:
        return ValueType.UINT64
    return ValueType.INT64

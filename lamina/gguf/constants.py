"""GGUF container constants: magic, versions, metadata value types, well-known keys.

The layout is described in ggml's docs/gguf.md: a little-endian header (magic,
version, tensor count, key-value count), the key-value pairs, the tensor index,
padding to ``general.alignment`` and then the tensor data.
"""

from __future__ import annotations

import enum

import numpy as np

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_VERSION = 3
DEFAULT_ALIGNMENT = 32
MAX_ALIGNMENT = 1 << 24  # far above any real file; larger values are treated as corruption
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME = 63  # GGML_MAX_NAME is 64 bytes including the terminating NUL

KEY_ALIGNMENT = "general.alignment"
KEY_ARCHITECTURE = "general.architecture"
KEY_FILE_TYPE = "general.file_type"
KEY_QUANTIZATION_VERSION = "general.quantization_version"


class ValueType(enum.IntEnum):
    """``enum gguf_type``: the type tag in front of every metadata value."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# Fixed-size scalar types and their little-endian NumPy dtypes.
SCALAR_DTYPES: dict[ValueType, np.dtype] = {
    ValueType.UINT8: np.dtype("<u1"),
    ValueType.INT8: np.dtype("<i1"),
    ValueType.UINT16: np.dtype("<u2"),
    ValueType.INT16: np.dtype("<i2"),
    ValueType.UINT32: np.dtype("<u4"),
    ValueType.INT32: np.dtype("<i4"),
    ValueType.FLOAT32: np.dtype("<f4"),
    ValueType.BOOL: np.dtype("?"),
    ValueType.UINT64: np.dtype("<u8"),
    ValueType.INT64: np.dtype("<i8"),
    ValueType.FLOAT64: np.dtype("<f8"),
}

INTEGER_TYPES = frozenset(
    {ValueType.UINT8, ValueType.INT8, ValueType.UINT16, ValueType.INT16,
     ValueType.UINT32, ValueType.INT32, ValueType.UINT64, ValueType.INT64}
)
FLOAT_TYPES = frozenset({ValueType.FLOAT32, ValueType.FLOAT64})

"""The metadata a conversion writes, kept in the order and with the types llama.cpp's converter gives.

``convert_hf_to_gguf.py`` collects its keys in a dict: a key set twice keeps its first place
and takes the last value, an empty string or list is not written, and a list's element type
comes from its first Python value (str -> STRING, float -> FLOAT32, bool -> BOOL, int -> INT32).
Numbers have the types its ``add_*`` helpers give them (counts UINT32, factors FLOAT32).
:class:`KeyValues` follows those rules, so the same calls give the same bytes.
"""

from __future__ import annotations

from typing import Any, Sequence

from lamina.gguf.constants import ValueType
from lamina.gguf.reader import MetadataValue


class KeyValues:
    """An ordered GGUF key -> :class:`MetadataValue` map; ``arch`` prefixes the model's own keys."""

    def __init__(self, arch: str):
        self.arch = arch
        self.values: dict[str, MetadataValue] = {}
        self.string("general.architecture", arch)

    def key(self, suffix: str) -> str:
        """``<arch>.<suffix>``, e.g. ``llama.block_count``."""
        return f"{self.arch}.{suffix}"

    def put(self, key: str, value: Any, vtype: ValueType, element_type: ValueType | None = None) -> None:
        self.values[key] = MetadataValue(value, vtype, element_type)

    def remove(self, key: str) -> None:
        self.values.pop(key, None)

    def string(self, key: str, value: str | None) -> None:
        if value:
            self.put(key, value, ValueType.STRING)

    def u32(self, key: str, value: int) -> None:
        self.put(key, int(value), ValueType.UINT32)

    def i32(self, key: str, value: int) -> None:
        self.put(key, int(value), ValueType.INT32)

    def f32(self, key: str, value: float) -> None:
        self.put(key, float(value), ValueType.FLOAT32)

    def boolean(self, key: str, value: bool) -> None:
        self.put(key, bool(value), ValueType.BOOL)

    def array(self, key: str, values: Sequence[Any]) -> None:
        values = list(values)
        if not values:
            return
        element = _element_type(values[0])
        if any(_element_type(v) is not element for v in values[1:]):
            raise ValueError(f"{key}: the values of a GGUF array must all have one type")
        self.put(key, values, ValueType.ARRAY, element)

    def count_or_list(self, key: str, value: int | Sequence[int]) -> None:
        """A per-model count (UINT32), or one per layer (an INT32 array), as ``add_head_count`` writes it."""
        if isinstance(value, int):
            self.u32(key, value)
        else:
            self.array(key, value)


def _element_type(value: Any) -> ValueType:
    if isinstance(value, (str, bytes, bytearray)):
        return ValueType.STRING
    if isinstance(value, float):
        return ValueType.FLOAT32
    if isinstance(value, bool):
        return ValueType.BOOL
    if isinstance(value, int):
        return ValueType.INT32
    raise ValueError(f"a {type(value).__name__} has no GGUF element type")

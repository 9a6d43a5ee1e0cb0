"""The one table of ggml tensor types: id, name, block size and bytes per block.

Mirrors ``enum ggml_type`` in ggml.h and the block structs in ggml-common.h.
Everything that needs to know how big a tensor of some type is asks here.
"""

from __future__ import annotations

from dataclasses import dataclass

QK_K = 256  # super-block size of the k-quants and i-quants


@dataclass(frozen=True)
class GGMLType:
    """One ggml tensor type: ``block_size`` elements are stored in ``type_size`` bytes."""

    id: int
    name: str
    block_size: int
    type_size: int

    @property
    def is_quantized(self) -> bool:
        return self.name not in _PLAIN_TYPES

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.type_size / self.block_size

    def row_bytes(self, n: int) -> int:
        """Bytes of one row of ``n`` elements (``n`` must be a multiple of the block size)."""
        return n // self.block_size * self.type_size


_PLAIN_TYPES = {"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"}

# (id, name, block size, bytes per block) — ggml.h order; ids 4, 5 and 31-33, 36-38 were removed.
_TABLE = [
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", QK_K, 84),
    (11, "Q3_K", QK_K, 110),
    (12, "Q4_K", QK_K, 144),
    (13, "Q5_K", QK_K, 176),
    (14, "Q6_K", QK_K, 210),
    (15, "Q8_K", QK_K, 292),
    (16, "IQ2_XXS", QK_K, 66),
    (17, "IQ2_XS", QK_K, 74),
    (18, "IQ3_XXS", QK_K, 98),
    (19, "IQ1_S", QK_K, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", QK_K, 110),
    (22, "IQ2_S", QK_K, 82),
    (23, "IQ4_XS", QK_K, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", QK_K, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", QK_K, 54),
    (35, "TQ2_0", QK_K, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
    (42, "Q2_0", 64, 18),
]

GGML_TYPES: dict[int, GGMLType] = {i: GGMLType(i, n, b, s) for i, n, b, s in _TABLE}
GGML_TYPES_BY_NAME: dict[str, GGMLType] = {t.name: t for t in GGML_TYPES.values()}


def ggml_type(key: int | str | GGMLType) -> GGMLType:
    """Look a type up by id or by name (any case: ``"q4_K"``, ``"Q4_K"``)."""
    if isinstance(key, GGMLType):
        return key
    if isinstance(key, str):
        found = GGML_TYPES_BY_NAME.get(key.upper())
        if found is None:
            raise ValueError(f"unknown ggml type name {key!r}; known: {', '.join(GGML_TYPES_BY_NAME)}")
        return found
    found = GGML_TYPES.get(int(key))
    if found is None:
        raise ValueError(f"unknown ggml type id {key}")
    return found

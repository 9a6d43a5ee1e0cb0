"""``general.file_type``: llama.cpp's ``enum llama_ftype`` and the names its tools print.

A model's file type says which quantization recipe made it ("Q4_K - Medium"); the
tensors themselves may mix several ggml types. The names are the ones
``llama_ftype_name`` prints, so ``lamina info`` and ``llama-cli`` say the same thing.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping

# (id, ggml type it is mostly made of, name llama.cpp prints); ids 4-6 and 33-35 were removed.
_TABLE = [
    (0, "F32", "all F32"),
    (1, "F16", "F16"),
    (2, "Q4_0", "Q4_0"),
    (3, "Q4_1", "Q4_1"),
    (7, "Q8_0", "Q8_0"),
    (8, "Q5_0", "Q5_0"),
    (9, "Q5_1", "Q5_1"),
    (10, "Q2_K", "Q2_K - Medium"),
    (11, None, "Q3_K - Small"),
    (12, "Q3_K", "Q3_K - Medium"),
    (13, None, "Q3_K - Large"),
    (14, None, "Q4_K - Small"),
    (15, "Q4_K", "Q4_K - Medium"),
    (16, None, "Q5_K - Small"),
    (17, "Q5_K", "Q5_K - Medium"),
    (18, "Q6_K", "Q6_K"),
    (19, "IQ2_XXS", "IQ2_XXS - 2.0625 bpw"),
    (20, "IQ2_XS", "IQ2_XS - 2.3125 bpw"),
    (21, None, "Q2_K - Small"),
    (22, None, "IQ3_XS - 3.3 bpw"),
    (23, "IQ3_XXS", "IQ3_XXS - 3.0625 bpw"),
    (24, "IQ1_S", "IQ1_S - 1.5625 bpw"),
    (25, "IQ4_NL", "IQ4_NL - 4.5 bpw"),
    (26, "IQ3_S", "IQ3_S - 3.4375 bpw"),
    (27, None, "IQ3_S mix - 3.66 bpw"),
    (28, "IQ2_S", "IQ2_S - 2.5 bpw"),
    (29, None, "IQ2_M - 2.7 bpw"),
    (30, "IQ4_XS", "IQ4_XS - 4.25 bpw"),
    (31, "IQ1_M", "IQ1_M - 1.75 bpw"),
    (32, "BF16", "BF16"),
    (36, "TQ1_0", "TQ1_0 - 1.69 bpw ternary"),
    (37, "TQ2_0", "TQ2_0 - 2.06 bpw ternary"),
    (38, None, "MXFP4 MoE"),
    (39, "NVFP4", "NVFP4"),
    (40, "Q1_0", "Q1_0"),
    (41, "Q2_0", "Q2_0"),
]

FILE_TYPE_NAMES: dict[int, str] = {i: name for i, _, name in _TABLE}
# The file type llama.cpp guesses from the most common tensor type when the key is missing.
_GUESS_FROM_TYPE: dict[str, int] = {t: i for i, t, _ in _TABLE if t is not None}


def file_type_name(file_type: int) -> str:
    """llama.cpp's name for a ``general.file_type`` value, e.g. 15 -> ``"Q4_K - Medium"``."""
    return FILE_TYPE_NAMES.get(int(file_type), "unknown, may not work")


def guess_file_type(tensor_types: Mapping[str, str]) -> int:
    """The file type llama.cpp assumes when ``general.file_type`` is absent (tensor name -> ggml type name).

    Like llama.cpp's loader: the type held by the most tensors wins (visiting names in
    sorted order, the first to reach the highest count), and a type with no file type
    of its own gives "all F32".
    """
    counts: Counter[str] = Counter()
    best, best_count = "F32", 0
    for name in sorted(tensor_types):
        t = tensor_types[name]
        counts[t] += 1
        if counts[t] > best_count:
            best, best_count = t, counts[t]
    return _GUESS_FROM_TYPE.get(best, 0)

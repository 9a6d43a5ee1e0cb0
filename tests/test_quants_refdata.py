"""Every file of shared/refdata/quant for lamina's non-grid formats: quantize reproduces ggml's bytes,
dequantize reproduces ggml's float32 values (the gguf package's dequantizer is the oracle).

The grid i-quants (IQ2_*, IQ3_*, IQ1_*) are pinned in their own test file.
"""

from __future__ import annotations

import re

import gguf
import numpy as np
import pytest

import lamina.quants as Q
from lamina.testing.models import shared_dir

QUANT_DIR = shared_dir() / "refdata" / "quant"
ROW_LENGTHS = {"gauss": 2048, "real": 4608}
GRID_IQUANTS = {"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M"}


def _reference_files():
    cases = []
    for path in sorted(QUANT_DIR.glob("*.bin")):
        m = re.fullmatch(r"(gauss|real)\.([a-z0-9_A-Z]+?)(\.imat)?\.bin", path.name)
        assert m, f"unexpected file {path.name} in {QUANT_DIR}"
        if m.group(2).upper() in GRID_IQUANTS:
            continue
        cases.append(pytest.param(m.group(1), m.group(2), bool(m.group(3)), id=path.stem))
    return cases


CASES = _reference_files()


def _inputs(name: str, with_importance: bool):
    n = ROW_LENGTHS[name]
    x = np.fromfile(QUANT_DIR / f"{name}.f32", dtype=np.float32).reshape(8, n)
    imat = np.fromfile(QUANT_DIR / f"{name}.imat", dtype=np.float32) if with_importance else None
    return x, imat


def test_reference_folder_is_covered():
    types = {c.values[1].upper() for c in CASES}
    assert types == {"F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
                     "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4"}
    assert len(CASES) == 2 * 2 * len(types)


@pytest.mark.parametrize("name,type_name,with_importance", CASES)
def test_quantize_reproduces_ggml_bytes(name, type_name, with_importance):
    x, imat = _inputs(name, with_importance)
    expected = np.fromfile(QUANT_DIR / f"{name}.{type_name}{'.imat' if with_importance else ''}.bin", dtype=np.uint8)
    got = Q.quantize(x, type_name, imat)
    assert got.dtype == np.uint8 and got.shape == expected.shape
    type_size = Q.block_format(type_name).type.type_size
    bad = np.flatnonzero((got.reshape(-1, type_size) != expected.reshape(-1, type_size)).any(axis=1))
    assert bad.size == 0, f"{bad.size} of {expected.size // type_size} blocks differ from ggml's, first at block {bad[:5]}"


@pytest.mark.parametrize("name,type_name,with_importance", CASES)
def test_dequantize_reproduces_ggml_values(name, type_name, with_importance):
    n = ROW_LENGTHS[name]
    raw = np.fromfile(QUANT_DIR / f"{name}.{type_name}{'.imat' if with_importance else ''}.bin", dtype=np.uint8)
    got = Q.dequantize(raw, type_name, (8, n))
    oracle = gguf.quants.dequantize(raw.reshape(8, -1), gguf.GGMLQuantizationType[type_name.upper()])
    oracle = np.asarray(oracle, dtype=np.float32).reshape(8, n)
    assert got.dtype == np.float32 and got.shape == (8, n)
    np.testing.assert_array_equal(got.view(np.uint32), oracle.view(np.uint32))

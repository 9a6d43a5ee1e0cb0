"""The grid i-quants (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M) against ggml.

Every reference file in refdata/quant for these types must be reproduced byte for byte
by ``quantize`` and turned back into exactly ggml's float32 by ``dequantize`` (the gguf
package's dequantizer is the oracle for those values).
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from lamina.quants import QuantizationError, block_format, dequantize, quantize
from lamina.quants.iq_tables import sign_table, value_grid

TYPES = ["iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s", "iq1_m"]
NEEDS_IMATRIX = {"iq2_xxs", "iq2_xs", "iq1_s"}  # ggml_quantize_requires_imatrix
SOURCES = {"gauss": 2048, "real": 4608}  # input file -> row length (8 rows each)

CASES = [
    (source, type_name, with_imatrix)
    for source in SOURCES
    for type_name in TYPES
    for with_imatrix in (False, True)
    if with_imatrix or type_name not in NEEDS_IMATRIX
]


def case_id(case) -> str:
    source, type_name, with_imatrix = case
    return f"{source}.{type_name}{'.imat' if with_imatrix else ''}"


def reference_name(source: str, type_name: str, with_imatrix: bool) -> str:
    return f"{source}.{type_name}.{'imat.bin' if with_imatrix else 'bin'}"


def load_input(refdata, source: str) -> tuple[np.ndarray, np.ndarray]:
    n = SOURCES[source]
    x = np.fromfile(refdata / "quant" / f"{source}.f32", dtype=np.float32).reshape(-1, n)
    imatrix = np.fromfile(refdata / "quant" / f"{source}.imat", dtype=np.float32)
    assert x.shape[0] == 8 and imatrix.shape == (n,)
    return x, imatrix


def load_reference(refdata, case) -> np.ndarray:
    path = refdata / "quant" / reference_name(*case)
    assert path.is_file(), f"missing reference {path}"
    return np.fromfile(path, dtype=np.uint8)


def test_cases_cover_every_reference_file(refdata):
    files = {
        p.name
        for p in (refdata / "quant").iterdir()
        if p.name.endswith(".bin") and p.name.split(".")[1] in TYPES
    }
    assert files == {reference_name(*case) for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_quantize_reproduces_ggml_bytes(refdata, case):
    source, type_name, with_imatrix = case
    x, imatrix = load_input(refdata, source)
    got = quantize(x, type_name, imatrix if with_imatrix else None)
    expected = load_reference(refdata, case)
    assert got.dtype == np.uint8 and got.shape == expected.shape
    if not np.array_equal(got, expected):
        row_bytes = expected.size // x.shape[0]
        bad = np.flatnonzero(got != expected)
        pytest.fail(f"{bad.size} bytes differ, first at row {bad[0] // row_bytes} byte {bad[0] % row_bytes}")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_dequantize_gives_ggml_floats(refdata, case):
    source, type_name, _ = case
    raw = load_reference(refdata, case)
    shape = (8, SOURCES[source])
    expected = gguf.quants.dequantize(raw.reshape(8, -1), getattr(gguf.GGMLQuantizationType, type_name.upper()))
    got = dequantize(raw, type_name, shape)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_array_equal(got.view(np.uint32), expected.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize(
    "grid, oracle",
    [
        ("IQ2_XXS", gguf.quants.IQ2_XXS),
        ("IQ2_XS", gguf.quants.IQ2_XS),
        ("IQ2_S", gguf.quants.IQ2_S),
        ("IQ3_XXS", gguf.quants.IQ3_XXS),
        ("IQ3_S", gguf.quants.IQ3_S),
        ("IQ1", gguf.quants.IQ1_S),
    ],
)
def test_value_grids_match_gguf_py(grid, oracle):
    oracle.init_grid()
    ours = value_grid(grid)
    np.testing.assert_array_equal(ours, np.asarray(oracle.grid).reshape(ours.shape))


def test_sign_table_matches_ggml():
    np.testing.assert_array_equal(sign_table(), np.frombuffer(gguf.quants.IQ2_XXS.ksigns, dtype=np.uint8))


@pytest.mark.parametrize("type_name", TYPES)
def test_rows_quantized_together_equal_rows_quantized_alone(refdata, type_name):
    x, imatrix = load_input(refdata, "real")
    x = np.concatenate([x, x[::-1] * np.float32(0.5)])  # 16 rows: several threads' worth
    together = quantize(x, type_name, imatrix).reshape(x.shape[0], -1)
    for r in range(x.shape[0]):
        np.testing.assert_array_equal(together[r], quantize(x[r : r + 1], type_name, imatrix), err_msg=f"row {r}")


@pytest.mark.parametrize("type_name", sorted(NEEDS_IMATRIX))
def test_types_ggml_refuses_without_importance_raise(type_name):
    assert block_format(type_name).requires_importance
    with pytest.raises(QuantizationError, match="importance"):
        quantize(np.ones((1, 256), dtype=np.float32), type_name)


@pytest.mark.parametrize("type_name", TYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused_with_its_position(type_name, bad):
    x = np.ones((3, 512), dtype=np.float32)
    x[2, 300] = bad
    with pytest.raises(QuantizationError, match="row 2 .*column 300"):
        quantize(x, type_name, np.ones(512, dtype=np.float32))


@pytest.mark.parametrize("type_name", TYPES)
def test_non_finite_importance_is_refused(type_name):
    imatrix = np.ones(256, dtype=np.float32)
    imatrix[7] = np.nan
    with pytest.raises(QuantizationError, match="importance weight 7"):
        quantize(np.ones((1, 256), dtype=np.float32), type_name, imatrix)


@pytest.mark.parametrize("type_name", ["iq2_xs", "iq2_s", "iq3_xxs", "iq3_s"])
def test_values_too_large_for_float32_search_raise_where_ggml_aborts(type_name):
    # at 1e19 the weighted squared distances overflow to inf, no grid neighbour is found and
    # ggml stops with GGML_ASSERT (checked against ggml-quants.c); lamina raises instead
    x = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32) * np.float32(1e19)
    with pytest.raises(QuantizationError, match="row 0 cannot be coded"):
        quantize(x, type_name, np.ones(256, dtype=np.float32))


@pytest.mark.parametrize("type_name", TYPES)
def test_all_zero_rows_give_all_zero_blocks(type_name):
    raw = quantize(np.zeros((2, 512), dtype=np.float32), type_name, np.ones(512, dtype=np.float32))
    assert raw.size == 2 * block_format(type_name).type.row_bytes(512)
    assert not raw.any()
    assert not dequantize(raw, type_name, (2, 512)).any()


@pytest.mark.parametrize("type_name", TYPES)
def test_block_layout_is_described_once(type_name):
    fmt = block_format(type_name)
    assert fmt.block_dtype is not None and fmt.block_dtype.itemsize == fmt.type.type_size

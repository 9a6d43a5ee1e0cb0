"""Format-level behaviour the reference files do not reach: float conversions on every special value,
dequantizing arbitrary block bytes, the activation-only types Q8_1/Q8_K, and bad requests."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

import lamina.quants as Q
from lamina.quants.common import fp16_to_fp32_array, fp32_to_fp16_array, nearest_int, round_away

MY_BLOCK_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
                  "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4"]


def _awkward_floats(rng, count=1 << 18):
    bits = rng.integers(0, 1 << 32, count, dtype=np.uint64).astype(np.uint32)
    specials = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001, 0x7F800001,
                         0x33000000, 0x33000001, 0x387FE000, 0x38800000, 0x477FE000, 0x477FEFFF, 0x477FF000,
                         0x477FFFFF, 0x47800000, 0x3F801000, 0x3F803000, 0x3F800FFF, 0x00000001],
                        dtype=np.uint32)
    # values around the fp16 range, where rounding and subnormals happen
    near = (rng.standard_normal(count) * 10.0 ** rng.uniform(-9, 5, count)).astype(np.float32).view(np.uint32)
    return np.concatenate([specials, bits, near]).view(np.float32)


def test_fp16_conversion_rounds_to_nearest_even_like_ieee():
    x = _awkward_floats(np.random.default_rng(1))
    got = fp32_to_fp16_array(x)
    finite = ~np.isnan(x)
    with np.errstate(over="ignore"):
        expected = x[finite].astype(np.float16).view(np.uint16)  # IEEE round-to-nearest-even
    np.testing.assert_array_equal(got[finite], expected)
    # ggml turns every NaN into 0x7E00, keeping the sign
    nan_bits = got[~finite]
    assert np.all((nan_bits & 0x7FFF) == 0x7E00)
    np.testing.assert_array_equal(nan_bits >> 15, x[~finite].view(np.uint32) >> 31)


def test_fp16_to_fp32_is_exact_for_every_half():
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    got = fp16_to_fp32_array(h)
    expected = h.view(np.float16).astype(np.float32)
    finite = ~np.isnan(expected)
    np.testing.assert_array_equal(got[finite].view(np.uint32), expected[finite].view(np.uint32))
    assert np.isnan(got[~finite]).all()


def test_bf16_conversion_matches_gguf_and_round_trips():
    x = _awkward_floats(np.random.default_rng(2))[: 1 << 18].reshape(-1, 64)
    got = Q.quantize(x, "BF16").view(np.uint16).reshape(x.shape)
    expected = gguf.quants.quantize(x, gguf.GGMLQuantizationType.BF16).view(np.uint16).reshape(x.shape)
    np.testing.assert_array_equal(got, expected)
    back = Q.dequantize(got, "BF16", x.shape)
    np.testing.assert_array_equal(back.view(np.uint32), got.astype(np.uint32) << 16)


def test_f32_is_stored_verbatim():
    x = _awkward_floats(np.random.default_rng(3), 1024)[:1024].reshape(-1, 32)
    raw = Q.quantize(x, "f32")
    assert raw.nbytes == x.nbytes
    np.testing.assert_array_equal(Q.dequantize(raw, "F32", x.shape).view(np.uint32), x.view(np.uint32))


def test_nearest_int_and_roundf_tie_breaking():
    from numba import njit

    @njit
    def both(v):
        out_n = np.empty(v.size, np.int64)
        out_r = np.empty(v.size, np.float32)
        for i in range(v.size):
            out_n[i] = nearest_int(v[i])
            out_r[i] = round_away(v[i])
        return out_n, out_r

    v = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, -0.49999997, 3.7, -3.7, 0.0, -0.0],
                 dtype=np.float32)
    n, r = both(v)
    np.testing.assert_array_equal(n, [0, 2, 2, 0, -2, -2, 0, 0, 4, -4, 0, 0])  # half to even
    np.testing.assert_array_equal(r, [1, 2, 3, -1, -2, -3, 0, -0, 4, -4, 0, 0])  # half away from zero


def _random_blocks(type_name, n_blocks, rng):
    """Random block bytes whose fp16 fields are finite (so NaN payload conventions do not matter)."""
    fmt = Q.block_format(type_name)
    raw = rng.integers(0, 256, (n_blocks, fmt.type.type_size), dtype=np.uint8)
    blocks = raw.view(fmt.block_dtype).reshape(n_blocks)
    for name, (dt, _) in fmt.block_dtype.fields.items():
        if dt.base == np.dtype("<f2"):
            vals = rng.standard_normal(blocks[name].shape).astype(np.float16)
            blocks[name] = vals
    return raw


@pytest.mark.parametrize("type_name", MY_BLOCK_TYPES)
def test_dequantize_arbitrary_blocks_matches_gguf(type_name):
    rng = np.random.default_rng(abs(hash(type_name)) % 2**32)
    fmt = Q.block_format(type_name)
    n_blocks = 64
    raw = _random_blocks(type_name, n_blocks, rng)
    n = 4 * fmt.type.block_size
    got = Q.dequantize(raw, type_name, (n_blocks // 4, n))
    with np.errstate(over="ignore"):  # random MXFP4 exponents overflow float32 in both
        oracle = gguf.quants.dequantize(raw.reshape(n_blocks // 4, -1), gguf.GGMLQuantizationType[type_name])
    np.testing.assert_array_equal(got.view(np.uint32), np.asarray(oracle, np.float32).reshape(got.shape).view(np.uint32))


@pytest.mark.parametrize("type_name", MY_BLOCK_TYPES + ["Q8_1", "Q8_K"])
def test_block_layout_is_described_once(type_name):
    fmt = Q.block_format(type_name)
    assert fmt.block_dtype is not None and fmt.block_dtype.itemsize == fmt.type.type_size


def test_q8_1_stores_the_scaled_sum():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 128)).astype(np.float32)
    raw = Q.quantize(x, "Q8_1")
    blocks = raw.view(Q.block_format("Q8_1").block_dtype)
    d = np.abs(x.reshape(-1, 32)).max(1) / np.float32(127)  # ggml scales the sum by the unrounded d
    np.testing.assert_array_equal(blocks["d"], d.astype(np.float16))
    sums = blocks["qs"].astype(np.int64).sum(1)
    np.testing.assert_array_equal(blocks["s"], (sums.astype(np.float32) * d).astype(np.float16))
    back = Q.dequantize(raw, "Q8_1", x.shape)
    assert np.abs(back - x).max() <= np.abs(x).max() / 127


def test_q8_k_round_trip_and_block_sums():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 512)).astype(np.float32)
    x[1, 256:] = 0  # an all-zero super-block
    raw = Q.quantize(x, "Q8_K")
    blocks = raw.view(Q.block_format("Q8_K").block_dtype)
    np.testing.assert_array_equal(blocks["bsums"], blocks["qs"].reshape(-1, 16, 16).astype(np.int16).sum(2))
    assert blocks["d"][3] == 0 and not blocks["qs"][3].any()
    back = Q.dequantize(raw, "Q8_K", x.shape)
    assert np.abs(back - x).max() <= np.abs(x).max() / 127 * 0.5001


def test_bad_requests_raise_quantization_error():
    x = np.zeros((2, 256), np.float32)
    with pytest.raises(Q.QuantizationError, match="unknown ggml type"):
        Q.quantize(x, "Q9_0")
    with pytest.raises(Q.QuantizationError, match="not a multiple"):
        Q.quantize(np.zeros((2, 100), np.float32), "Q4_K")
    with pytest.raises(Q.QuantizationError, match="importance"):
        Q.quantize(x, "Q4_K", np.ones(10, np.float32))
    with pytest.raises(Q.QuantizationError, match="bytes given"):
        Q.dequantize(np.zeros(100, np.uint8), "Q4_K", (1, 256))


@pytest.mark.parametrize("type_name", MY_BLOCK_TYPES)
def test_rows_are_quantized_independently(type_name):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 512)).astype(np.float32)
    whole = Q.quantize(x, type_name)
    one_by_one = np.concatenate([Q.quantize(x[r:r + 1], type_name) for r in range(5)])
    np.testing.assert_array_equal(whole, one_by_one)

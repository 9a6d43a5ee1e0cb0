"""Each kernel against the plain reference: dequantize the weight, multiply in float32.

Every ggml type a weight can have, odd shapes, row counts that are not a multiple of the
row chunk or the thread count, one to a few input rows (matrix-vector kernels) and many
(dequantize + BLAS tiles).
"""

from __future__ import annotations

import numpy as np
import pytest

from lamina.gguf import TensorInfo
from lamina.kernels import Linear, fused_linear
from lamina.kernels.activations import quantize_q8_1, round_activations
from lamina.kernels.attention import attention, rope_store_attend
from lamina.models.layers import RopeConfig, apply_rope
from lamina.quants import dequantize, quantize

QUANTIZED = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL",
             "IQ4_XS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "TQ1_0", "TQ2_0",
             "MXFP4"]
FLOATS = ["F32", "F16", "BF16"]


def make_weight(type_name: str, rows: int, n: int, seed: int = 0) -> tuple[TensorInfo, np.ndarray]:
    """A random weight of ``type_name`` as a TensorInfo, and its exact float32 values."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, n)).astype(np.float32)
    importance = np.abs(rng.standard_normal(n)).astype(np.float32) + 0.1
    raw = quantize(w, type_name, importance=importance).reshape(rows, -1)
    if type_name == "F32":
        raw = raw.view(np.float32)
    elif type_name == "F16":
        raw = raw.view(np.float16)
    return TensorInfo(f"w.{type_name}", (n, rows), type_name, 0, raw), dequantize(raw, type_name, (rows, n))


def expected_product(x: np.ndarray, layer, weight: TensorInfo, dense: np.ndarray) -> np.ndarray:
    """Dequantize-then-matmul against the activation as ggml rounds it. Q4_1/Q5_1 meet a Q8_1
    activation, whose per-block sums ``s`` (multiplied by the weight's block minimums) are
    float16-rounded on top of the rounded values: that part is added separately."""
    xr = round_activations(x, layer.activation)
    expected = xr @ dense.T
    if layer.activation == "q8_1":
        n_tok, n = x.shape
        q = np.empty((n_tok, n), np.int8)
        d = np.empty((n_tok, n // 32), np.float32)
        s = np.empty_like(d)
        quantize_q8_1(x, q, d, s)
        np.testing.assert_array_equal(q * np.repeat(d, 32, axis=1), xr)
        minimums = weight.data.reshape(dense.shape[0], n // 32, -1)[:, :, 2:4].copy().view(np.float16)[:, :, 0]
        expected += (s - xr.reshape(n_tok, -1, 32).sum(axis=2)) @ minimums.astype(np.float32).T
    return expected


def block_multiple(type_name: str) -> int:
    return 256 if type_name.endswith("_K") or type_name.startswith(("IQ", "TQ")) and type_name != "IQ4_NL" else 32


@pytest.mark.parametrize("type_name", QUANTIZED + FLOATS)
@pytest.mark.parametrize("n_inputs", [1, 3, 9])
def test_linear_matches_dequantize_then_matmul(type_name, n_inputs):
    n = 2 * block_multiple(type_name) if type_name not in FLOATS else 96
    rows = 37  # not a multiple of the 16-row chunk nor of the thread count
    weight, dense = make_weight(type_name, rows, n)
    layer = Linear(weight)
    x = np.random.default_rng(1).standard_normal((n_inputs, n)).astype(np.float32)
    expected = expected_product(x, layer, weight, dense)
    got = layer(x)
    assert got.shape == (n_inputs, rows)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.abs(expected).max())
    np.testing.assert_array_equal(layer.dequantized(), dense)


@pytest.mark.parametrize("type_name", ["Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q6_K"])
def test_large_and_odd_shapes(type_name):
    n = 3 * block_multiple(type_name) if type_name.endswith("_K") else 7 * 32
    weight, dense = make_weight(type_name, 1001, n, seed=3)
    layer = Linear(weight)
    for n_inputs in (1, 2, 5, 40):
        x = np.random.default_rng(n_inputs).standard_normal((n_inputs, n)).astype(np.float32)
        expected = expected_product(x, layer, weight, dense)
        np.testing.assert_allclose(layer(x), expected, rtol=0, atol=2e-5 * np.abs(expected).max())


def test_fused_layers_equal_their_parts_and_mixed_types_stack():
    (q, dq), (k, dk) = make_weight("Q4_K", 40, 256, 1), make_weight("Q4_K", 24, 256, 2)
    (v, dv) = make_weight("Q6_K", 24, 256, 3)
    bias = [np.arange(40, dtype=np.float32), None, np.ones(24, np.float32)]
    layer = fused_linear([q, k, v], bias)
    x = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
    xr = round_activations(x, "q8_K")
    parts = layer.split(layer(x))
    np.testing.assert_allclose(parts[0], xr @ dq.T + bias[0], atol=1e-3)
    np.testing.assert_allclose(parts[1], xr @ dk.T, atol=1e-3)
    np.testing.assert_allclose(parts[2], xr @ dv.T + 1, atol=1e-3)


@pytest.mark.parametrize("kind,block_type", [("q8_0", "Q8_0"), ("q8_K", "Q8_K")])
def test_activation_rounding_is_ggml_q8_quantization(kind, block_type):
    x = (np.random.default_rng(5).standard_normal((4, 512)) * [[1], [1e-3], [30], [0]]).astype(np.float32)
    expected = dequantize(quantize(x, block_type), block_type, x.shape)
    np.testing.assert_array_equal(round_activations(x, kind), expected)


def _naive_attention(q, keys, values, q_pos, scale, window):
    n_tok, n_head, _ = q.shape
    n_kv = keys.shape[0]
    out = np.zeros((n_tok, n_head, values.shape[2]), np.float64)
    qr = q.astype(np.float16).astype(np.float64)
    for t in range(n_tok):
        for h in range(n_head):
            kh = h // (n_head // n_kv)
            visible = [j for j in range(keys.shape[1]) if j <= q_pos[t] and (not window or q_pos[t] - j < window)]
            s = np.array([qr[t, h] @ keys[kh, j].astype(np.float64) * scale for j in visible])
            p = np.exp(s - s.max())
            p /= p.sum()
            out[t, h] = sum(pj * values[kh, j].astype(np.float64) for pj, j in zip(p, visible))
    return out.reshape(n_tok, -1)


@pytest.mark.parametrize("window", [0, 3, 70])
@pytest.mark.parametrize("tiled", [False, True])
def test_attention_matches_a_naive_loop(window, tiled):
    """Both of ggml's kernels (per query with a float16 accumulator; tiled in float32) compute the
    same softmax attention, to float16 precision."""
    rng = np.random.default_rng(7)
    n_cells = 150  # several 64-key tiles
    keys = rng.standard_normal((2, n_cells, 80)).astype(np.float16)  # 80: a 64-step plus leftovers
    values = rng.standard_normal((2, n_cells, 72)).astype(np.float16)
    q_pos = np.array([0, 1, 63, 64, 65, 100, 149])
    q = rng.standard_normal((len(q_pos), 6, 80)).astype(np.float32)
    got = attention(q, keys, values, q_pos, 0.35, window, tiled=tiled)
    # the per-query kernel rounds its running sum to float16 after every key, as ggml's does
    tolerance = 2e-3 if tiled else 1e-2
    np.testing.assert_allclose(got, _naive_attention(q, keys, values, q_pos, 0.35, window), atol=tolerance)


@pytest.mark.parametrize("tiled", [False, True])
def test_attention_reads_a_cache_view_as_it_reads_a_compact_copy(tiled):
    """The KV cache hands attention a view of its first cells (rows strided by the full context);
    the result is the same, bit for bit, as for a compact copy of those cells."""
    rng = np.random.default_rng(8)
    cache_k = rng.standard_normal((2, 300, 64)).astype(np.float16)
    cache_v = rng.standard_normal((2, 300, 48)).astype(np.float16)
    keys, values = cache_k[:, :130], cache_v[:, :130]
    q_pos = np.array([5, 64, 129])
    q = rng.standard_normal((len(q_pos), 4, 64)).astype(np.float32)
    got = attention(q, keys, values, q_pos, 0.125, 0, tiled=tiled)
    np.testing.assert_array_equal(got, attention(q, keys.copy(), values.copy(), q_pos, 0.125, 0, tiled=tiled))


@pytest.mark.parametrize("positions, window, neox, q_scale, n_threads", [
    ([70], 0, False, 1.0, 1),  # a generation step
    ([600], 0, True, 1.0, 2),  # a view of 768 cells: split over the threads, merged
    ([600], 0, False, 1.0, 3),
    ([40, 41, 42, 43, 44], 0, True, 1.0, 2),  # a short prompt's queries
    ([90, 91], 8, False, 0.125, 2),  # a sliding window; gemma's queries scaled before attending
])
def test_rope_store_attend_is_the_separate_steps(positions, window, neox, q_scale, n_threads):
    """The one-call path of a generation step (rotate, write the cache, attend) gives the bits of
    the separate steps it replaces: rope on q and k, q scaled, k/v cast to float16 into the cache
    at their positions, then attention over the cache (split from 512 cells, as llama.cpp splits)."""
    rng = np.random.default_rng(11)
    n_cells, n_head, n_kv_head, d = 1024, 6, 2, 64
    cache_k = rng.standard_normal((n_kv_head, n_cells, d)).astype(np.float16)
    cache_v = rng.standard_normal((n_kv_head, n_cells, d)).astype(np.float16)
    q_pos = np.array(positions, np.int64)
    q = rng.standard_normal((len(q_pos), n_head, d)).astype(np.float32) * 3
    k = rng.standard_normal((len(q_pos), n_kv_head, d)).astype(np.float32) * 3
    v = rng.standard_normal((len(q_pos), n_kv_head, d)).astype(np.float32) * 3
    rope = RopeConfig(n_rot=d, base=10000.0, neox=neox)
    cos, sin = rope.cos_sin(q_pos)

    expected_k, expected_v = cache_k.copy(), cache_v.copy()
    q1, k1 = apply_rope(q.copy(), cos, sin, d, neox), apply_rope(k.copy(), cos, sin, d, neox)
    q1 *= np.float32(q_scale)
    expected_k[:, q_pos] = k1.transpose(1, 0, 2)
    expected_v[:, q_pos] = v.transpose(1, 0, 2)
    expected = attention(q1, expected_k, expected_v, q_pos, 0.3, window, tiled=False, n_threads=n_threads)

    got = rope_store_attend(q.copy(), k.copy(), v, cos, sin, d, neox, cache_k, cache_v, q_pos, 0.3, window,
                            q_scale=q_scale, n_threads=n_threads)
    np.testing.assert_array_equal(cache_k.view(np.uint16), expected_k.view(np.uint16))
    np.testing.assert_array_equal(cache_v.view(np.uint16), expected_v.view(np.uint16))
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))

"""The exact kernels: llama.cpp's float arithmetic, bit for bit, without llama.cpp at test time.

Three independent layers pin it down:

* :mod:`lamina.kernels.ggml_reference` states ggml's operation order for each weight type and
  batch size in plain scalar code; the fast (vectorized, parallel) kernels must give exactly its
  bits, for every type, batch sizes around each switch (8 tokens, groups of four) and row counts
  that are and are not multiples of 8 and 16.
* For one output value per kernel family the same order is written out again here in Python with
  exact rational arithmetic and one float32 rounding per operation, so the statement itself is
  checked against its documentation (lane sums, ``hsum_float_8``'s fold, FMA vs separate rounding).
* Properties that follow from the order: a token gives the same bits alone or inside a batch
  where ggml's kernel does not change with the batch, and different bits exactly where it does.

(That the statement is llama.cpp's was measured against llama.cpp itself: see the kernels'
docstrings and the README.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
from fractions import Fraction

import numpy as np
import pytest

from lamina.gguf import TensorInfo
from lamina.kernels import Linear, family, fused_linear
from lamina.kernels.activations import quantize_q8_0, quantize_q8_1, quantize_q8_K, round_activations
from lamina.kernels.ggml_reference import decode_legacy, decode_q4_K, decode_q6_K, reference_matmul
from lamina.kernels.glu import gelu_f16_table, geglu_rows, swiglu_rows
from lamina.kernels.legacy import Activations
from lamina.quants import dequantize, quantize

EXACT_TYPES = ["Q8_0", "Q5_0", "Q5_1", "Q4_0", "Q4_1", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "F16", "F32"]
BATCHES = [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 70]  # few/many switch at 8, q4_K gemm groups of 4


def weight(type_name: str, rows: int, n: int, seed: int = 0, scale: float = 1.0) -> tuple[TensorInfo, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, n)) * scale).astype(np.float32)
    raw = quantize(w, type_name).reshape(rows, -1)
    return TensorInfo(f"w.{type_name}", (n, rows), type_name, 0, raw), raw


def activations(n_tok: int, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_tok, n)) * rng.uniform(0.05, 4, (n_tok, 1))).astype(np.float32)


def width(type_name: str) -> int:
    if type_name in ("F16", "F32"):
        return 336  # ggml_vec_dot's leftovers past its steps of 64
    return 768 if type_name.endswith("_K") else 320


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.int32), b.view(np.int32))


# -- fast kernels = the reference statement ----------------------------------------------------------


@pytest.mark.parametrize("type_name", EXACT_TYPES)
@pytest.mark.parametrize("rows", [48, 37])
def test_fast_kernels_give_the_reference_statements_bits(type_name, rows):
    n = width(type_name)
    info, raw = weight(type_name, rows, n, seed=rows)
    layer = Linear(info)
    for n_tok in BATCHES:
        x = activations(n_tok, n, seed=n_tok)
        got = layer(x)
        expected = reference_matmul(type_name, raw, x)
        assert same_bits(got, expected), (type_name, rows, n_tok, np.abs(got - expected).max())


def test_large_sums_round_when_converted_to_float():
    """Weights and activations of one sign make the integer sums exceed 2^24, where the kernels'
    int32 → float32 conversions round (as the hardware's do)."""
    n = 2048
    for type_name in ("Q6_K", "Q3_K", "Q4_K", "Q5_K", "Q5_0", "Q4_1"):
        w = np.full((16, n), 3.0, np.float32)
        raw = quantize(w if type_name != "Q5_0" else -w, type_name).reshape(16, -1)
        layer = Linear(TensorInfo("w", (n, 16), type_name, 0, raw))
        for n_tok in (1, 4, 9):
            x = np.full((n_tok, n), 2.0, np.float32)
            x[:, ::3] = 1.7
            assert same_bits(layer(x), reference_matmul(type_name, raw, x)), type_name


def test_fused_layers_are_their_parts_and_keep_ggml_repacking_apart():
    (q, rq), (k, rk), (v, rv) = weight("Q5_0", 40, 320, 1), weight("Q5_0", 24, 320, 2), weight("Q5_0", 24, 320, 3)
    fused = fused_linear([q, k, v], [None, None, None])
    x = activations(9, 320)
    parts = fused.split(fused(x))
    for part, raw in zip(parts, (rq, rk, rv)):
        assert same_bits(np.ascontiguousarray(part), reference_matmul("Q5_0", raw, x))
    # mixed legacy types: runs fused, one quantized activation shared (with and without Q8_1 sums)
    mixed = [weight(t, 16 + 8 * i, 320, 10 + i) for i, t in enumerate(["Q4_1", "Q5_0", "Q5_0", "Q8_0", "Q4_1"])]
    stack = fused_linear([w for w, _ in mixed], [None] * 5)
    assert [type(p).__name__ for p in stack.parts] == ["Linear"] * 4  # Q5_0 + Q5_0 fused
    for n_tok in (1, 9):
        x = activations(n_tok, 320)
        for part, (info, raw) in zip(stack.split(stack(x)), mixed):
            assert same_bits(np.ascontiguousarray(part), reference_matmul(info.type, raw, x))
    # 40 rows are repacked by ggml (q4_K_8x8), 36 are not: one kernel call cannot serve both
    (a, ra), (b, rb) = weight("Q4_K", 40, 256, 4), weight("Q4_K", 36, 256, 5)
    stack = fused_linear([a, b], [None, None])
    assert not isinstance(stack, Linear)
    x = activations(5, 256)
    ya, yb = stack.split(stack(x))
    assert same_bits(np.ascontiguousarray(ya), reference_matmul("Q4_K", ra, x))
    assert same_bits(np.ascontiguousarray(yb), reference_matmul("Q4_K", rb, x))


# -- consequences of the order ------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", ["Q8_0", "Q5_0", "Q4_0", "Q4_1"])
def test_legacy_types_give_a_token_the_same_bits_in_any_batch(type_name):
    """vec_dot (one token) and tinyBLAS (many) add the same lanes in the same order."""
    info, _ = weight(type_name, 64, 320)
    layer = Linear(info)
    x = activations(100, 320)
    batch = layer(x)
    for i in (0, 3, 57, 99):
        assert same_bits(layer(x[i:i + 1]), batch[i:i + 1])
        assert same_bits(layer(x[i:i + 3])[0:1], batch[i:i + 1])


def test_q6_K_bits_depend_only_on_which_side_of_8_tokens_the_batch_is():
    info, _ = weight("Q6_K", 48, 768)
    layer = Linear(info)
    x = activations(40, 768)
    many = layer(x)
    assert same_bits(layer(x[5:13]), many[5:13])  # 8 tokens: the tiled kernel, like 40
    few = layer(x[5:12])  # 7 tokens: vec_dot
    assert same_bits(layer(x[5:6]), few[0:1])
    assert not same_bits(few, many[5:12])  # the two orders round differently somewhere


def test_q4_K_repacked_takes_groups_of_four_through_the_gemm_and_the_rest_through_the_gemv():
    info, _ = weight("Q4_K", 48, 768)
    layer = Linear(info)
    x = activations(11, 768)
    y = layer(x)  # tokens 0..7 gemm, 8..10 gemv
    alone = np.concatenate([layer(x[i:i + 1]) for i in range(11)])  # one token: the gemv
    assert same_bits(y[8:], alone[8:])
    assert same_bits(layer(x[:4]), y[:4])  # a group of four: the gemm, as inside the batch
    assert not same_bits(y[:8], alone[:8])


# -- the order itself, written out in exact arithmetic ---------------------------------------------------


_OVERFLOW = Fraction(float(np.finfo(np.float32).max)) + Fraction(2) ** 103  # halfway to 2^128


def _round32(value: Fraction) -> np.float32:
    """``value`` rounded once to float32 (to nearest, ties to even)."""
    if abs(value) >= _OVERFLOW:
        return np.float32(np.inf if value > 0 else -np.inf)
    with np.errstate(over="ignore"):
        guess = np.float32(float(value))
    candidates = [c for c in (np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf)))
                  if np.isfinite(c)]
    best = min(candidates, key=lambda c: (abs(Fraction(float(c)) - value), int(np.array(c).view(np.int32)) & 1))
    return np.float32(best)


def _exact(op, *args) -> np.float32:
    """op on the exact values, rounded once; with an infinity or NaN among them, IEEE's answer."""
    exact = op(*(Fraction(float(a)) for a in args)) if all(np.isfinite(a) for a in args) else None
    if exact is None or exact == 0:  # specials, and the sign of an exact zero: IEEE's (float64 is exact here)
        with np.errstate(all="ignore"):
            return np.float32(op(*(np.float64(a) for a in args)))
    return _round32(exact)


def fma(a, b, c) -> np.float32:
    return _exact(lambda x, y, z: x * y + z, a, b, c)


def mul(a, b) -> np.float32:
    return _exact(lambda x, y: x * y, a, b)


def add(a, b) -> np.float32:
    return _exact(lambda x, y: x + y, a, b)


def div(a, b) -> np.float32:
    return _exact(lambda x, y: x / y, a, b)


def to_f32(i: int) -> np.float32:
    return _round32(Fraction(int(i)))


def hsum8(lanes) -> np.float32:
    r = [add(lanes[i], lanes[i + 4]) for i in range(4)]
    return add(add(r[0], r[2]), add(r[1], r[3]))


def q8_0_activation(x: np.ndarray):
    """quantize_row_q8_0's AVX path in numpy float32: d = f16(amax/127), q = round-half-even(x·(127/amax))."""
    blocks = x.reshape(-1, 32)
    amax = np.abs(blocks).max(axis=1)
    d = (amax / np.float32(127)).astype(np.float16).astype(np.float32)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    q = np.rint(blocks * inv[:, None]).astype(np.int64)
    s = (amax / np.float32(127) * q.sum(axis=1).astype(np.float32)).astype(np.float16).astype(np.float32)
    return q.reshape(-1), d, s


def q8_K_activation(x: np.ndarray):
    """quantize_row_q8_K_ref in numpy float32."""
    q, d = [], []
    for block in x.reshape(-1, 256):
        vmax = block[np.argmax(np.abs(block))]
        iscale = np.float32(-127) / vmax
        q.append(np.minimum(np.rint(iscale * block), 127).astype(np.int64))
        d.append(np.float32(1) / iscale)
    return np.concatenate(q), np.array(d, np.float32)


def test_q8_0_lane_order_in_exact_arithmetic():
    n = 96
    info, raw = weight("Q8_0", 3, n)
    x = activations(2, n)
    w, wd, _ = decode_legacy(raw, 0)
    y = Linear(info)(x)
    for t in range(2):
        q, d, _ = q8_0_activation(x[t])
        for r in range(3):
            lanes = [np.float32(0)] * 8
            for b in range(n // 32):
                scale = mul(wd[r, b], d[b])
                for k in range(8):
                    j = b * 32 + 4 * k
                    lanes[k] = fma(scale, to_f32(int(np.dot(w[r, j:j + 4].astype(np.int64), q[j:j + 4]))), lanes[k])
            assert same_bits(np.float32(y[t, r]), hsum8(lanes))


def test_q4_1_minimum_sum_in_exact_arithmetic():
    n = 96
    info, raw = weight("Q4_1", 2, n)
    x = activations(2, n)
    w, wd, wm = decode_legacy(raw, 3)
    y = Linear(info)(x)
    for t in range(2):
        q, d, s = q8_0_activation(x[t])
        for r in range(2):
            lanes = [np.float32(0)] * 8
            summs = np.float32(0)
            for b in range(n // 32):
                summs = fma(wm[r, b], s[b], summs)
                scale = mul(wd[r, b], d[b])
                for k in range(8):
                    j = b * 32 + 4 * k
                    lanes[k] = fma(scale, to_f32(int(np.dot(w[r, j:j + 4].astype(np.int64), q[j:j + 4]))), lanes[k])
            assert same_bits(np.float32(y[t, r]), add(hsum8(lanes), summs))


def test_q6_K_tiled_order_in_exact_arithmetic():
    n = 512
    info, raw = weight("Q6_K", 2, n)
    x = activations(8, n)
    q6, wd, sc = decode_q6_K(raw)
    y = Linear(info)(x)
    for t in (0, 7):
        q, d = q8_K_activation(x[t])
        for r in range(2):
            acc = np.float32(0)
            for b in range(n // 256):
                total = sum(int(sc[r, b * 16 + g]) * int(np.dot(q6[r, b * 256 + 16 * g:b * 256 + 16 * g + 16].astype(np.int64) - 32,
                                                              q[b * 256 + 16 * g:b * 256 + 16 * g + 16]))
                            for g in range(16))
                acc = fma(mul(to_f32(total), wd[r, b]), d[b], acc)
            assert same_bits(np.float32(y[t, r]), acc)


def test_q4_K_gemm_and_gemv_orders_in_exact_arithmetic():
    n = 512
    info, raw = weight("Q4_K", 8, n)
    x = activations(5, n)  # tokens 0..3: gemm, token 4: gemv
    q4, wd, wdmin, sc, mn = decode_q4_K(raw)
    y = Linear(info)(x)
    for t, per_pair in ((1, True), (4, False)):
        q, d = q8_K_activation(x[t])
        sums = q.reshape(-1, 32).sum(axis=1)
        for r in (0, 5):
            acc = accm = np.float32(0)
            for b in range(n // 256):
                dd, dm = mul(wd[r, b], d[b]), mul(wdmin[r, b], d[b])
                parts = []
                for s in range(b * 8, b * 8 + 8):
                    dot = int(np.dot(q4[r, s * 32:s * 32 + 32].astype(np.int64), q[s * 32:s * 32 + 32]))
                    parts.append((int(sc[r, s]) * dot, int(mn[r, s]) * int(sums[s])))
                steps = [(parts[i][0] + parts[i + 1][0], parts[i][1] + parts[i + 1][1]) for i in range(0, 8, 2)]
                if not per_pair:
                    steps = [(sum(p[0] for p in parts), sum(p[1] for p in parts))]
                for i_sum, m_sum in steps:
                    acc = fma(to_f32(i_sum), dd, acc)
                    accm = fma(to_f32(m_sum), dm, accm)
            assert same_bits(np.float32(y[t, r]), np.float32(acc - accm)), (t, r)


# -- activations -------------------------------------------------------------------------------------------


def test_activation_quantizers_agree_with_numpy_float32_statements():
    x = activations(7, 512)
    x[3] = 0
    x[4, :32] = 0  # an all-zero block: d = 0, q = 0
    q = np.empty(x.shape, np.int8)
    d = np.empty((7, 16), np.float32)
    s = np.empty_like(d)
    quantize_q8_1(x, q, d, s)
    prepared = Activations(x, offset=16, with_sum=True)
    for t in range(7):
        eq, ed, es = q8_0_activation(x[t])
        np.testing.assert_array_equal(q[t], eq)
        np.testing.assert_array_equal(prepared.xq.reshape(7, -1)[t], eq)
        assert same_bits(d[t], ed) and same_bits(prepared.xd.reshape(7, -1)[t], ed)
        assert same_bits(s[t], es) and same_bits(prepared.xs.reshape(7, -1)[t], es)
        lanes = eq.reshape(-1, 4).sum(axis=1)
        np.testing.assert_array_equal(prepared.corr.reshape(7, -1)[t], -16 * lanes)
    q0 = np.empty_like(q)
    d0 = np.empty_like(d)
    quantize_q8_0(x, q0, d0)
    np.testing.assert_array_equal(q0, q)
    np.testing.assert_array_equal(d0, d)
    np.testing.assert_array_equal(q * np.repeat(d, 32, axis=1), round_activations(x, "q8_0"))
    qk = np.empty(x.shape, np.int8)
    dk = np.empty((7, 2), np.float32)
    bs = np.empty((7, 32), np.int32)
    quantize_q8_K(x, qk, dk, bs)
    for t in range(7):
        if not x[t].any():
            assert not qk[t].any() and not dk[t].any()
            continue
        eq, ed = q8_K_activation(x[t])
        np.testing.assert_array_equal(qk[t], eq)
        assert same_bits(dk[t], ed)
        np.testing.assert_array_equal(bs[t], eq.reshape(-1, 16).sum(axis=1))
    np.testing.assert_array_equal(qk * np.repeat(dk, 256, axis=1), round_activations(x, "q8_K"))


def test_dequantized_weights_survive_the_16_row_layout():
    for type_name in EXACT_TYPES:
        n = width(type_name)
        info, raw = weight(type_name, 37, n)
        np.testing.assert_array_equal(Linear(info).dequantized(), dequantize(raw, type_name, (37, n)))


# -- gated activations -------------------------------------------------------------------------------------


def _v_expf(x: np.float32) -> np.float32:
    """ggml_v_expf (AVX-512) for one value, each operation rounded once."""
    h = lambda s: np.float32(float.fromhex(s))  # noqa: E731
    r = h("0x1.8p23")
    z = fma(x, h("0x1.715476p+0"), r)
    n = add(z, -r)
    b = fma(-n, h("0x1.7f7d1cp-20"), fma(-n, h("0x1.62e4p-1"), x))
    u = mul(b, b)
    j = fma(fma(fma(h("0x1.0e4020p-7"), b, h("0x1.573e2ep-5")), u, fma(h("0x1.555e66p-3"), b, h("0x1.fffdb6p-2"))), u,
            fma(h("0x1.ffffecp-1"), b, np.float32(1)))
    if abs(n) > 192:
        return np.float32(0) if n <= 0 else np.float32(np.inf)
    return _exact(lambda a, e: a * Fraction(2) ** int(e), j, n)


def _v_expf_256(x: np.float32) -> np.float32:
    """ggml_v_expf (AVX2 + FMA) for one value, each operation rounded once, integers wrapping as int32."""
    h = lambda s: np.float32(float.fromhex(s))  # noqa: E731
    bits = lambda f: int(np.array(f, np.float32).view(np.int32))  # noqa: E731
    flt = lambda i: np.array((i + (1 << 31)) % (1 << 32) - (1 << 31), np.int64).astype(np.int32).view(np.float32)[()]  # noqa: E731
    r = h("0x1.8p23")
    z = fma(x, h("0x1.715476p+0"), r)
    n = add(z, -r)
    b = fma(-n, h("0x1.7f7d1cp-20"), fma(-n, h("0x1.62e4p-1"), x))
    e = bits(z) << 23
    k = flt(e + 0x3F800000)
    u = mul(b, b)
    j = fma(fma(fma(h("0x1.0e4020p-7"), b, h("0x1.573e2ep-5")), u, fma(h("0x1.555e66p-3"), b, h("0x1.fffdb6p-2"))), u,
            mul(h("0x1.ffffecp-1"), b))
    if abs(n) <= 126:
        return fma(k, j, k)
    g = -2113929216 if n <= 0 else 0
    s1, s2 = flt(g + 0x7F000000), flt(e - g)
    if abs(n) > 192:
        return mul(s1, s1)
    return mul(fma(s2, j, s2), s1)


def test_swiglu_is_ggml_vec_swiglu_f32():
    rng = np.random.default_rng(3)
    gate = np.concatenate([rng.standard_normal(40) * s for s in (0.5, 4, 30)] +
                          [[0.0, -0.0, 87.5, -87.5, 95.0, -95.0, 104.0, -104.0, 130.0, -130.0, 1e-20]]).astype(np.float32)
    gate = np.concatenate([gate, rng.standard_normal(16 * 9 - len(gate) + 5).astype(np.float32)])  # + a 5-value tail
    gate = np.concatenate([gate, np.float32([100.0, -100.0, 120.0, 126.5, -126.5, 127.2, -127.2, 180.0, -180.0, 193.0,
                                             -193.0, 150.0, -150.0])])
    up = rng.standard_normal(gate.shape).astype(np.float32)
    out = np.empty_like(gate)
    swiglu_rows(np.concatenate([gate, up])[None, :], len(gate), out[None, :])
    epr = family.EPR  # the build's register: 16 values on AVX-512, 8 on AVX2, each with its own exp
    v_expf = _v_expf if epr == 16 else _v_expf_256
    vector_end = len(gate) - len(gate) % epr
    for i in range(vector_end):
        g = gate[i]
        silu = div(g, add(np.float32(1), v_expf(np.float32(-g))))
        assert same_bits(out[i], mul(silu, up[i])), i
    with np.errstate(over="ignore"):  # exp(193) is infinite: silu is then -0, as in ggml
        tail = gate[vector_end:] / (np.float32(1) + np.exp(-gate[vector_end:])) * up[vector_end:]
    np.testing.assert_allclose(out[vector_end:], tail, rtol=1e-6)
    # several rows take the parallel loop, one row the calling thread: the same bits either way
    rows = np.stack([np.concatenate([gate, up])] * 3 + [np.concatenate([up, gate])])
    many = np.empty((4, len(gate)), np.float32)
    swiglu_rows(rows, len(gate), many)
    for r in range(3):
        np.testing.assert_array_equal(many[r].view(np.uint32), out.view(np.uint32))


@pytest.mark.skipif(ctypes.util.find_library("m") is None, reason="needs the C library's tanhf")
def test_gelu_table_is_ggmls():
    """ggml_table_gelu_f16[i] = f16((0.5·x)·(1 + tanhf((c·x)·fma(a·x, x, 1)))), with libm's tanhf."""
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    libm.tanhf.restype = ctypes.c_float
    libm.tanhf.argtypes = [ctypes.c_float]
    table = gelu_f16_table()
    a, c = np.float32(0.044715), np.float32(0.7978845608028654)
    for bits in list(range(0, 65536, 997)) + [0x3C00, 0xBC00, 0x4900, 0xC900]:
        x = np.array(bits, np.uint16).view(np.float16).astype(np.float32)
        if not np.isfinite(x):
            continue
        inner = mul(mul(c, x), fma(mul(a, x), x, np.float32(1)))
        y = mul(mul(np.float32(0.5), x), add(np.float32(1), np.float32(libm.tanhf(float(inner)))))
        assert table[bits] == np.array(np.float16(y)).view(np.uint16), hex(bits)
    gate = np.array([[-12.0, -10.0, -0.5, 0.0, 0.7, 9.99, 10.0, 25.0]], np.float32)
    up = np.full_like(gate, -2.0)
    out = np.empty_like(gate)
    geglu_rows(np.concatenate([gate, up], axis=1), gate.shape[1], out)
    lookup = table[gate.astype(np.float16).view(np.uint16)].view(np.float16).astype(np.float32)
    expected = np.where(gate <= -10, np.float32(0), np.where(gate >= 10, gate * up, lookup * up))
    assert same_bits(out, expected.astype(np.float32))
    assert np.signbit(out[0, 0]) == np.False_  # ggml writes +0, not 0·up



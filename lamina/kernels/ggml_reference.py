"""ggml's matrix-product arithmetic, written out one output value at a time.

llama.cpp (x86, AVX-512 + VNNI build) does not compute ``x @ W.T`` in one way: each weight
type and batch size picks a kernel, and each kernel sums its float32 partial results in its
own order. The integer parts (8-bit activations times the weight's small integers) are exact
whatever the order; the float parts are not, so matching llama.cpp bit for bit means
repeating, per output value, the same float operations in the same order. These scalar
functions state that order plainly; the fast kernels in :mod:`.legacy` and :mod:`.kquants`
must give the same bits, and the tests hold them to it.

The kernels, by weight type (activations quantized as in :mod:`.activations`):

* Q8_0, Q5_0, Q4_0 with Q8_0 activations — ``ggml_vec_dot_*_q8_0`` (one token) and
  llamafile's ``tinyBLAS_Q0_AVX`` (two or more) do the same thing: eight float lanes, lane k
  of each 32-value block adds ``fma(d_w·d_x, float(Σ of the 4 products 4k..4k+3), lane)``,
  then ``hsum_float_8`` adds the lanes as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
  Q4_0 weights with a row count divisible by 8 are repacked (q4_0_8x8) and take one step per
  block instead: ``acc = fma(float(Σ of 32 products), d_w·d_x, acc)``.
* Q4_1 and Q5_1 with Q8_1 activations — ``ggml_vec_dot_q4_1_q8_1`` / ``_q5_1_q8_1`` for every
  batch size: the same lanes over the unsigned values, plus a separate running
  ``fma(m, s, summs)`` over the blocks (``s`` is the Q8_1 block's f16 ``d·Σq``), added after
  the lane sum.
* Q6_K with Q8_K activations — fewer than 8 tokens: ``ggml_vec_dot_q6_K_q8_K``: per 256-value
  block eight integer lanes (lane k: bytes 4k..4k+3 of each 32-value run, scaled by their
  16-value sub-block's scale, minus 32·(bsum·scale) of sub-blocks 2k and 2k+1), each added
  as ``fma(d_x·d_w, float(lane), acc)``, then ``hsum_float_8``. 8 tokens or more: the tiled
  kernel (ggml-cpu/tiled): per block the exact integer ``S = Σ scale·Σ(q-32)·x``, then
  ``acc = fma(float(S)·d_w, d_x, acc)``.
* Q4_K with Q8_K activations, row count divisible by 8 (repacked to q4_K_8x8): tokens in
  groups of four go through ``ggml_gemm_q4_K_8x8_q8_K`` (per 64 values: ``acc = fma(float(I),
  d_w·d_x, acc)`` and ``accm = fma(float(M), dmin_w·d_x, accm)``, result ``acc - accm``), the
  last ``N % 4`` tokens through ``ggml_gemv_q4_K_8x8_q8_K`` (the same per whole 256-value
  block). Other row counts: ``ggml_vec_dot_q4_K_q8_K`` below 8 tokens (lanes, plus four
  minimum lanes), the tiled kernel from 8 on.
* Q3_K with Q8_K activations: ``ggml_vec_dot_q3_K_q8_K`` below 8 tokens (Q6_K's lanes, over
  values -4..3 with 6-bit scales minus 32), the tiled kernel (Q6_K's) from 8 on.
* Q5_K with Q8_K activations (never repacked on x86): ``ggml_vec_dot_q5_K_q8_K`` below 8 tokens
  (Q4_K's eight lanes over the 5-bit values; the minimums as one scalar
  ``summs = fma(-d_x·dmin_w, float(Σ m·s), summs)``, added after the lane sum), the tiled kernel
  (Q4_K's) from 8 on.

* F16 and F32 weights: the activation rounded to float16 for F16; llamafile's tinyBLAS (one
  16-lane accumulator per output over steps of 16, then ``_mm512_reduce_add_ps``) from 2 tokens
  for weights of a multiple of 4 rows and 16 columns, else ``ggml_vec_dot_f16``/``_f32`` (four
  accumulators over steps of 64; leftovers in double for F16; for F32 as GCC compiles ggml's
  ``sumf += x[i]*y[i]`` loop for AVX-512: products of 16, then of 8, rounded and added in order,
  the last seven or fewer with FMAs — checked against the reference build's ggml_vec_dot_f32).
  These are the only products whose order depends on the build: llama.cpp built for AVX2 uses
  8-lane registers there (tinyBLAS over steps of 8 with ``hsum_float_8``, vec_dot over steps of
  32 with GGML_F32x8_REDUCE, F32 leftovers by 8 then 4); every quantized type above is summed the
  same way by both builds (the same ``__m256`` code). :func:`ref_float` takes the register width.

``I`` and ``S`` are integers that can exceed 2^24, so their conversion to float32 rounds;
everything here converts int32 to float32 exactly as the hardware does (round to nearest).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from lamina.quants.common import fp16_to_fp32

from .common import EPR, F32, fma32, hsum_float_8, reduce_add_ps

# -- weights decoded to integers and float scales (one row per weight row) ----------------------


@njit(cache=True, error_model="numpy")
def _f16(raw, r, o):
    return fp16_to_fp32(np.int64(raw[r, o]) | (np.int64(raw[r, o + 1]) << 8))


@njit(cache=True, error_model="numpy")
def decode_legacy(raw, kind):
    """Q8_0 / Q5_0 / Q4_0 / Q4_1 / Q5_1 rows as (values int16 (rows, n), d, m) with values as the dot
    product sees them: signed for Q8_0 (q), Q5_0 (q-16), Q4_0 (q-8); unsigned for Q4_1 and Q5_1."""
    size = (34, 22, 18, 20, 24)[kind]
    rows = raw.shape[0]
    nb = raw.shape[1] // size
    w = np.empty((rows, nb * 32), np.int16)
    d = np.empty((rows, nb), np.float32)
    m = np.zeros((rows, nb), np.float32)
    for r in range(rows):
        for b in range(nb):
            o = b * size
            d[r, b] = _f16(raw, r, o)
            if kind == 0:
                for j in range(32):
                    w[r, b * 32 + j] = np.int16(np.int8(raw[r, o + 2 + j]))
            elif kind == 1 or kind == 4:
                h0 = 2 if kind == 1 else 4
                if kind == 4:
                    m[r, b] = _f16(raw, r, o + 2)
                qh = (np.int64(raw[r, o + h0]) | (np.int64(raw[r, o + h0 + 1]) << 8)
                      | (np.int64(raw[r, o + h0 + 2]) << 16) | (np.int64(raw[r, o + h0 + 3]) << 24))
                off = 16 if kind == 1 else 0
                for j in range(16):
                    q = np.int64(raw[r, o + h0 + 4 + j])
                    w[r, b * 32 + j] = ((q & 15) | (((qh >> j) & 1) << 4)) - off
                    w[r, b * 32 + 16 + j] = ((q >> 4) | (((qh >> (j + 16)) & 1) << 4)) - off
            else:
                qo = 2 if kind == 2 else 4
                if kind == 3:
                    m[r, b] = _f16(raw, r, o + 2)
                off = 8 if kind == 2 else 0
                for j in range(16):
                    q = np.int64(raw[r, o + qo + j])
                    w[r, b * 32 + j] = (q & 15) - off
                    w[r, b * 32 + 16 + j] = (q >> 4) - off
    return w, d, m


LEGACY_KIND = {"Q8_0": 0, "Q5_0": 1, "Q4_0": 2, "Q4_1": 3, "Q5_1": 4}


@njit(cache=True, error_model="numpy")
def _scale_min_k4(raw, r, o, j):
    if j < 4:
        return np.int64(raw[r, o + j]) & 63, np.int64(raw[r, o + j + 4]) & 63
    s = (np.int64(raw[r, o + j + 4]) & 0xF) | ((np.int64(raw[r, o + j - 4]) >> 6) << 4)
    m = (np.int64(raw[r, o + j + 4]) >> 4) | ((np.int64(raw[r, o + j]) >> 6) << 4)
    return s, m


@njit(cache=True, error_model="numpy")
def _decode_k4(raw, block, qs_at, qh_at):
    """Q4_K/Q5_K rows: values (rows, n), d and dmin per 256 values, 6-bit scales and mins per 32.
    With ``qh_at`` >= 0 (Q5_K) each nibble gets its fifth bit: bit 2c of ``qh[l]`` for the low
    nibbles of 64-value chunk c, bit 2c+1 for the high ones."""
    rows = raw.shape[0]
    nb = raw.shape[1] // block
    q = np.empty((rows, nb * 256), np.int16)
    d = np.empty((rows, nb), np.float32)
    dmin = np.empty((rows, nb), np.float32)
    sc = np.empty((rows, nb * 8), np.int16)
    mn = np.empty((rows, nb * 8), np.int16)
    for r in range(rows):
        for b in range(nb):
            o = b * block
            d[r, b] = _f16(raw, r, o)
            dmin[r, b] = _f16(raw, r, o + 2)
            for j in range(8):
                s, m = _scale_min_k4(raw, r, o + 4, j)
                sc[r, b * 8 + j] = s
                mn[r, b * 8 + j] = m
            for c in range(4):
                for l in range(32):
                    v = np.int64(raw[r, o + qs_at + c * 32 + l])
                    h = np.int64(raw[r, o + qh_at + l]) if qh_at >= 0 else np.int64(0)
                    q[r, b * 256 + c * 64 + l] = (v & 15) | (((h >> (2 * c)) & 1) << 4)
                    q[r, b * 256 + c * 64 + 32 + l] = (v >> 4) | (((h >> (2 * c + 1)) & 1) << 4)
    return q, d, dmin, sc, mn


def decode_q4_K(raw):
    return _decode_k4(raw, 144, 16, -1)


def decode_q5_K(raw):
    return _decode_k4(raw, 176, 48, 16)


@njit(cache=True, error_model="numpy")
def decode_q3_K(raw):
    """Q3_K rows: signed values -4..3 (rows, n) (two low bits, minus 4 unless the high bit is set),
    d per 256 values, scales per 16 (6 bits, minus 32)."""
    rows = raw.shape[0]
    nb = raw.shape[1] // 110
    q = np.empty((rows, nb * 256), np.int16)
    d = np.empty((rows, nb), np.float32)
    sc = np.empty((rows, nb * 16), np.int16)
    for r in range(rows):
        for b in range(nb):
            o = b * 110
            d[r, b] = _f16(raw, r, o + 108)
            for i in range(4):
                b0 = np.int64(raw[r, o + 96 + i])
                b1 = np.int64(raw[r, o + 100 + i])
                top = np.int64(raw[r, o + 104 + i])
                sc[r, b * 16 + i] = ((b0 & 15) | ((top & 3) << 4)) - 32
                sc[r, b * 16 + 4 + i] = ((b1 & 15) | (((top >> 2) & 3) << 4)) - 32
                sc[r, b * 16 + 8 + i] = ((b0 >> 4) | (((top >> 4) & 3) << 4)) - 32
                sc[r, b * 16 + 12 + i] = ((b1 >> 4) | (((top >> 6) & 3) << 4)) - 32
            for j in range(2):
                for si in range(4):
                    for l in range(32):
                        low = (np.int64(raw[r, o + 32 + 32 * j + l]) >> (2 * si)) & 3
                        high = (np.int64(raw[r, o + l]) >> (4 * j + si)) & 1
                        q[r, b * 256 + 128 * j + 32 * si + l] = low - (0 if high else 4)
    return q, d, sc


@njit(cache=True, error_model="numpy")
def decode_q6_K(raw):
    """Q6_K rows: unsigned 6-bit values (rows, n), d per 256 values, signed scales per 16."""
    rows = raw.shape[0]
    nb = raw.shape[1] // 210
    q = np.empty((rows, nb * 256), np.int16)
    d = np.empty((rows, nb), np.float32)
    sc = np.empty((rows, nb * 16), np.int16)
    for r in range(rows):
        for b in range(nb):
            o = b * 210
            d[r, b] = _f16(raw, r, o + 208)
            for j in range(16):
                sc[r, b * 16 + j] = np.int8(raw[r, o + 192 + j])
            for h in range(2):
                for l in range(32):
                    a = np.int64(raw[r, o + 64 * h + l])
                    c = np.int64(raw[r, o + 64 * h + l + 32])
                    hb = np.int64(raw[r, o + 128 + 32 * h + l])
                    base = b * 256 + 128 * h + l
                    q[r, base] = (a & 15) | ((hb & 3) << 4)
                    q[r, base + 32] = (c & 15) | (((hb >> 2) & 3) << 4)
                    q[r, base + 64] = (a >> 4) | (((hb >> 4) & 3) << 4)
                    q[r, base + 96] = (c >> 4) | (((hb >> 6) & 3) << 4)
    return q, d, sc


# -- the per-kernel arithmetic ----------------------------------------------------------------


@njit(cache=True, inline="always", error_model="numpy")
def hsum8(a):
    """hsum_float_8: (a0+a4, a1+a5, a2+a6, a3+a7) folded as (r0+r2) + (r1+r3)."""
    r0 = a[0] + a[4]
    r1 = a[1] + a[5]
    r2 = a[2] + a[6]
    r3 = a[3] + a[7]
    return (r0 + r2) + (r1 + r3)


@njit(cache=True, error_model="numpy")
def ref_lanes_q8_0(w, wd, xq, xd, out):
    """Q8_0 / Q5_0 / Q4_0 weight ``w`` (signed values) times Q8_0 activations: out (N, rows)."""
    rows, n = w.shape
    acc = np.zeros(8, np.float32)
    for t in range(xq.shape[0]):
        for r in range(rows):
            acc[:] = 0
            for b in range(n // 32):
                d = wd[r, b] * xd[t, b]
                for k in range(8):
                    s = 0
                    for i in range(4):
                        j = b * 32 + 4 * k + i
                        s += np.int32(w[r, j]) * np.int32(xq[t, j])
                    acc[k] = fma32(d, F32(s), acc[k])
            out[t, r] = hsum8(acc)


@njit(cache=True, error_model="numpy")
def ref_blocks_q8_0(w, wd, xq, xd, out):
    """Q4_0 weights repacked by ggml (q4_0_8x8 gemm and gemv alike): one float step per block,
    ``acc = fma(float(Σ of the 32 products), d_w·d_x, acc)``."""
    rows, n = w.shape
    for t in range(xq.shape[0]):
        for r in range(rows):
            acc = F32(0)
            for b in range(n // 32):
                s = 0
                for j in range(b * 32, b * 32 + 32):
                    s += np.int32(w[r, j]) * np.int32(xq[t, j])
                acc = fma32(F32(s), wd[r, b] * xd[t, b], acc)
            out[t, r] = acc


@njit(cache=True, error_model="numpy")
def ref_q4_1(w, wd, wm, xq, xd, xs, out):
    """Q4_1 / Q5_1 (unsigned values ``w``, scale, minimum) times Q8_1 activations (``xs``: the blocks'
    f16 sums)."""
    rows, n = w.shape
    acc = np.zeros(8, np.float32)
    for t in range(xq.shape[0]):
        for r in range(rows):
            acc[:] = 0
            summs = F32(0)
            for b in range(n // 32):
                summs = fma32(wm[r, b], xs[t, b], summs)
                d = wd[r, b] * xd[t, b]
                for k in range(8):
                    s = 0
                    for i in range(4):
                        j = b * 32 + 4 * k + i
                        s += np.int32(w[r, j]) * np.int32(xq[t, j])
                    acc[k] = fma32(d, F32(s), acc[k])
            out[t, r] = hsum8(acc) + summs


@njit(cache=True, error_model="numpy")
def ref_q6_K_vec(q, wd, sc, xq, xd, bsums, out, offset=32):
    """ggml_vec_dot_q6_K_q8_K (fewer than 8 tokens): lanes over the unsigned values ``q``, each less
    ``offset``·(bsum·scale) of its two sub-blocks. Q3_K's vec_dot is the same over values already
    signed (``offset`` 0: ggml subtracts its 4 per value, which no lane grouping changes)."""
    rows, n = q.shape
    acc = np.zeros(8, np.float32)
    for t in range(xq.shape[0]):
        for r in range(rows):
            acc[:] = 0
            for b in range(n // 256):
                d = xd[t, b] * wd[r, b]
                for k in range(8):
                    s = 0
                    for v in range(8):
                        scale = np.int32(sc[r, b * 16 + 2 * v + (1 if k >= 4 else 0)])
                        p = 0
                        for i in range(4):
                            j = b * 256 + 32 * v + 4 * k + i
                            p += np.int32(q[r, j]) * np.int32(xq[t, j])
                        s += scale * p
                    bias = (np.int32(bsums[t, b * 16 + 2 * k]) * np.int32(sc[r, b * 16 + 2 * k])
                            + np.int32(bsums[t, b * 16 + 2 * k + 1]) * np.int32(sc[r, b * 16 + 2 * k + 1]))
                    s -= offset * bias
                    acc[k] = fma32(d, F32(s), acc[k])
            out[t, r] = hsum8(acc)


@njit(cache=True, error_model="numpy")
def ref_q6_K_tiled(q, wd, sc, xq, xd, out, offset=32):
    """The tiled kernel for Q6_K (values ``q - 32``) and Q3_K (``q`` signed already, ``offset`` 0),
    8 tokens or more."""
    rows, n = q.shape
    for t in range(xq.shape[0]):
        for r in range(rows):
            acc = F32(0)
            for b in range(n // 256):
                s = 0
                for g in range(16):
                    p = 0
                    for i in range(16):
                        j = b * 256 + 16 * g + i
                        p += (np.int32(q[r, j]) - offset) * np.int32(xq[t, j])
                    s += np.int32(sc[r, b * 16 + g]) * p
                acc = fma32(F32(s) * wd[r, b], xd[t, b], acc)
            out[t, r] = acc


@njit(cache=True, inline="always", error_model="numpy")
def _k4_sub(q, xq, r, t, j0):
    p = 0
    for i in range(32):
        p += np.int32(q[r, j0 + i]) * np.int32(xq[t, j0 + i])
    return p


@njit(cache=True, error_model="numpy")
def ref_q4_K_repacked(q, wd, wdmin, sc, mn, xq, xd, bsums, per_pair, out):
    """q4_K_8x8 repack: ``per_pair`` = the gemm (a float step per 64 values), else the gemv (per 256)."""
    rows, n = q.shape
    for t in range(xq.shape[0]):
        for r in range(rows):
            acc = F32(0)
            accm = F32(0)
            for b in range(n // 256):
                dd = wd[r, b] * xd[t, b]
                dm = wdmin[r, b] * xd[t, b]
                it = 0
                mt = 0
                for p in range(4):
                    i = 0
                    m = 0
                    for h in range(2):
                        s = b * 8 + 2 * p + h
                        i += np.int32(sc[r, s]) * _k4_sub(q, xq, r, t, s * 32)
                        m += np.int32(mn[r, s]) * (np.int32(bsums[t, 2 * s]) + np.int32(bsums[t, 2 * s + 1]))
                    if per_pair:
                        acc = fma32(F32(i), dd, acc)
                        accm = fma32(F32(m), dm, accm)
                    it += i
                    mt += m
                if not per_pair:
                    acc = fma32(F32(it), dd, acc)
                    accm = fma32(F32(mt), dm, accm)
            out[t, r] = acc - accm


@njit(cache=True, error_model="numpy")
def ref_q4_K_vec(q, wd, wdmin, sc, mn, xq, xd, bsums, out):
    """ggml_vec_dot_q4_K_q8_K (row counts not divisible by 8, fewer than 8 tokens)."""
    rows, n = q.shape
    acc = np.zeros(8, np.float32)
    accm = np.zeros(4, np.float32)
    for t in range(xq.shape[0]):
        for r in range(rows):
            acc[:] = 0
            accm[:] = 0
            for b in range(n // 256):
                d = xd[t, b] * wd[r, b]
                dmin = -xd[t, b] * wdmin[r, b]
                for i in range(4):
                    s0 = b * 8 + 2 * i
                    prod = (np.int32(mn[r, s0]) * (np.int32(bsums[t, 2 * s0]) + np.int32(bsums[t, 2 * s0 + 1]))
                            + np.int32(mn[r, s0 + 1]) * (np.int32(bsums[t, 2 * s0 + 2]) + np.int32(bsums[t, 2 * s0 + 3])))
                    accm[i] = fma32(dmin, F32(prod), accm[i])
                for k in range(8):
                    s = 0
                    for c in range(4):
                        for h in range(2):
                            sub = b * 8 + 2 * c + h
                            p = 0
                            for i in range(4):
                                j = sub * 32 + 4 * k + i
                                p += np.int32(q[r, j]) * np.int32(xq[t, j])
                            s += np.int32(sc[r, sub]) * p
                    acc[k] = fma32(d, F32(s), acc[k])
            out[t, r] = hsum8(acc) + ((accm[0] + accm[2]) + (accm[1] + accm[3]))


@njit(cache=True, error_model="numpy")
def ref_q5_K_vec(q, wd, wdmin, sc, mn, xq, xd, bsums, out):
    """ggml_vec_dot_q5_K_q8_K (fewer than 8 tokens): the lanes as Q4_K's, the minimums as one
    running scalar (``summs += dmin * sum``, contracted to an FMA by GCC)."""
    rows, n = q.shape
    acc = np.zeros(8, np.float32)
    for t in range(xq.shape[0]):
        for r in range(rows):
            acc[:] = 0
            summs = F32(0)
            for b in range(n // 256):
                d = xd[t, b] * wd[r, b]
                dmin = -xd[t, b] * wdmin[r, b]
                msum = 0
                for s in range(b * 8, b * 8 + 8):
                    msum += np.int32(mn[r, s]) * (np.int32(bsums[t, 2 * s]) + np.int32(bsums[t, 2 * s + 1]))
                summs = fma32(dmin, F32(msum), summs)
                for k in range(8):
                    lane = 0
                    for sub in range(b * 8, b * 8 + 8):
                        p = 0
                        for i in range(4):
                            j = sub * 32 + 4 * k + i
                            p += np.int32(q[r, j]) * np.int32(xq[t, j])
                        lane += np.int32(sc[r, sub]) * p
                    acc[k] = fma32(d, F32(lane), acc[k])
            out[t, r] = hsum8(acc) + summs


@njit(cache=True, error_model="numpy")
def ref_q4_K_tiled(q, wd, wdmin, sc, mn, xq, xd, bsums, out):
    """The tiled kernel for Q4_K weights that ggml does not repack (8 tokens or more)."""
    rows, n = q.shape
    for t in range(xq.shape[0]):
        for r in range(rows):
            acc = F32(0)
            for b in range(n // 256):
                s1 = 0
                s2 = 0
                for s in range(b * 8, b * 8 + 8):
                    s1 += np.int32(sc[r, s]) * _k4_sub(q, xq, r, t, s * 32)
                    s2 += np.int32(mn[r, s]) * (np.int32(bsums[t, 2 * s]) + np.int32(bsums[t, 2 * s + 1]))
                res = fma32(-wdmin[r, b], F32(s2), F32(s1) * wd[r, b])
                acc = fma32(res, xd[t, b], acc)
            out[t, r] = acc


@njit(cache=True, error_model="numpy")
def ref_float(w, x, tiny, half, epr, out):
    """F16 (``half``: ``w`` and ``x`` as float32 values of float16s) or F32 weights, as llama.cpp built
    for a register of ``epr`` floats (16: AVX-512, 8: AVX2) computes them: llamafile's tinyBLAS
    (``tiny``: one register-wide accumulator over steps of a register, then that register's
    horizontal sum) or ggml_vec_dot_f16/_f32 (four accumulators over steps of 4·epr, folded
    (a0+a2)+(a1+a3) and reduced; leftovers in double for F16; for F32 as GCC compiles the leftover
    loop: on AVX-512 16 and then 8 rounded products at a time added in order, on AVX2 8 and then 4,
    the last few with FMAs)."""
    rows, n = w.shape
    acc = np.zeros(4 * epr, np.float32)
    step = 4 * epr
    for t in range(x.shape[0]):
        for r in range(rows):
            acc[:] = 0
            if tiny:
                for i in range(0, n, epr):
                    for lane in range(epr):
                        acc[lane] = fma32(w[r, i + lane], x[t, i + lane], acc[lane])
                out[t, r] = reduce_add_ps(acc, 0) if epr == 16 else hsum_float_8(acc, 0)
                continue
            main = n - n % step
            for i in range(0, main, step):
                for lane in range(step):
                    acc[lane] = fma32(w[r, i + lane], x[t, i + lane], acc[lane])
            folded = (acc[0:epr] + acc[2 * epr:3 * epr]) + (acc[epr:2 * epr] + acc[3 * epr:4 * epr])
            if epr == 16:
                total = reduce_add_ps(folded, 0)
            else:  # GGML_F32x8_REDUCE: 128-bit halves added, then two horizontal adds
                total = ((folded[0] + folded[4]) + (folded[1] + folded[5])) + \
                    ((folded[2] + folded[6]) + (folded[3] + folded[7]))
            if half:
                s = np.float64(total)
                for i in range(main, n):
                    s += np.float64(w[r, i] * x[t, i])
                out[t, r] = F32(s)
            else:
                i = main
                while n - i >= epr:
                    for j in range(i, i + epr):
                        total = F32(total + F32(w[r, j] * x[t, j]))
                    i += epr
                if n - i >= epr // 2:
                    for j in range(i, i + epr // 2):
                        total = F32(total + F32(w[r, j] * x[t, j]))
                    i += epr // 2
                for j in range(i, n):
                    total = fma32(w[r, j], x[t, j], total)
                out[t, r] = total


# -- a whole product as llama.cpp's CPU backend would compute it ----------------------------------

TILED_MIN_TOKENS = 8  # ggml_tiled_min_batch
REPACK_GROUP = 4      # repacked gemm takes tokens four at a time, the rest go through the gemv


def reference_matmul(type_name: str, raw: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``x @ W.T`` for weight blocks ``raw`` (rows, row bytes) of ``type_name``, with the kernel and
    the float order llama.cpp uses for ``len(x)`` tokens in one call. Slow; for tests."""
    from .activations import quantize_q8_0, quantize_q8_1, quantize_q8_K

    x = np.ascontiguousarray(x, np.float32)
    n_tok, n = x.shape
    rows = raw.shape[0]
    out = np.empty((n_tok, rows), np.float32)
    if type_name in ("F16", "F32"):
        half = type_name == "F16"
        w = np.ascontiguousarray(raw).view(np.float16 if half else np.float32).reshape(rows, n).astype(np.float32)
        ref_float(w, x.astype(np.float16).astype(np.float32) if half else x,
                  n_tok >= 2 and rows % 4 == 0 and n % EPR == 0, half, EPR, out)
        return out
    xq = np.empty((n_tok, n), np.int8)
    if type_name in LEGACY_KIND:
        w, wd, wm = decode_legacy(raw, LEGACY_KIND[type_name])
        xd = np.empty((n_tok, n // 32), np.float32)
        if type_name in ("Q4_1", "Q5_1"):
            xs = np.empty_like(xd)
            quantize_q8_1(x, xq, xd, xs)
            ref_q4_1(w, wd, wm, xq, xd, xs, out)
        elif type_name == "Q4_0" and rows % 8 == 0:
            quantize_q8_0(x, xq, xd)
            ref_blocks_q8_0(w, wd, xq, xd, out)
        else:
            quantize_q8_0(x, xq, xd)
            ref_lanes_q8_0(w, wd, xq, xd, out)
        return out
    xd = np.empty((n_tok, n // 256), np.float32)
    bsums = np.empty((n_tok, n // 16), np.int32)
    quantize_q8_K(x, xq, xd, bsums)
    if type_name == "Q6_K":
        q, wd, sc = decode_q6_K(raw)
        (ref_q6_K_tiled(q, wd, sc, xq, xd, out) if n_tok >= TILED_MIN_TOKENS
         else ref_q6_K_vec(q, wd, sc, xq, xd, bsums, out))
        return out
    if type_name == "Q3_K":
        q, wd, sc = decode_q3_K(raw)
        (ref_q6_K_tiled(q, wd, sc, xq, xd, out, 0) if n_tok >= TILED_MIN_TOKENS
         else ref_q6_K_vec(q, wd, sc, xq, xd, bsums, out, 0))
        return out
    if type_name == "Q4_K":
        q, wd, wdmin, sc, mn = decode_q4_K(raw)
        if rows % 8 == 0:
            split = n_tok - n_tok % REPACK_GROUP
            ref_q4_K_repacked(q, wd, wdmin, sc, mn, xq[:split], xd[:split], bsums[:split], True, out[:split])
            ref_q4_K_repacked(q, wd, wdmin, sc, mn, xq[split:], xd[split:], bsums[split:], False, out[split:])
        elif n_tok >= TILED_MIN_TOKENS:
            ref_q4_K_tiled(q, wd, wdmin, sc, mn, xq, xd, bsums, out)
        else:
            ref_q4_K_vec(q, wd, wdmin, sc, mn, xq, xd, bsums, out)
        return out
    if type_name == "Q5_K":
        q, wd, wdmin, sc, mn = decode_q5_K(raw)
        (ref_q4_K_tiled(q, wd, wdmin, sc, mn, xq, xd, bsums, out) if n_tok >= TILED_MIN_TOKENS
         else ref_q5_K_vec(q, wd, wdmin, sc, mn, xq, xd, bsums, out))
        return out
    raise ValueError(f"no reference for {type_name}")

"""Causal grouped-query attention over one sequence's float16 key/value cache.

Computed the way ggml's CPU flash attention computes it — the path llama.cpp takes by
default — operation for operation, so the result matches llama.cpp's to the bit:

* batches of fewer than 64 queries (generation, short prompts) take ggml's per-query kernel:
  the query rounded to float16, an online softmax over the keys in cache order, the weighted
  values accumulated in a float16 buffer;
* larger batches take ggml's tiled kernel: float32 queries, keys and values in tiles of 64,
  a per-tile softmax with ggml's vectorized exp, float32 accumulation.

(llama.cpp splits a single query's keys between threads once the cache holds 512 or more;
lamina keeps the per-query kernel there, which differs from it only in the last bits.)
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from lamina.quants.common import bits_f32

from .common import F32, fma32
from .elementwise import f2h_round, h2f

TILE = 64  # GGML_FA_TILE_Q and GGML_FA_TILE_KV

_LOG2E = F32(float.fromhex("0x1.715476p+0"))
_LN2_HI = F32(float.fromhex("0x1.62e4p-1"))
_LN2_LO = F32(float.fromhex("0x1.7f7d1cp-20"))
_C5 = F32(float.fromhex("0x1.0e4020p-7"))
_C4 = F32(float.fromhex("0x1.573e2ep-5"))
_C3 = F32(float.fromhex("0x1.555e66p-3"))
_C2 = F32(float.fromhex("0x1.fffdb6p-2"))
_C1 = F32(float.fromhex("0x1.ffffecp-1"))
_SHIFT = F32(float.fromhex("0x1.8p23"))


@njit(cache=True, inline="always", error_model="numpy")
def v_expf(x):
    """ggml_v_expf (the AVX-512 version): exp through a degree-5 polynomial, as its softmax uses."""
    z = fma32(x, _LOG2E, _SHIFT)
    n = z - _SHIFT
    b = fma32(-n, _LN2_LO, fma32(-n, _LN2_HI, x))
    if abs(n) > 192 or n != n:
        return F32(0.0) if n <= 0 else F32(np.inf)
    u = b * b
    j = fma32(fma32(fma32(_C5, b, _C4), u, fma32(_C3, b, _C2)), u, fma32(_C1, b, F32(1.0)))
    e = np.int32(n)
    if e > 127:
        return j * bits_f32(np.int32(254) << 23) * bits_f32((e - 127 + 127) << 23)
    if e < -126:
        return j * bits_f32(np.int32(1) << 23) * bits_f32((e + 126 + 127) << 23)
    return j * bits_f32((e + 127) << 23)


@njit(cache=True, inline="always", error_model="numpy")
def _reduce16(v, o):
    """_mm512_reduce_add_ps of v[o:o+16], in GCC's order."""
    t0 = (v[o + 8] + v[o]) + (v[o + 12] + v[o + 4])
    t1 = (v[o + 9] + v[o + 1]) + (v[o + 13] + v[o + 5])
    t2 = (v[o + 10] + v[o + 2]) + (v[o + 14] + v[o + 6])
    t3 = (v[o + 11] + v[o + 3]) + (v[o + 15] + v[o + 7])
    return (t0 + t2) + (t1 + t3)


@njit(cache=True, inline="always", error_model="numpy")
def _dot_f16(qq, key_bits, kh, j, lanes):
    """ggml_vec_dot_f16 as built for AVX-512: four 16-lane accumulators over steps of 64, summed
    in the fixed order of GGML_F32x16_REDUCE and _mm512_reduce_add_ps, leftovers added in double."""
    d_k = qq.shape[0]
    main = d_k - d_k % 64
    for i in range(64):
        lanes[i] = 0
    for i in range(0, main, 64):
        for a in range(64):
            lanes[a] = fma32(qq[i + a], h2f(key_bits[kh, j, i + a]), lanes[a])
    for i in range(16):
        lanes[i] = (lanes[i] + lanes[32 + i]) + (lanes[16 + i] + lanes[48 + i])
    s = np.float64(_reduce16(lanes, 0))
    for i in range(main, d_k):
        s += np.float64(qq[i] * h2f(key_bits[kh, j, i]))
    return F32(s)


@njit(cache=True, parallel=True, error_model="numpy")
def _attention_vec(q, key_bits, value_bits, q_pos, scale, window, softcap, out):
    """ggml_compute_forward_flash_attn_ext_f16_one_chunk, one (query, head) per task."""
    n_tok, n_head, d_k = q.shape
    n_kv_head, _, d_v = value_bits.shape
    group = n_head // n_kv_head
    if softcap > 0:
        scale = scale / softcap
    for th in prange(n_tok * n_head):
        t = th // n_head
        h = th % n_head
        kh = h // group
        qq = np.empty(d_k, F32)
        for d in range(d_k):
            qq[d] = f2h_round(q[t, h, d])
        lanes = np.empty(64, F32)
        acc = np.zeros(d_v, F32)
        best = F32(-np.inf)
        total = F32(0.0)
        pos = q_pos[t]
        first = max(0, pos - window + 1) if window > 0 else 0
        for j in range(first, pos + 1):
            s = _dot_f16(qq, key_bits, kh, j, lanes) * F32(scale)
            if softcap > 0:
                s = F32(softcap) * math.tanh(s)
            ms = F32(1.0)
            vs = F32(1.0)
            if s > best:
                old = best
                best = s
                ms = math.exp(old - best)
                for d in range(d_v):
                    acc[d] = f2h_round(acc[d] * ms)
            else:
                vs = math.exp(s - best)
            for d in range(d_v):
                acc[d] = f2h_round(fma32(h2f(value_bits[kh, j, d]), vs, acc[d]))
            total = total * ms + vs
        inv = F32(1.0) / total if total != 0 else F32(0.0)
        for d in range(d_v):
            out[t, h * d_v + d] = acc[d] * inv


@njit(cache=True, parallel=True, error_model="numpy")
def _attention_tiled(q, key_bits, value_bits, q_pos, scale, window, softcap, out):
    """ggml_compute_forward_flash_attn_ext_tiled: per head, 64 queries against 64 keys at a time."""
    n_tok, n_head, d_k = q.shape
    n_kv_head, _, d_v = value_bits.shape
    group = n_head // n_kv_head
    n_qt = (n_tok + TILE - 1) // TILE
    if softcap > 0:
        scale = scale / softcap
    for task in prange(n_head * n_qt):
        h = task // n_qt
        t0 = (task % n_qt) * TILE
        rows = min(TILE, n_tok - t0)
        kh = h // group
        kt = np.empty((d_k, TILE), F32)  # the key tile, transposed
        vt = np.empty((TILE, d_v), F32)
        kq = np.empty((TILE, TILE), F32)
        acc = np.zeros((TILE, d_v), F32)
        best = np.full(TILE, -np.inf, F32)
        total = np.zeros(TILE, F32)
        live = np.empty(TILE, np.bool_)
        hi = q_pos[t0 + rows - 1]
        lo = q_pos[t0] - window + 1 if window > 0 else 0
        for c0 in range((max(0, lo) // TILE) * TILE, hi + 1, TILE):
            for tk in range(TILE):
                for d in range(d_k):
                    kt[d, tk] = h2f(key_bits[kh, c0 + tk, d]) if c0 + tk <= hi else F32(0.0)
            for tq in range(rows):
                for tk in range(TILE):
                    kq[tq, tk] = 0
                for d in range(d_k):
                    p = q[t0 + tq, h, d]
                    for tk in range(TILE):
                        kq[tq, tk] = fma32(kt[d, tk], p, kq[tq, tk])
            for tq in range(rows):
                pos = q_pos[t0 + tq]
                tile_max = F32(-np.inf)
                for tk in range(TILE):
                    j = c0 + tk
                    s = kq[tq, tk] * F32(scale)
                    if softcap > 0:
                        s = F32(softcap) * math.tanh(s)
                    if j > pos or (window > 0 and pos - j >= window):
                        s = F32(-np.inf)
                    kq[tq, tk] = s
                    if s > tile_max:
                        tile_max = s
                live[tq] = tile_max != -np.inf
                if not live[tq]:
                    continue
                new = max(best[tq], tile_max)
                if new > best[tq]:
                    ms = math.exp(best[tq] - new)
                    for d in range(d_v):
                        acc[tq, d] = acc[tq, d] * ms
                    total[tq] *= ms
                best[tq] = new
                psum = np.float64(0.0)
                for g in range(0, TILE, 16):
                    for i in range(16):
                        kq[tq, g + i] = v_expf(kq[tq, g + i] - new)
                    psum += np.float64(_reduce16(kq[tq], g))
                total[tq] = F32(np.float64(total[tq]) + psum)
            for tk in range(TILE):
                for d in range(d_v):
                    vt[tk, d] = h2f(value_bits[kh, c0 + tk, d]) if c0 + tk <= hi else F32(0.0)
            for tq in range(rows):
                if live[tq]:
                    for tk in range(TILE):
                        p = kq[tq, tk]
                        for d in range(d_v):
                            acc[tq, d] = fma32(vt[tk, d], p, acc[tq, d])
        for tq in range(rows):
            inv = F32(1.0) / total[tq] if total[tq] != 0 else F32(0.0)
            for d in range(d_v):
                out[t0 + tq, h * d_v + d] = acc[tq, d] * inv


def attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, q_pos: np.ndarray, scale: float,
              window: int = 0, softcap: float = 0.0, tiled: bool | None = None) -> np.ndarray:
    """softmax(q·Kᵀ·scale + mask)·V for queries ``q`` (tokens, n_head, head_dim_k) at positions ``q_pos``.

    ``keys``/``values`` are the float16 cache of one sequence, (n_kv_head, n_cells, head_dim), the
    cell index equal to the position; query head ``h`` reads key/value head ``h // (n_head //
    n_kv_head)``, as ggml broadcasts. A key is visible when its position is at most the query's
    and, with a sliding ``window``, less than ``window`` positions behind it. ``tiled`` picks
    ggml's kernel (default: tiled for 64 queries or more, as ggml decides per batch).
    Returns (tokens, n_head * head_dim_v).
    """
    out = np.empty((q.shape[0], q.shape[1] * values.shape[2]), np.float32)
    if tiled is None:
        tiled = q.shape[0] >= TILE
    kernel = _attention_tiled if tiled else _attention_vec
    kernel(np.ascontiguousarray(q, dtype=np.float32), keys.view(np.uint16), values.view(np.uint16),
           np.ascontiguousarray(q_pos, dtype=np.int64), float(scale), int(window), float(softcap), out)
    return out

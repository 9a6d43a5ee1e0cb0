"""Causal grouped-query attention over one sequence's float16 key/value cache.

Computed the way ggml's CPU flash attention computes it — the path llama.cpp takes by
default — operation for operation, so the result matches llama.cpp's to the bit:

* batches of fewer than 64 queries (generation, short prompts) take ggml's per-query kernel:
  the query rounded to float16, an online softmax over the keys in cache order, the weighted
  values accumulated in a float16 buffer;
* larger batches take ggml's tiled kernel: float32 queries, keys and values in tiles of 64,
  a per-tile softmax with ggml's vectorized exp, float32 accumulation;
* a single query whose cache view reaches 512 cells is split over the threads as ggml splits it,
  and the partial results merged in the same order (so, like llama.cpp's, the result depends on
  the thread count).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .common import EPR, F32, chunk_sum, fma32
from .elementwise import f2h_round, h2f, rope_rows
from .glu import v_expf
from .simd import (f16_bits, load_f16, round_f16, vadd_f, vfma, vload_f, vload_f16, vmul_f, vreduce_add_f, vreduce_f32x8,
                   vround_f16, vsplat_f, vstore_f, vzero_f)

TILE = 64  # GGML_FA_TILE_Q and GGML_FA_TILE_KV
KV_PAD = 256  # llama.cpp's KV cache view grows in steps of 256 cells
SPLIT_KV = 512  # from this many cells, one query's keys are split across threads

@njit(cache=True, inline="always", error_model="numpy")
def _dot_f16_512(qq, key_bits, k0):
    """ggml_vec_dot_f16 as built for AVX-512: four 16-lane accumulators over steps of 64, summed
    in the fixed order of GGML_F32x16_REDUCE and _mm512_reduce_add_ps, leftovers added in double.
    The key is the row of ``head_dim`` float16 values starting at flat element ``k0``."""
    d_k = qq.shape[0]
    main = d_k - d_k % 64
    a0 = vzero_f()
    a1 = vzero_f()
    a2 = vzero_f()
    a3 = vzero_f()
    for i in range(0, main, 64):
        a0 = vfma(vload_f(qq, i), vload_f16(key_bits, k0 + i), a0)
        a1 = vfma(vload_f(qq, i + 16), vload_f16(key_bits, k0 + i + 16), a1)
        a2 = vfma(vload_f(qq, i + 32), vload_f16(key_bits, k0 + i + 32), a2)
        a3 = vfma(vload_f(qq, i + 48), vload_f16(key_bits, k0 + i + 48), a3)
    s = np.float64(vreduce_add_f(vadd_f(vadd_f(a0, a2), vadd_f(a1, a3))))
    for i in range(main, d_k):
        s += np.float64(qq[i] * load_f16(key_bits, k0 + i))
    return F32(s)


@njit(cache=True, inline="always", error_model="numpy")
def _dot_f16_256(qq, key_bits, k0):
    """ggml_vec_dot_f16 as built for AVX2: four 8-lane accumulators over steps of 32 (here two
    16-lane ones: x0|x1 and x2|x3), GGML_F32x8_REDUCE, leftovers added in double."""
    d_k = qq.shape[0]
    main = d_k - d_k % 32
    a01 = vzero_f()
    a23 = vzero_f()
    for i in range(0, main, 32):
        a01 = vfma(vload_f(qq, i), vload_f16(key_bits, k0 + i), a01)
        a23 = vfma(vload_f(qq, i + 16), vload_f16(key_bits, k0 + i + 16), a23)
    s = np.float64(vreduce_f32x8(vadd_f(a01, a23)))
    for i in range(main, d_k):
        s += np.float64(qq[i] * load_f16(key_bits, k0 + i))
    return F32(s)


_dot_f16 = _dot_f16_512 if EPR == 16 else _dot_f16_256


@njit(cache=True, inline="always", error_model="numpy")
def _scale_f16(acc, ms):
    """acc = float16(acc · ms), the VKQ16 rescale when a new maximum arrives."""
    d_v = acc.shape[0]
    main = d_v - d_v % 16
    m = vsplat_f(ms)
    for d in range(0, main, 16):
        vstore_f(acc, d, vround_f16(vmul_f(vload_f(acc, d), m)))
    for d in range(main, d_v):
        acc[d] = round_f16(acc[d] * ms)


@njit(cache=True, inline="always", error_model="numpy")
def _mad_f16(acc, value_bits, v0, vs):
    """acc = float16(value · vs + acc) per element (ggml_vec_mad_f16 into the float16 VKQ16)."""
    d_v = acc.shape[0]
    main = d_v - d_v % 16
    w = vsplat_f(vs)
    for d in range(0, main, 16):
        vstore_f(acc, d, vround_f16(vfma(vload_f16(value_bits, v0 + d), w, vload_f(acc, d))))
    for d in range(main, d_v):
        acc[d] = round_f16(fma32(load_f16(value_bits, v0 + d), vs, acc[d]))


@njit(cache=True, inline="always", error_model="numpy")
def _vec_keys(qq, key_bits, value_bits, kh, pos, window, j0, j1, scale, softcap, acc, slope=F32(0.0), qp=0):
    """The per-query loop of ggml_compute_forward_flash_attn_ext_f16_one_chunk over the cells
    [j0, j1): visible keys (at most ``pos``, inside the window) in order, an online softmax, the
    weighted values accumulated in float16. With an ALiBi ``slope``, the mask value of the key at
    cell j is ``-|qp - j|`` times the slope, added to the scaled score as ggml adds it. ``acc``
    starts at zero; returns (max, sum)."""
    best = F32(-np.inf)
    total = F32(0.0)
    d_v = acc.shape[0]
    for d in range(d_v):
        acc[d] = 0
    ks0, ks1 = key_bits.strides[0] // 2, key_bits.strides[1] // 2  # float16 elements per head, per cell
    vs0, vs1 = value_bits.strides[0] // 2, value_bits.strides[1] // 2
    first = max(j0, pos - window + 1) if window > 0 else j0
    for j in range(first, min(j1, pos + 1)):
        s = _dot_f16(qq, key_bits, kh * ks0 + j * ks1) * F32(scale)
        if softcap > 0:
            s = F32(softcap) * math.tanh(s)
        if slope != 0:
            s = s + slope * F32(-abs(qp - j))
        ms = F32(1.0)
        vs = F32(1.0)
        if s > best:
            old = best
            best = s
            ms = math.exp(old - best)
            _scale_f16(acc, ms)
        else:
            vs = math.exp(s - best)
        _mad_f16(acc, value_bits, kh * vs0 + j * vs1, vs)
        total = fma32(total, ms, vs)  # GCC contracts ggml's S = S*ms + vs
    return best, total


@njit(cache=True, inline="always", error_model="numpy")
def _round_query(q, t, h, qq):
    for d in range(qq.shape[0]):
        qq[d] = f2h_round(q[t, h, d])


@njit(cache=True, inline="always", error_model="numpy")
def _store_normalized(out, t, h, acc, total):
    """Row ``t``, head ``h`` of the output: the accumulated values divided by the softmax sum."""
    d_v = acc.shape[0]
    inv = F32(1.0) / total if total != 0 else F32(0.0)
    for d in range(d_v):
        out[t, h * d_v + d] = acc[d] * inv


@njit(cache=True, parallel=True, error_model="numpy")
def _attention_vec(q, key_bits, value_bits, q_pos, scale, window, softcap, out, slopes, alibi_pos):
    """ggml_compute_forward_flash_attn_ext_f16_one_chunk, one (query, head) per task; ``slopes``
    (per head) and ``alibi_pos`` (per query) give ALiBi's mask when not empty."""
    n_tok, n_head, d_k = q.shape
    n_kv_head, _, d_v = value_bits.shape
    group = n_head // n_kv_head
    if softcap > 0:
        scale = scale / softcap
    for th in prange(n_tok * n_head):
        t = th // n_head
        h = th % n_head
        qq = np.empty(d_k, F32)
        _round_query(q, t, h, qq)
        acc = np.empty(d_v, F32)
        pos = q_pos[t]
        slope = slopes[h] if slopes.shape[0] else F32(0.0)
        qp = alibi_pos[t] if alibi_pos.shape[0] else 0
        _, total = _vec_keys(qq, key_bits, value_bits, h // group, pos, window, 0, pos + 1, scale, softcap, acc,
                             slope, qp)
        _store_normalized(out, t, h, acc, total)


@njit(cache=True, error_model="numpy")
def _one_query(q, t, h, keys, values, kh, pos, n_kv, n_chunks, window, scale, softcap, out):
    """Query ``t``'s head ``h`` over one sequence's cache into row ``t`` of ``out``: ggml's per-query
    kernel over the visible cells, or, when the cache view holds ``n_kv`` >= 512 cells, that view
    split as ggml splits it over its threads: ``n_chunks`` ranges, the per-query kernel on each, the
    partial results merged in order (ggml_flash_attn_ext_reduce_partials). Written as one loop
    over the ranges (a single range when not split), so the per-query kernel is compiled once."""
    d_v = out.shape[1] // q.shape[1]
    qq = np.empty(q.shape[2], F32)
    _round_query(q, t, h, qq)
    acc = np.empty(d_v, F32)
    split = n_kv >= SPLIT_KV
    chunks = n_chunks if split else 1
    span = n_kv if split else pos + 1
    chunk = (span + chunks - 1) // chunks
    merged = np.zeros(d_v, F32)
    best = F32(-np.inf)
    total = F32(0.0)
    for c in range(chunks):
        j0 = c * chunk
        if j0 >= span:
            continue
        m_c, s_c = _vec_keys(qq, keys, values, kh, pos, window, j0, min(j0 + chunk, span), scale, softcap, acc)
        if not split:
            total = s_c
            break
        if s_c == 0:
            continue
        new = max(best, m_c)
        scale_old = math.exp(best - new)
        scale_new = math.exp(m_c - new)
        for d in range(d_v):
            merged[d] = fma32(merged[d], scale_old, acc[d] * scale_new)
        total = fma32(total, scale_old, s_c * scale_new)
        best = new
    _store_normalized(out, t, h, merged if split else acc, total)


@njit(cache=True, parallel=True, error_model="numpy")
def _attention_split(q, key_bits, value_bits, pos, n_kv, n_chunks, scale, window, softcap, out):
    """One query whose cache view holds 512 or more cells, its heads in parallel (see _one_query)."""
    n_head = q.shape[1]
    group = n_head // value_bits.shape[0]
    if softcap > 0:
        scale = scale / softcap
    for h in prange(n_head):
        _one_query(q, 0, h, key_bits, value_bits, h // group, pos, n_kv, n_chunks, window, scale, softcap, out)


@njit(cache=True, parallel=True, error_model="numpy")
def _attention_one_query_each(q, key_bits, value_bits, seqs, q_pos, n_kvs, n_chunks, scale, window, softcap, out):
    """One query for each of several sequences (a decode step), all (query, head) pairs in one
    parallel loop; each computed exactly as :func:`_attention_vec` or, when its sequence's cache
    view reaches 512 cells, :func:`_attention_split` computes it for that query alone.
    ``key_bits``/``value_bits`` hold every sequence's cache, (n_seq, n_kv_head, n_cells, head_dim)."""
    n_tok, n_head, _ = q.shape
    group = n_head // value_bits.shape[1]
    if softcap > 0:
        scale = scale / softcap
    for th in prange(n_tok * n_head):
        t = th // n_head
        h = th % n_head
        _one_query(q, t, h, key_bits[seqs[t]], value_bits[seqs[t]], h // group, q_pos[t], n_kvs[t], n_chunks,
                   window, scale, softcap, out)


@njit(cache=True, parallel=True, error_model="numpy")
def _rope_store_attend(q, k, v, cos, sin, n_rot, neox, q_scale, key_bits, value_bits, q_pos, n_kv, n_chunks, scale,
                       window, softcap, out):
    """A few consecutive tokens of one sequence in one call: rotary embedding of their queries and
    keys (:func:`rope_rows`), the queries times ``q_scale`` (gemma scales them before attending),
    their keys and values written to the float16 cache at ``q_pos``, then every (query, head)
    pair as :func:`_one_query` computes it (``n_kv``: the cache view to split over threads, for a
    single query; 0 never splits). The same arithmetic as the separate calls, one dispatch."""
    n_tok, n_head, d_k = q.shape
    n_kv_head, d_v = k.shape[1], v.shape[2]
    if n_rot > 0:
        rope_rows(q, cos, sin, n_rot, neox)
        rope_rows(k, cos, sin, n_rot, neox)
    if q_scale != 1:
        for t in range(n_tok):
            for h in range(n_head):
                for d in range(d_k):
                    q[t, h, d] *= q_scale
    for t in range(n_tok):
        p = q_pos[t]
        for h in range(n_kv_head):
            for d in range(d_k):
                key_bits[h, p, d] = f16_bits(k[t, h, d])
            for d in range(d_v):
                value_bits[h, p, d] = f16_bits(v[t, h, d])
    group = n_head // n_kv_head
    if softcap > 0:
        scale = scale / softcap
    for th in prange(n_tok * n_head):
        t = th // n_head
        h = th % n_head
        _one_query(q, t, h, key_bits, value_bits, h // group, q_pos[t], n_kv, n_chunks, window, scale, softcap, out)


@njit(cache=True, parallel=True, error_model="numpy")
def _attention_tiled(q, key_bits, value_bits, q_pos, scale, window, softcap, out):
    """ggml_compute_forward_flash_attn_ext_tiled: per head, 64 queries against 64 keys at a time."""
    none = np.zeros(0, np.int64)
    _tiled(q, key_bits, value_bits, q_pos, none, none, scale, window, softcap, out, np.zeros(0, F32), none, none)


@njit(cache=True, parallel=True, error_model="numpy")
def _attention_tiled_seqs(q, key_bits, value_bits, q_seq, k_seq, scale, out, slopes, q_apos, k_apos):
    """The tiled kernel over a whole batch of sequences that see all of their own tokens and none
    of the others' (an encoder's mask): keys are the batch's tokens, ``k_seq`` their sequences;
    with ``slopes``, ALiBi's ``-|q_apos - k_apos|`` mask values."""
    _tiled(q, key_bits, value_bits, np.zeros(0, np.int64), q_seq, k_seq, scale, 0, 0.0, out, slopes, q_apos, k_apos)


@njit(cache=True, inline="always", error_model="numpy")
def _masked_tile(q_seq, t0, rows, k_seq, c0, hi):
    """Whether no query t0..t0+rows-1 shares a sequence with any key of the tile at c0."""
    for tq in range(rows):
        for j in range(c0, min(c0 + TILE, hi + 1)):
            if k_seq[j] == q_seq[t0 + tq]:
                return False
    return True


@njit(cache=True, inline="always", error_model="numpy")
def _tiled(q, key_bits, value_bits, q_pos, q_seq, k_seq, scale, window, softcap, out, slopes, q_apos, k_apos):
    """The tiled kernel's body: causal over one sequence's cache (``q_pos``), or, with ``k_seq``,
    each query seeing exactly the keys of its own sequence ``q_seq``."""
    by_seq = k_seq.shape[0] > 0
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
        hi = k_seq.shape[0] - 1 if by_seq else q_pos[t0 + rows - 1]
        lo = q_pos[t0] - window + 1 if window > 0 and not by_seq else 0
        for c0 in range((max(0, lo) // TILE) * TILE, hi + 1, TILE):
            if by_seq and _masked_tile(q_seq, t0, rows, k_seq, c0, hi):
                continue  # as ggml: a tile no query of this tile may see is skipped whole
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
                pos = hi if by_seq else q_pos[t0 + tq]
                tile_max = F32(-np.inf)
                for tk in range(TILE):
                    j = c0 + tk
                    s = kq[tq, tk] * F32(scale)
                    if softcap > 0:
                        s = F32(softcap) * math.tanh(s)
                    if j > pos or (window > 0 and pos - j >= window) or (by_seq and k_seq[j] != q_seq[t0 + tq]):
                        s = F32(-np.inf)
                    elif slopes.shape[0]:  # ALiBi: the slope times the mask value -|distance|
                        s = s + slopes[h] * F32(-abs(q_apos[t0 + tq] - k_apos[j]))
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
                for g in range(0, TILE, EPR):  # ggml_vec_soft_max_f32: one register of values per step
                    for i in range(EPR):
                        kq[tq, g + i] = v_expf(kq[tq, g + i] - new)
                    psum += np.float64(chunk_sum(kq[tq], g))
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


def attention_within_sequences(q: np.ndarray, keys: np.ndarray, values: np.ndarray, q_seqs: np.ndarray,
                               k_seqs: np.ndarray, scale: float, slopes: np.ndarray | None = None,
                               q_pos: np.ndarray | None = None, k_pos: np.ndarray | None = None) -> np.ndarray:
    """An encoder batch's attention with ggml's tiled kernel, as llama.cpp runs it over the whole
    batch: queries ``q`` (queries, n_head, head_dim) and float16 ``keys``/``values`` (n_kv_head,
    tokens, head_dim) of every token, each query seeing all tokens of its own sequence
    (``q_seqs`` against ``k_seqs``) and no other. Each query's result depends on no other query,
    so a subset of the batch's queries may be asked. ALiBi models give per-head ``slopes`` and
    the positions of the queries and keys. Returns (queries, n_head * head_dim_v)."""
    out = np.empty((q.shape[0], q.shape[1] * values.shape[2]), np.float32)
    none = np.zeros(0, np.int64)
    _attention_tiled_seqs(np.ascontiguousarray(q, dtype=np.float32), keys.view(np.uint16), values.view(np.uint16),
                          np.ascontiguousarray(q_seqs, dtype=np.int64), np.ascontiguousarray(k_seqs, dtype=np.int64),
                          float(scale), out, _f32s(slopes),
                          none if q_pos is None else np.ascontiguousarray(q_pos, dtype=np.int64),
                          none if k_pos is None else np.ascontiguousarray(k_pos, dtype=np.int64))
    return out


def _f32s(values) -> np.ndarray:
    return np.zeros(0, np.float32) if values is None else np.ascontiguousarray(values, dtype=np.float32)


def cache_view_cells(q_pos: np.ndarray, n_cells: int) -> np.ndarray:
    """The cells of llama.cpp's KV cache view for a query at each position: padded to 256, at most the cache."""
    return np.minimum(n_cells, np.maximum(KV_PAD, -(-(np.asarray(q_pos, np.int64) + 1) // KV_PAD) * KV_PAD))


def view_cells(pos: int, n_cells: int) -> int:
    """:func:`cache_view_cells` for one query (plain integers: a generation step's hot path)."""
    return min(n_cells, max(KV_PAD, -(-(pos + 1) // KV_PAD) * KV_PAD))


def attention_one_query_each(q: np.ndarray, keys: np.ndarray, values: np.ndarray, seqs: np.ndarray,
                             q_pos: np.ndarray, scale: float, window: int = 0, softcap: float = 0.0,
                             n_threads: int = 1) -> np.ndarray:
    """:func:`attention` for one query per sequence, every sequence's cache in ``keys``/``values``
    (n_seq, n_kv_head, n_cells, head_dim): the same result, row for row, as calling it on each
    query alone (ggml's per-query kernel, split from 512 cells), in one parallel launch instead
    of one per sequence (a decode step of eight sequences makes eight times fewer launches)."""
    out = np.empty((q.shape[0], q.shape[1] * values.shape[3]), np.float32)
    q_pos = np.ascontiguousarray(q_pos, dtype=np.int64)
    _attention_one_query_each(np.ascontiguousarray(q, dtype=np.float32), keys.view(np.uint16), values.view(np.uint16),
                              np.ascontiguousarray(seqs, dtype=np.int64), q_pos, cache_view_cells(q_pos, keys.shape[2]),
                              max(1, int(n_threads)), float(scale), int(window), float(softcap), out)
    return out


def rope_store_attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, cos: np.ndarray, sin: np.ndarray, n_rot: int,
                      neox: bool, keys: np.ndarray, values: np.ndarray, q_pos: np.ndarray, scale: float,
                      window: int = 0, softcap: float = 0.0, q_scale: float = 1.0,
                      n_threads: int = 1) -> np.ndarray:
    """Rotary embedding (``cos``/``sin`` per token, from ``RopeConfig.cos_sin``; ``n_rot`` 0 for
    none), the cache write and :func:`attention` for fewer than 64 consecutive queries of one
    sequence, in one compiled call: what generation does at every layer, without the five calls
    it would otherwise make (their Python wrappers cost more than the arithmetic). ``keys``/``values``
    are the sequence's float16 cache (n_kv_head, n_cells, head_dim). Bit for bit the separate steps."""
    n_tok = q.shape[0]
    out = np.empty((n_tok, q.shape[1] * values.shape[2]), np.float32)
    n_kv = view_cells(int(q_pos[0]), keys.shape[1]) if n_tok == 1 else 0
    _rope_store_attend(np.ascontiguousarray(q, dtype=np.float32), np.ascontiguousarray(k, dtype=np.float32),
                       np.ascontiguousarray(v, dtype=np.float32), cos, sin, n_rot, neox, np.float32(q_scale),
                       keys.view(np.uint16), values.view(np.uint16), q_pos, n_kv, max(1, int(n_threads)),
                       float(scale), int(window), float(softcap), out)
    return out


def attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, q_pos: np.ndarray, scale: float,
              window: int = 0, softcap: float = 0.0, tiled: bool | None = None, n_threads: int = 1,
              slopes: np.ndarray | None = None, alibi_pos: np.ndarray | None = None) -> np.ndarray:
    """softmax(q·Kᵀ·scale + mask)·V for queries ``q`` (tokens, n_head, head_dim_k) at positions ``q_pos``.

    ``keys``/``values`` are the float16 cache of one sequence, (n_kv_head, n_cells, head_dim), the
    cell index equal to the position; query head ``h`` reads key/value head ``h // (n_head //
    n_kv_head)``, as ggml broadcasts. A key is visible when its position is at most the query's
    and, with a sliding ``window``, less than ``window`` positions behind it. ``tiled`` picks
    ggml's kernel (default: tiled for 64 queries or more, as ggml decides per batch). A single
    query whose cache view (llama.cpp pads it to a multiple of 256 cells) reaches 512 cells is
    split over ``n_threads`` ranges as llama.cpp splits it over its threads. ALiBi (``slopes`` per
    head, ``alibi_pos`` per query, the one-query kernel only) adds ``-|alibi_pos - cell|`` times the
    head's slope to each score. Returns (tokens, n_head * head_dim_v).
    """
    out = np.empty((q.shape[0], q.shape[1] * values.shape[2]), np.float32)
    if tiled is None:
        tiled = q.shape[0] >= TILE
    q = np.ascontiguousarray(q, dtype=np.float32)
    key_bits, value_bits = keys.view(np.uint16), values.view(np.uint16)
    if q.shape[0] == 1:
        n_kv = view_cells(int(q_pos[0]), keys.shape[1])
        if n_kv >= SPLIT_KV:
            _attention_split(q, key_bits, value_bits, int(q_pos[0]), n_kv, max(1, int(n_threads)), float(scale),
                             int(window), float(softcap), out)
            return out
    q_pos = np.ascontiguousarray(q_pos, dtype=np.int64)
    if tiled:
        if slopes is not None:
            raise ValueError("ALiBi is given to attention_within_sequences for the tiled kernel")
        _attention_tiled(q, key_bits, value_bits, q_pos, float(scale), int(window), float(softcap), out)
    else:
        _attention_vec(q, key_bits, value_bits, q_pos, float(scale), int(window), float(softcap), out, _f32s(slopes),
                       np.zeros(0, np.int64) if alibi_pos is None else np.ascontiguousarray(alibi_pos, np.int64))
    return out

"""Kernels for the k-quant formats Q4_K, Q5_K and Q6_K, exact to llama.cpp.

What llama.cpp computes for these (see :mod:`.ggml_reference`) depends on the batch:

* Q6_K — fewer than 8 tokens: ``ggml_vec_dot_q6_K_q8_K`` (eight integer lanes per block, each
  scaled and added with its own float FMA, then ``hsum_float_8``); 8 tokens or more: the tiled
  kernel (one exact integer per 256-value block, ``fma(float(S)·d_w, d_x, acc)``).
* Q4_K with a row count divisible by 8 (ggml repacks it to q4_K_8x8): tokens in groups of four
  take the gemm (one float step per 64 values), the last ``N % 4`` tokens the gemv (one per 256).
  Other row counts use the vec_dot (below 8 tokens) or the tiled kernel.
* Q5_K (never repacked on x86): the vec_dot below 8 tokens (Q4_K's, but with one scalar running
  sum of the minimums), the tiled kernel from 8 on (Q4_K's, with 5-bit values).

Layout, as for the legacy formats: 16 rows per group, and per 256-value block each run of 4
values ("lane") of the 16 rows as 64 contiguous bytes, so one ``vdpbusd`` (:mod:`.simd`) forms
a lane's integer sum for 16 rows. The quants stay in the file's packing (nibbles and high bits,
4-byte words of 16 rows interleaved; same size as the file) and are widened per group, once per
call, into a small buffer that every token of the batch then reads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .activations import _q8_K_block, quantize_q8_K
from .common import F32
from .legacy import GROUP, LANE_BYTES, interleave
from .simd import (vadd_f, vadd_i, vand_i, vbcast_i, vcvt, vdpbusd, vfma, vhsum8, vload_f, vload_f16, vload_i,
                   vload_s8, vload_u8, vmul_f, vmul_i, vor_i, vsll_i, vsplat_f, vsplat_i, vsra_i, vsrl_i,
                   vstore_f, vstore_i, vsub_f, vsub_i, vzero_f, vzero_i)

QK_K = 256
LANES = QK_K // 4  # 4-value lanes per block
BLOCK_SCRATCH = LANES * LANE_BYTES  # widened bytes of one block of a 16-row group
TILED_MIN_TOKENS = 8  # ggml_tiled_min_batch
REPACK_GROUP = 4  # the q4_K_8x8 gemm takes tokens four at a time
TOKEN_CHUNK = 64
FEW_TASKS = 16  # parallel tasks of the few-token kernels (each with its own small buffer)


# -- activations ----------------------------------------------------------------------------------


class KActivations:
    """Q8_K activations (quantize_q8_K) as the kernels index them: flat arrays."""

    def __init__(self, x: np.ndarray):
        n_tok, n = x.shape
        nb = n // QK_K
        self.n_tok, self.n = n_tok, n
        xq = np.empty((n_tok, n), np.int8)
        xd = np.empty((n_tok, nb), np.float32)
        bsums = np.empty((n_tok, n // 16), np.int32)
        quantize_q8_K(x, xq, xd, bsums)
        self.xq = xq.reshape(-1).view(np.uint8)
        self.xd = xd.reshape(-1)
        self.bs16 = bsums.reshape(-1)
        self.bsums = bsums

    def bias(self, offset: int) -> np.ndarray:
        """-offset · (each 16-value sum): the offset of every sub-block's values, 32 for Q6_K and 4
        for Q3_K (tiled kernel)."""
        return (np.int32(-offset) * self.bs16).astype(np.int32)

    def sums32(self) -> np.ndarray:
        """Each 32-value sum, as float32 (exact), for the Q4_K minimums."""
        return (self.bsums[:, 0::2] + self.bsums[:, 1::2]).astype(np.float32).reshape(-1)


@njit(cache=True, error_model="numpy")
def _q8_K_few(x):
    """Q8_K activations of a few tokens, quantized serially inside the caller's compiled call, as the
    flat arrays the few-token kernels index: quants (as bytes), scales, 16-value sums."""
    n_tok, n = x.shape
    nb = n // QK_K
    xq = np.empty(n_tok * n, np.int8)
    xd = np.empty(n_tok * nb, F32)
    bs16 = np.empty(n_tok * (n // 16), np.int32)
    xf = x.reshape(-1)
    for t in range(n_tok * nb):
        _q8_K_block(xf, xq, xd, bs16, t, n)
    return xq.view(np.uint8), xd, bs16


# -- Q6_K -------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _widen_q3_K_block(qs, hm, sc, d, gb, slot, w, scales, dv):
    """Q3_K block ``gb`` into buffer slot ``slot`` as :func:`_widen_q6_K_block` lays Q6_K out: the
    values as 0..7 (two low bits, plus 4 for a set high bit; the value is that minus 4), the 6-bit
    scales minus 32, d."""
    two = vsplat_i(0x03030303)
    one = vsplat_i(0x01010101)
    for j in range(2):
        for si in range(4):
            for i in range(8):
                v = vload_i(qs, (gb * 16 + 8 * j + i) * LANE_BYTES)
                h = vload_i(hm, (gb * 8 + i) * LANE_BYTES)
                code = vor_i(vand_i(vsrl_i(v, 2 * si), two), vsll_i(vand_i(vsrl_i(h, 4 * j + si), one), 2))
                vstore_i(w, (slot * LANES + 32 * j + 8 * si + i) * LANE_BYTES, code)
    for i in range(4):  # the 6-bit scales: low nibbles from bytes 0..7, high two bits from bytes 8..11
        b0 = vload_u8(sc, (gb * 12 + i) * GROUP)
        b1 = vload_u8(sc, (gb * 12 + 4 + i) * GROUP)
        top = vload_u8(sc, (gb * 12 + 8 + i) * GROUP)
        _store_q3_scale(scales, slot, i, vand_i(b0, vsplat_i(15)), top, 0)
        _store_q3_scale(scales, slot, 4 + i, vand_i(b1, vsplat_i(15)), top, 2)
        _store_q3_scale(scales, slot, 8 + i, vsrl_i(b0, 4), top, 4)
        _store_q3_scale(scales, slot, 12 + i, vsrl_i(b1, 4), top, 6)
    vstore_f(dv, slot * GROUP, vload_f16(d, gb * GROUP))


@njit(cache=True, inline="always")
def _store_q3_scale(scales, slot, s, nibble, top, shift):
    """Scale ``s`` of a Q3_K block: its low nibble, two high bits from ``top >> shift``, minus 32."""
    value = vor_i(nibble, vsll_i(vand_i(vsrl_i(top, shift), vsplat_i(3)), 4))
    vstore_i(scales, (slot * 16 + s) * GROUP, vsub_i(value, vsplat_i(32)))


@njit(cache=True, inline="always")
def _widen_q6_K_block(ql, qh, sc, d, gb, slot, w, scales, dv):
    """Block ``gb`` (group × block) into buffer slot ``slot``: values 0..63 per byte in ``w``
    ([slot][lane][16 rows][4]), scales as int32 lanes ([slot][sub-block][16]), d as float32."""
    low = vsplat_i(0x0F0F0F0F)
    two = vsplat_i(0x03030303)
    for h in range(2):
        for c in range(2):
            for i in range(8):
                v = vload_i(ql, (gb * 32 + 16 * h + 8 * c + i) * LANE_BYTES)
                hb = vload_i(qh, (gb * 16 + 8 * h + i) * LANE_BYTES)
                lane = slot * LANES + 32 * h + 8 * c + i
                vstore_i(w, lane * LANE_BYTES, vor_i(vand_i(v, low), vsll_i(vand_i(vsrl_i(hb, 2 * c), two), 4)))
                vstore_i(w, (lane + 16) * LANE_BYTES,
                         vor_i(vand_i(vsrl_i(v, 4), low), vsll_i(vand_i(vsrl_i(hb, 4 + 2 * c), two), 4)))
    for s in range(16):
        vstore_i(scales, (slot * 16 + s) * GROUP, vload_s8(sc, (gb * 16 + s) * GROUP))
    vstore_f(dv, slot * GROUP, vload_f16(d, gb * GROUP))


@njit(cache=True, inline="always")
def _q6_vec_lane(k, w, scales, slot, xq, bs16, xo, tb):
    """Lane k of ggml_vec_dot_q6_K_q8_K for one block and 16 rows (exact int32)."""
    hi = 1 if k >= 4 else 0
    s = vzero_i()
    for v in range(8):
        p = vdpbusd(vzero_i(), vload_i(w, (slot * LANES + 8 * v + k) * LANE_BYTES), vbcast_i(xq, xo + 32 * v + 4 * k))
        # |p| < 2^15: the product with the 8-bit scale is one 16-bit multiply-add (vpmaddwd)
        s = vadd_i(s, vmul_i(vsra_i(vsll_i(p, 16), 16), vload_i(scales, (slot * 16 + 2 * v + hi) * GROUP)))
    bias = vadd_i(vmul_i(vbcast_i(bs16, tb * 16 + 2 * k), vload_i(scales, (slot * 16 + 2 * k) * GROUP)),
                  vmul_i(vbcast_i(bs16, tb * 16 + 2 * k + 1), vload_i(scales, (slot * 16 + 2 * k + 1) * GROUP)))
    return vsub_i(s, vsll_i(bias, 5))


@njit(cache=True, inline="always")
def _q3_vec_lane(k, w, scales, slot, xq, xo):
    """Lane k of ggml_vec_dot_q3_K_q8_K for one block and 16 rows (exact int32): each 4-value run
    as Σ code·x - 4·Σ x (ggml subtracts the 4 per byte, not from the block sums)."""
    hi = 1 if k >= 4 else 0
    four = vsplat_i(0x04040404)
    s = vzero_i()
    for v in range(8):
        x4 = vbcast_i(xq, xo + 32 * v + 4 * k)
        p = vsub_i(vdpbusd(vzero_i(), vload_i(w, (slot * LANES + 8 * v + k) * LANE_BYTES), x4),
                   vdpbusd(vzero_i(), four, x4))
        s = vadd_i(s, vmul_i(p, vload_i(scales, (slot * 16 + 2 * v + hi) * GROUP)))
    return s


@njit(cache=True, inline="always")
def _widen_q36_K_block(three, ql, qh, sc, d, gb, slot, w, scales, dv):
    if three:
        _widen_q3_K_block(ql, qh, sc, d, gb, slot, w, scales, dv)
    else:
        _widen_q6_K_block(ql, qh, sc, d, gb, slot, w, scales, dv)


@njit(cache=True, inline="always")
def _q6_tiled_block(w, scales, dv, slot, xq, xd, bias32, xo, tb, acc):
    """The tiled kernel's step for one block: exact S, then fma(float(S)·d_w, d_x, acc)."""
    total = vzero_i()
    for s in range(16):
        dot = vbcast_i(bias32, tb * 16 + s)
        for i in range(4):
            dot = vdpbusd(dot, vload_i(w, (slot * LANES + 4 * s + i) * LANE_BYTES), vbcast_i(xq, xo + 16 * s + 4 * i))
        total = vadd_i(total, vmul_i(dot, vload_i(scales, (slot * 16 + s) * GROUP)))
    return vfma(vmul_f(vcvt(total), vload_f(dv, slot * GROUP)), vsplat_f(xd[tb]), acc)


@njit(cache=True, inline="always")
def _q6_tiled_pair(w, scales, dv, slot, xq, xd, bias32, xo, tb, xo_u, tb_u, acc, acc_u):
    """:func:`_q6_tiled_block` for two tokens at once."""
    total = vzero_i()
    total_u = vzero_i()
    for s in range(16):
        dot = vbcast_i(bias32, tb * 16 + s)
        dot_u = vbcast_i(bias32, tb_u * 16 + s)
        for i in range(4):
            wl = vload_i(w, (slot * LANES + 4 * s + i) * LANE_BYTES)
            dot = vdpbusd(dot, wl, vbcast_i(xq, xo + 16 * s + 4 * i))
            dot_u = vdpbusd(dot_u, wl, vbcast_i(xq, xo_u + 16 * s + 4 * i))
        sc = vload_i(scales, (slot * 16 + s) * GROUP)
        total = vadd_i(total, vmul_i(dot, sc))
        total_u = vadd_i(total_u, vmul_i(dot_u, sc))
    dvs = vload_f(dv, slot * GROUP)
    return (vfma(vmul_f(vcvt(total), dvs), vsplat_f(xd[tb]), acc),
            vfma(vmul_f(vcvt(total_u), dvs), vsplat_f(xd[tb_u]), acc_u))


@njit(cache=True, parallel=True, error_model="numpy")
def _many_q6_K(three, ql, qh, sc, d, xq, xd, bias32, n_tok, n, n_groups, out):
    """8 tokens or more (tiled kernel): each group widened once per chunk of tokens."""
    nb = n // QK_K
    width = n_groups * GROUP
    n_chunks_t = (n_tok + TOKEN_CHUNK - 1) // TOKEN_CHUNK
    for task in prange(n_groups * n_chunks_t):
        g = task % n_groups
        t0 = (task // n_groups) * TOKEN_CHUNK
        w = np.empty(nb * BLOCK_SCRATCH, np.uint8)
        scales = np.empty(nb * 16 * GROUP, np.int32)
        dv = np.empty(nb * GROUP, np.float32)
        for b in range(nb):
            _widen_q36_K_block(three, ql, qh, sc, d, g * nb + b, b, w, scales, dv)
        t_end = min(n_tok, t0 + TOKEN_CHUNK)
        for t in range(t0, t_end, 2):  # two tokens share each loaded weight lane
            u = t + 1 if t + 1 < t_end else t
            acc = vzero_f()
            acc_u = vzero_f()
            for b in range(nb):
                acc, acc_u = _q6_tiled_pair(w, scales, dv, b, xq, xd, bias32, t * n + b * QK_K, t * nb + b,
                                            u * n + b * QK_K, u * nb + b, acc, acc_u)
            vstore_f(out, t * width + g * GROUP, acc)
            vstore_f(out, u * width + g * GROUP, acc_u)


@njit(cache=True, inline="always")
def _few_q6_K_group(three, ql, qh, sc, d, xq, xd, bs16, n_tok, n, nb, width, g, w, scales, dv, acc, out):
    """Group ``g`` for every token, through the buffers ``w``, ``scales``, ``dv`` and ``acc``."""
    acc[:] = 0
    for b in range(nb):
        _widen_q36_K_block(three, ql, qh, sc, d, g * nb + b, 0, w, scales, dv)
        for t in range(n_tok):
            tb = t * nb + b
            xo = t * n + b * QK_K
            dd = vmul_f(vsplat_f(xd[tb]), vload_f(dv, 0))
            for k in range(8):
                o = (t * 8 + k) * GROUP
                if three:
                    lane = _q3_vec_lane(k, w, scales, 0, xq, xo)
                else:
                    lane = _q6_vec_lane(k, w, scales, 0, xq, bs16, xo, tb)
                vstore_f(acc, o, vfma(dd, vcvt(lane), vload_f(acc, o)))
    for t in range(n_tok):
        o = t * 8 * GROUP
        vstore_f(out, t * width + g * GROUP,
                 vhsum8(vload_f(acc, o), vload_f(acc, o + 16), vload_f(acc, o + 32), vload_f(acc, o + 48),
                        vload_f(acc, o + 64), vload_f(acc, o + 80), vload_f(acc, o + 96), vload_f(acc, o + 112)))


@njit(cache=True, parallel=True, error_model="numpy")
def _few_q6_K(three, ql, qh, sc, d, x, n_groups, n_tasks, out):
    """Fewer than 8 tokens (vec_dot), from float activations quantized here: block by block through
    a small buffer per task (a row of the ``*_all`` arrays), each token's eight lane sums kept in it
    between blocks. Quantizing and allocating inside the compiled call leaves a generation step one
    dispatch and one parallel launch per weight."""
    n_tok, n = x.shape
    xq, xd, bs16 = _q8_K_few(x)
    w_all = np.empty((n_tasks, BLOCK_SCRATCH), np.uint8)
    i_all = np.empty((n_tasks, 16 * GROUP), np.int32)
    f_all = np.empty((n_tasks, (1 + 8 * n_tok) * GROUP), F32)
    nb = n // QK_K
    width = n_groups * GROUP
    for task in prange(n_tasks):
        w, scales, fl = w_all[task], i_all[task], f_all[task]
        dv = fl[:GROUP]
        acc = fl[GROUP:]
        for g in range(task * n_groups // n_tasks, (task + 1) * n_groups // n_tasks):
            _few_q6_K_group(three, ql, qh, sc, d, xq, xd, bs16, n_tok, n, nb, width, g, w, scales, dv, acc, out)


# -- Q4_K (repacked by ggml: gemm / gemv) ------------------------------------------------------------


@njit(cache=True, inline="always")
def _widen_q4_K_block(qs, qh, five, sc, d, dmin, gb, slot, w, scales, mins, dv, dminv):
    """Block ``gb`` into buffer slot ``slot``: nibbles to bytes in ``w`` ([slot][lane][16][4]), with
    Q5_K's fifth bits (``five``: bit 2c of ``qh`` for the low nibbles of 64-value chunk c, bit
    2c+1 for the high ones); 6-bit scales as int32 and minimums as float32 lanes
    ([slot][sub-block][16]); d and dmin as float32."""
    low = vsplat_i(0x0F0F0F0F)
    one = vsplat_i(0x01010101)
    m63 = vsplat_i(63)
    for c in range(4):
        for i in range(8):
            v = vload_i(qs, (gb * 32 + 8 * c + i) * LANE_BYTES)
            lo = vand_i(v, low)
            hi = vand_i(vsrl_i(v, 4), low)
            if five:
                h = vload_i(qh, (gb * 8 + i) * LANE_BYTES)
                lo = vor_i(lo, vsll_i(vand_i(vsrl_i(h, 2 * c), one), 4))
                hi = vor_i(hi, vsll_i(vand_i(vsrl_i(h, 2 * c + 1), one), 4))
            vstore_i(w, (slot * LANES + 16 * c + i) * LANE_BYTES, lo)
            vstore_i(w, (slot * LANES + 16 * c + 8 + i) * LANE_BYTES, hi)
    so = gb * 12
    for j in range(8):
        if j < 4:
            s = vand_i(vload_u8(sc, (so + j) * GROUP), m63)
            m = vand_i(vload_u8(sc, (so + j + 4) * GROUP), m63)
        else:
            hi = vload_u8(sc, (so + j + 4) * GROUP)
            s = vor_i(vand_i(hi, vsplat_i(15)), vsll_i(vsrl_i(vload_u8(sc, (so + j - 4) * GROUP), 6), 4))
            m = vor_i(vsrl_i(hi, 4), vsll_i(vsrl_i(vload_u8(sc, (so + j) * GROUP), 6), 4))
        vstore_i(scales, (slot * 8 + j) * GROUP, s)
        vstore_f(mins, (slot * 8 + j) * GROUP, vcvt(m))
    vstore_f(dv, slot * GROUP, vload_f16(d, gb * GROUP))
    vstore_f(dminv, slot * GROUP, vload_f16(dmin, gb * GROUP))


@njit(cache=True, inline="always")
def _q4_sub(w, xq, slot, s, xo):
    """Σ of the 32 products of sub-block ``s`` (exact int32) for 16 rows."""
    dot = vzero_i()
    for k in range(8):
        dot = vdpbusd(dot, vload_i(w, (slot * LANES + 8 * s + k) * LANE_BYTES), vbcast_i(xq, xo + 32 * s + 4 * k))
    return dot


@njit(cache=True, inline="always")
def _q4_block(gemm, w, scales, mins, dv, dminv, slot, xq, xd, sums32, xo, tb, acc, accm):
    """One block's step of the q4_K_8x8 gemm (a float step per 64 values) or gemv (per 256)."""
    xdb = vsplat_f(xd[tb])
    dd = vmul_f(vload_f(dv, slot * GROUP), xdb)
    dm = vmul_f(vload_f(dminv, slot * GROUP), xdb)
    if gemm:
        for p in range(4):
            s0 = 2 * p
            i = vadd_i(vmul_i(_q4_sub(w, xq, slot, s0, xo), vload_i(scales, (slot * 8 + s0) * GROUP)),
                       vmul_i(_q4_sub(w, xq, slot, s0 + 1, xo), vload_i(scales, (slot * 8 + s0 + 1) * GROUP)))
            acc = vfma(vcvt(i), dd, acc)
            m = vfma(vload_f(mins, (slot * 8 + s0 + 1) * GROUP), vsplat_f(sums32[tb * 8 + s0 + 1]),
                     vmul_f(vload_f(mins, (slot * 8 + s0) * GROUP), vsplat_f(sums32[tb * 8 + s0])))
            accm = vfma(m, dm, accm)
    else:
        i = vzero_i()
        m = vzero_f()
        for s in range(8):
            i = vadd_i(i, vmul_i(_q4_sub(w, xq, slot, s, xo), vload_i(scales, (slot * 8 + s) * GROUP)))
            # every product and partial sum is an integer below 2^24: exact in float32
            m = vfma(vload_f(mins, (slot * 8 + s) * GROUP), vsplat_f(sums32[tb * 8 + s]), m)
        acc = vfma(vcvt(i), dd, acc)
        accm = vfma(m, dm, accm)
    return acc, accm


@njit(cache=True, inline="always")
def _q4_pair(gemm, w, scales, mins, dv, dminv, slot, xq, xd, sums32, xo, tb, xo_u, tb_u, acc, accm, acc_u, accm_u):
    """:func:`_q4_block` for two tokens that take the same kernel, sharing each loaded weight lane."""
    xdb = vsplat_f(xd[tb])
    xdb_u = vsplat_f(xd[tb_u])
    dvs = vload_f(dv, slot * GROUP)
    dms = vload_f(dminv, slot * GROUP)
    dd = vmul_f(dvs, xdb)
    dm = vmul_f(dms, xdb)
    dd_u = vmul_f(dvs, xdb_u)
    dm_u = vmul_f(dms, xdb_u)
    i = vzero_i()
    i_u = vzero_i()
    m = vzero_f()
    m_u = vzero_f()
    for s in range(8):
        dot = vzero_i()
        dot_u = vzero_i()
        for k in range(8):
            wl = vload_i(w, (slot * LANES + 8 * s + k) * LANE_BYTES)
            dot = vdpbusd(dot, wl, vbcast_i(xq, xo + 32 * s + 4 * k))
            dot_u = vdpbusd(dot_u, wl, vbcast_i(xq, xo_u + 32 * s + 4 * k))
        sc = vload_i(scales, (slot * 8 + s) * GROUP)
        mn = vload_f(mins, (slot * 8 + s) * GROUP)
        if gemm:
            if s % 2 == 0:
                i = vmul_i(dot, sc)
                i_u = vmul_i(dot_u, sc)
                m = vmul_f(mn, vsplat_f(sums32[tb * 8 + s]))
                m_u = vmul_f(mn, vsplat_f(sums32[tb_u * 8 + s]))
            else:
                i = vadd_i(i, vmul_i(dot, sc))
                i_u = vadd_i(i_u, vmul_i(dot_u, sc))
                acc = vfma(vcvt(i), dd, acc)
                acc_u = vfma(vcvt(i_u), dd_u, acc_u)
                accm = vfma(vfma(mn, vsplat_f(sums32[tb * 8 + s]), m), dm, accm)
                accm_u = vfma(vfma(mn, vsplat_f(sums32[tb_u * 8 + s]), m_u), dm_u, accm_u)
        else:
            i = vadd_i(i, vmul_i(dot, sc))
            i_u = vadd_i(i_u, vmul_i(dot_u, sc))
            m = vfma(mn, vsplat_f(sums32[tb * 8 + s]), m)
            m_u = vfma(mn, vsplat_f(sums32[tb_u * 8 + s]), m_u)
    if not gemm:
        acc = vfma(vcvt(i), dd, acc)
        accm = vfma(m, dm, accm)
        acc_u = vfma(vcvt(i_u), dd_u, acc_u)
        accm_u = vfma(m_u, dm_u, accm_u)
    return acc, accm, acc_u, accm_u


@njit(cache=True, parallel=True, error_model="numpy")
def _many_q4_K(qs, qh, five, sc, d, dmin, xq, xd, sums32, n_tok, n, n_groups, split, repacked, out):
    """Repacked weights: tokens before ``split`` in the q4_K_8x8 gemm's order, the rest in the
    gemv's; other weights: the tiled kernel's."""
    nb = n // QK_K
    width = n_groups * GROUP
    n_chunks_t = (n_tok + TOKEN_CHUNK - 1) // TOKEN_CHUNK
    for task in prange(n_groups * n_chunks_t):
        g = task % n_groups
        t0 = (task // n_groups) * TOKEN_CHUNK
        w = np.empty(nb * BLOCK_SCRATCH, np.uint8)
        scales = np.empty(nb * 8 * GROUP, np.int32)
        mins = np.empty(nb * 8 * GROUP, np.float32)
        dv = np.empty(nb * GROUP, np.float32)
        dminv = np.empty(nb * GROUP, np.float32)
        for b in range(nb):
            _widen_q4_K_block(qs, qh, five, sc, d, dmin, g * nb + b, b, w, scales, mins, dv, dminv)
        t_end = min(n_tok, t0 + TOKEN_CHUNK)
        t = t0
        while not repacked and t < t_end:
            acc = vzero_f()
            for b in range(nb):
                acc = _q4_tiled_block(w, scales, mins, dv, dminv, b, xq, xd, sums32, t * n + b * QK_K, t * nb + b, acc)
            vstore_f(out, t * width + g * GROUP, acc)
            t += 1
        while t < t_end:
            if t + 1 < t_end and (t + 1 < split or t >= split):  # a pair in the same kernel (gemm or gemv)
                acc = vzero_f()
                accm = vzero_f()
                acc_u = vzero_f()
                accm_u = vzero_f()
                for b in range(nb):
                    acc, accm, acc_u, accm_u = _q4_pair(t < split, w, scales, mins, dv, dminv, b, xq, xd, sums32,
                                                        t * n + b * QK_K, t * nb + b, (t + 1) * n + b * QK_K,
                                                        (t + 1) * nb + b, acc, accm, acc_u, accm_u)
                vstore_f(out, t * width + g * GROUP, vsub_f(acc, accm))
                vstore_f(out, (t + 1) * width + g * GROUP, vsub_f(acc_u, accm_u))
                t += 2
            else:
                acc = vzero_f()
                accm = vzero_f()
                for b in range(nb):
                    acc, accm = _q4_block(t < split, w, scales, mins, dv, dminv, b, xq, xd, sums32, t * n + b * QK_K,
                                          t * nb + b, acc, accm)
                vstore_f(out, t * width + g * GROUP, vsub_f(acc, accm))
                t += 1


@njit(cache=True, inline="always")
def _q4_tiled_block(w, scales, mins, dv, dminv, slot, xq, xd, sums32, xo, tb, acc):
    """The tiled kernel (Q4_K not repacked, 8 tokens or more): exact S1 = Σ scale·dot and
    S2 = Σ min·sum, then ``fma(fma(-dmin_w, S2, float(S1)·d_w), d_x, acc)``."""
    s1 = vzero_i()
    s2 = vzero_f()
    for s in range(8):
        s1 = vadd_i(s1, vmul_i(_q4_sub(w, xq, slot, s, xo), vload_i(scales, (slot * 8 + s) * GROUP)))
        # integers below 2^24: exact in float32
        s2 = vfma(vload_f(mins, (slot * 8 + s) * GROUP), vsplat_f(sums32[tb * 8 + s]), s2)
    res = vfma(vsub_f(vzero_f(), vload_f(dminv, slot * GROUP)), s2, vmul_f(vcvt(s1), vload_f(dv, slot * GROUP)))
    return vfma(res, vsplat_f(xd[tb]), acc)


@njit(cache=True, inline="always")
def _q4_vec_block(five, w, scales, mins, dv, dminv, slot, xq, xd, sums32, xo, tb, acc, o):
    """ggml_vec_dot_q4_K_q8_K / ggml_vec_dot_q5_K_q8_K (not repacked, fewer than 8 tokens), one
    block: eight lanes ``fma(d_x·d_w, float(Σ scale·(4 products)), lane)`` kept in ``acc[o:]``, and
    the minimums: Q4_K's four lanes ``fma(dmin, m·s of two sub-blocks, lane)``, or Q5_K's single
    running ``summs = fma(dmin, Σ m·s, summs)`` (its scalar ``summs += dmin * sum``, contracted)."""
    d = vmul_f(vsplat_f(xd[tb]), vload_f(dv, slot * GROUP))
    dmin = vmul_f(vsplat_f(-xd[tb]), vload_f(dminv, slot * GROUP))
    if five:
        prod = vzero_f()
        for s in range(8):  # integers below 2^24: exact in float32, in any order
            prod = vfma(vload_f(mins, (slot * 8 + s) * GROUP), vsplat_f(sums32[tb * 8 + s]), prod)
        a = o + 8 * GROUP
        vstore_f(acc, a, vfma(dmin, prod, vload_f(acc, a)))
    else:
        for i in range(4):
            s0 = 2 * i
            prod = vfma(vload_f(mins, (slot * 8 + s0 + 1) * GROUP), vsplat_f(sums32[tb * 8 + s0 + 1]),
                        vmul_f(vload_f(mins, (slot * 8 + s0) * GROUP), vsplat_f(sums32[tb * 8 + s0])))
            a = o + (8 + i) * GROUP
            vstore_f(acc, a, vfma(dmin, prod, vload_f(acc, a)))
    for k in range(8):
        lane = vzero_i()
        for s in range(8):
            p = vdpbusd(vzero_i(), vload_i(w, (slot * LANES + 8 * s + k) * LANE_BYTES), vbcast_i(xq, xo + 32 * s + 4 * k))
            # |p| < 2^15: a 16-bit multiply-add (vpmaddwd)
            lane = vadd_i(lane, vmul_i(vsra_i(vsll_i(p, 16), 16), vload_i(scales, (slot * 8 + s) * GROUP)))
        a = o + k * GROUP
        vstore_f(acc, a, vfma(d, vcvt(lane), vload_f(acc, a)))


@njit(cache=True, inline="always")
def _q4_vec_result(five, acc, o):
    """hsum_float_8 of the eight lanes plus the minimums: Q4_K's lanes folded as (m0+m2) + (m1+m3),
    Q5_K's summs."""
    y = vhsum8(vload_f(acc, o), vload_f(acc, o + 16), vload_f(acc, o + 32), vload_f(acc, o + 48),
               vload_f(acc, o + 64), vload_f(acc, o + 80), vload_f(acc, o + 96), vload_f(acc, o + 112))
    if five:
        return vadd_f(y, vload_f(acc, o + 128))
    m = vadd_f(vadd_f(vload_f(acc, o + 128), vload_f(acc, o + 160)), vadd_f(vload_f(acc, o + 144), vload_f(acc, o + 176)))
    return vadd_f(y, m)


@njit(cache=True, inline="always")
def _few_q4_K_group(qs, qh, five, sc, d, dmin, xq, xd, sums32, n_tok, n, nb, width, split, repacked, g, w, scales,
                    mins, dv, dminv, acc, out):
    """Group ``g`` for every token, through the buffers given (per token: 2 sums for the repacked
    gemm/gemv, 12 lanes for the vec_dot)."""
    acc[:] = 0
    for b in range(nb):
        _widen_q4_K_block(qs, qh, five, sc, d, dmin, g * nb + b, 0, w, scales, mins, dv, dminv)
        for t in range(n_tok):
            if repacked:
                o = t * 2 * GROUP
                a, am = _q4_block(t < split, w, scales, mins, dv, dminv, 0, xq, xd, sums32, t * n + b * QK_K,
                                  t * nb + b, vload_f(acc, o), vload_f(acc, o + GROUP))
                vstore_f(acc, o, a)
                vstore_f(acc, o + GROUP, am)
            else:
                _q4_vec_block(five, w, scales, mins, dv, dminv, 0, xq, xd, sums32, t * n + b * QK_K, t * nb + b, acc,
                              t * 12 * GROUP)
    for t in range(n_tok):
        if repacked:
            o = t * 2 * GROUP
            vstore_f(out, t * width + g * GROUP, vsub_f(vload_f(acc, o), vload_f(acc, o + GROUP)))
        else:
            vstore_f(out, t * width + g * GROUP, _q4_vec_result(five, acc, t * 12 * GROUP))


@njit(cache=True, parallel=True, error_model="numpy")
def _few_q4_K(qs, qh, five, sc, d, dmin, x, n_groups, repacked, alone, n_tasks, out):
    """A few tokens, from float activations quantized here (with their 32-value sums): block by
    block through a small buffer per task, sums kept per token between blocks; one dispatch and
    one parallel launch per weight. Repacked weights: tokens in fours through the gemm, the rest
    through the gemv, or every token through the gemv when ``alone``."""
    n_tok, n = x.shape
    xq, xd, bs16 = _q8_K_few(x)
    sums32 = np.empty(bs16.shape[0] // 2, F32)
    for i in range(sums32.shape[0]):
        sums32[i] = F32(bs16[2 * i] + bs16[2 * i + 1])
    split = 0 if alone else n_tok - n_tok % REPACK_GROUP
    w_all = np.empty((n_tasks, BLOCK_SCRATCH), np.uint8)
    i_all = np.empty((n_tasks, 8 * GROUP), np.int32)
    f_all = np.empty((n_tasks, (10 + (2 if repacked else 12) * n_tok) * GROUP), F32)
    nb = n // QK_K
    width = n_groups * GROUP
    for task in prange(n_tasks):
        w, scales, fl = w_all[task], i_all[task], f_all[task]
        mins = fl[:8 * GROUP]
        dv = fl[8 * GROUP:9 * GROUP]
        dminv = fl[9 * GROUP:10 * GROUP]
        acc = fl[10 * GROUP:]
        for g in range(task * n_groups // n_tasks, (task + 1) * n_groups // n_tasks):
            _few_q4_K_group(qs, qh, five, sc, d, dmin, xq, xd, sums32, n_tok, n, nb, width, split, repacked, g, w,
                            scales, mins, dv, dminv, acc, out)


# -- the exact packed weights ------------------------------------------------------------------------


class PackedQ6_K:
    """Q6_K in the 16-row layout; ggml's vec_dot below 8 tokens, its tiled kernel from 8 on."""

    activation = "q8_K"
    type_name = "Q6_K"
    three = False
    offset = 32  # the value is the stored code minus this
    block_bytes = 210
    # (first byte, end, word size) of each field in the file's block, stored as ql, qh, sc, d
    fields = ((0, 128, 4), (128, 192, 4), (192, 208, 1), (208, 210, 2))

    def __init__(self, raws, n):
        raws = [r.reshape(r.shape[0], -1) for r in raws]
        self.n, self.rows = n, sum(r.shape[0] for r in raws)
        self.n_groups = g = (self.rows + GROUP - 1) // GROUP
        self.ql, self.qh, self.sc, d = interleave(raws, g, n // QK_K, self.block_bytes,
                                                  [(lo, hi, word, 0) for lo, hi, word in self.fields])
        self.d = d.view(np.uint16)

    def matmul(self, x, alone: bool = False):
        """``x @ W.T``; ``alone``: every row through the vec_dot, as ggml computes a single token."""
        out = np.empty((x.shape[0], self.n_groups * GROUP), np.float32)
        if x.shape[0] >= TILED_MIN_TOKENS and not alone:
            a = KActivations(x)
            _many_q6_K(self.three, self.ql, self.qh, self.sc, self.d, a.xq, a.xd, a.bias(self.offset), a.n_tok,
                       self.n, self.n_groups, out.reshape(-1))
        else:
            _few_q6_K(self.three, self.ql, self.qh, self.sc, self.d, x, self.n_groups, min(self.n_groups, FEW_TASKS),
                      out.reshape(-1))
        return out if out.shape[1] == self.rows else np.ascontiguousarray(out[:, :self.rows])

    def _raw(self):
        nb = self.n // QK_K
        parts = {lo: _deinterleave(a, self.rows, nb, hi - lo, word)
                 for a, (lo, hi, word) in zip((self.ql, self.qh, self.sc, self.d), self.fields)}
        return np.ascontiguousarray(np.concatenate([parts[lo] for lo in sorted(parts)], axis=2)).reshape(self.rows, -1)

    def dequantize(self, r0, out):
        from lamina.quants import dequantize

        out[...] = dequantize(self._raw()[r0:r0 + out.shape[0]], self.type_name, out.shape)


class PackedQ3_K(PackedQ6_K):
    """Q3_K through Q6_K's kernels (ggml's tiled kernel treats both alike, with its bias 4 instead of
    32); below 8 tokens ggml_vec_dot_q3_K_q8_K, whose lanes subtract the 4 per value."""

    type_name = "Q3_K"
    three = True
    offset = 4
    block_bytes = 110
    fields = ((32, 96, 4), (0, 32, 4), (96, 108, 1), (108, 110, 2))  # qs, hmask, scales, d


def _deinterleave(flat, rows, nb, size, word):
    n_groups = (rows + GROUP - 1) // GROUP
    x = flat.view(np.uint8).reshape(n_groups, nb, size // word, GROUP, word).transpose(0, 3, 1, 2, 4)
    return x.reshape(n_groups * GROUP, nb, size)[:rows]


class PackedQ4_K:
    """Q4_K in the 16-row layout. Row counts divisible by 8: ggml's q4_K_8x8 gemm/gemv order;
    others: its vec_dot (fewer than 8 tokens) or tiled kernel."""

    activation = "q8_K"
    type_name = "Q4_K"
    five = False  # Q5_K's fifth bits
    block_bytes = 144
    # (first byte, end, word size) of each field in the file's block, in _raw()'s order
    fields = {"d": (0, 2, 2), "dmin": (2, 4, 2), "sc": (4, 16, 1), "qs": (16, 144, 4)}

    def __init__(self, raws, n):
        raws = [r.reshape(r.shape[0], -1) for r in raws]
        self.n, self.rows = n, sum(r.shape[0] for r in raws)
        self.repacked = self._repacked_by_ggml(raws)
        self.n_groups = g = (self.rows + GROUP - 1) // GROUP
        names = list(self.fields)
        packed = dict(zip(names, interleave(raws, g, n // QK_K, self.block_bytes,
                                            [(lo, hi, word, 0) for lo, hi, word in self.fields.values()])))
        self.qs, self.sc = packed["qs"], packed["sc"]
        self.qh = packed.get("qh", np.zeros(1, np.uint8))
        self.d, self.dmin = packed["d"].view(np.uint16), packed["dmin"].view(np.uint16)

    @staticmethod
    def _repacked_by_ggml(raws) -> bool:
        return all(r.shape[0] % 8 == 0 for r in raws)

    def _raw(self):
        nb = self.n // QK_K
        parts = [_deinterleave(getattr(self, name), self.rows, nb, hi - lo, word)
                 for name, (lo, hi, word) in self.fields.items()]
        return np.ascontiguousarray(np.concatenate(parts, axis=2)).reshape(self.rows, -1)

    def matmul(self, x, alone: bool = False):
        """``x @ W.T``; ``alone``: every row as ggml computes a single token (the gemv or vec_dot)."""
        out = np.empty((x.shape[0], self.n_groups * GROUP), np.float32)
        if x.shape[0] < TILED_MIN_TOKENS or alone:
            _few_q4_K(self.qs, self.qh, self.five, self.sc, self.d, self.dmin, x, self.n_groups, self.repacked,
                      alone, min(self.n_groups, FEW_TASKS), out.reshape(-1))
        else:
            a = KActivations(x)
            _many_q4_K(self.qs, self.qh, self.five, self.sc, self.d, self.dmin, a.xq, a.xd, a.sums32(), a.n_tok,
                       self.n, self.n_groups, a.n_tok - a.n_tok % REPACK_GROUP, self.repacked, out.reshape(-1))
        return out if out.shape[1] == self.rows else np.ascontiguousarray(out[:, :self.rows])

    def dequantize(self, r0, out):
        from lamina.quants import dequantize

        out[...] = dequantize(self._raw()[r0:r0 + out.shape[0]], self.type_name, out.shape)


class PackedQ5_K(PackedQ4_K):
    """Q5_K: Q4_K's kernels with the fifth bit of each value; ggml never repacks it on x86, so its
    vec_dot (fewer than 8 tokens, with a scalar running sum of the minimums) or the tiled kernel
    (the same as Q4_K's)."""

    type_name = "Q5_K"
    five = True
    block_bytes = 176
    fields = {"d": (0, 2, 2), "dmin": (2, 4, 2), "sc": (4, 16, 1), "qh": (16, 48, 4), "qs": (48, 176, 4)}

    @staticmethod
    def _repacked_by_ggml(raws) -> bool:
        return False


PACKERS = {
    "Q3_K": PackedQ3_K,
    "Q4_K": PackedQ4_K,
    "Q5_K": PackedQ5_K,
    "Q6_K": PackedQ6_K,
}

"""Kernels for the 32-value block formats Q8_0, Q5_0, Q5_1, Q4_0 and Q4_1, exact to llama.cpp.

llama.cpp multiplies these weights by the activation quantized to 8 bits (Q8_0, or Q8_1 for
the formats with a minimum) and adds the products as ggml's kernels do (see
:mod:`.ggml_reference`): per output value eight float lanes, lane k of each block taking
``fma(d_w·d_x, float(Σ of its 4 integer products), lane)``, folded by ``hsum_float_8``; Q4_1 and
Q5_1 add a running ``fma(m, s, summs)``; Q4_0 weights whose row count is a multiple of 8 are
repacked by ggml and take one ``fma(float(Σ of 32 products), d_w·d_x, acc)`` per block. These
kernels repeat exactly that, so their results are llama.cpp's bit for bit, for any batch size.

Layout (made once at load time, the file's bytes rearranged, same size): rows in groups of 16;
for each group and block, lane k's 4 weight bytes of the 16 rows are 64 contiguous bytes, so
one vector instruction (``vdpbusd``, :mod:`.simd`) forms lane k for 16 rows at once against the
activation's 4 bytes of that lane. Nibble formats keep two lanes per byte (k and k+4, as the
file does) and are unpacked per group into a small buffer; Q8_0 is stored with +128 so that
the weight is the unsigned operand. The activation side carries the matching correction
``-offset · Σ(its 4 bytes)`` per lane, so every lane sum is the exact signed integer. Where the
byte products saturate in pairs (``vpmaddubsw``: the avx512 and avx2 families), Q8_0 stays signed
and takes :func:`.simd.vdpbssd` instead, ggml's own answer to the same limit.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, prange

from .common import F16_TO_F32, F32, release_file_pages, weight_buffer
from .simd import (NARROW, SIGNED_Q8, vspread_bits, round_f16, v8bcast_i, v8load_f, v8load_f16, v8load_i, v8splat_f, v8splat_i,
                   v8store_f, v8zero_f, vabs_f, vadd_f, vadd_i, vand_i, vbcast_i, vcvt, vdpbssd, vdpbusd, vfma, vhmax_f, vhsum8, vlane_i, vload_f,
                   vload_f16, vload_i, vmax_f, vmul_f, vor_i, vrint_f, vsplat_f, vsplat_i, vsrl_i,
                   vstore_f, vstore_i, vstore_i8, vsum4_i, vtoi, vzero_f, vzero_i)

GROUP = 16  # rows per vector
LANE_BYTES = 64  # one lane of one block for 16 rows

Q8_0, Q5_0, Q5_1, Q4_0, Q4_1 = range(5)
KINDS = {"Q8_0": Q8_0, "Q5_0": Q5_0, "Q5_1": Q5_1, "Q4_0": Q4_0, "Q4_1": Q4_1}
BLOCK_BYTES = {Q8_0: 34, Q5_0: 22, Q5_1: 24, Q4_0: 18, Q4_1: 20}
# what the kernel's unsigned weight byte is minus the signed weight value (the activation side
# subtracts offset · Σx per lane)
OFFSET = {Q8_0: 0 if SIGNED_Q8 else 128, Q5_0: 16, Q5_1: 0, Q4_0: 8, Q4_1: 0}
HAS_MIN = (Q5_1, Q4_1)  # Q8_1 activations, the m·s sum

FEW_TOKENS = 4  # at most this many tokens: weights widened in registers, activations quantized serially
PREPARE_CHUNK = 16  # tokens quantized per parallel task (one block each would drown in scheduling)
TOKEN_CHUNK = 64  # tokens per parallel task: its activations stay in L2 while the group's weights sit in L1
# row groups per parallel task in generation: one group (16 rows, a few µs) per task spent more on
# handing tasks out than on the rows, and two threads ran a layer's small matrices no faster than one
FEW_GROUP_CHUNK = 8


# -- activations -------------------------------------------------------------------------------------


@njit(cache=True, inline="always", error_model="numpy")
def _prepare_block(xf, offset, with_sum, q, xd, xs, corr, task, nb, n):
    """Block ``task`` (token × block) of the activation: quantize_row_q8_0/q8_1 (AVX path: d = amax/127,
    q = round-half-even(x·127/amax)), and each lane's correction ``-offset · Σ of its 4 bytes``."""
    o = (task // nb) * n + (task % nb) * 32
    v0 = vload_f(xf, o)
    v1 = vload_f(xf, o + 16)
    amax = vhmax_f(vmax_f(vabs_f(v0), vabs_f(v1)))
    dd = amax / F32(127.0)
    idv = vsplat_f(F32(127.0) / amax if amax != 0 else F32(0.0))
    q0 = vtoi(vrint_f(vmul_f(v0, idv)))
    q1 = vtoi(vrint_f(vmul_f(v1, idv)))
    vstore_i8(q, o, q0)
    vstore_i8(q, o + 16, q1)
    xd[task] = round_f16(dd)
    s0 = vsum4_i(q0)
    s1 = vsum4_i(q1)
    total = 0
    for k in range(4):
        a = vlane_i(s0, k)
        c = vlane_i(s1, k)
        corr[task * 8 + k] = -offset * a
        corr[task * 8 + 4 + k] = -offset * c
        total += a + c
    if with_sum:
        xs[task] = round_f16(dd * F32(total))


@njit(cache=True, parallel=True, error_model="numpy")
def _prepare_many(x, offset, with_sum, xq, xd, xs, corr):
    """Quantize ``x`` (N, n) to Q8_0 (or Q8_1: ``with_sum``) and fill each lane's correction."""
    n_tok, n = x.shape
    nb = n // 32
    xf = x.reshape(-1)
    n_chunks = (n_tok + PREPARE_CHUNK - 1) // PREPARE_CHUNK
    for c in prange(n_chunks):
        for task in range(c * PREPARE_CHUNK * nb, min(n_tok, (c + 1) * PREPARE_CHUNK) * nb):
            _prepare_block(xf, offset, with_sum, xq, xd, xs, corr, task, nb, n)


@njit(cache=True, error_model="numpy")
def _prepare_few(x, offset, with_sum, xq, xd, xs, corr):
    """The same, in the calling thread (a parallel launch costs more than a few tokens' work)."""
    n_tok, n = x.shape
    nb = n // 32
    xf = x.reshape(-1)
    for task in range(n_tok * nb):
        _prepare_block(xf, offset, with_sum, xq, xd, xs, corr, task, nb, n)


class Activations:
    """An activation batch quantized to Q8_0 (and Q8_1's sums, ``with_sum``): flat arrays the kernels
    index directly. The lane corrections are made for one weight offset; :meth:`for_offset` gives
    them for another (several weight types sharing one quantized activation)."""

    def __init__(self, x: np.ndarray, offset: int, with_sum: bool):
        n_tok, n = x.shape
        nb = n // 32
        self.n_tok, self.n, self.offset, self.with_sum = n_tok, n, offset, with_sum
        self.xq = np.empty(n_tok * n, np.int8)
        self.xd = np.empty(n_tok * nb, np.float32)
        self.xs = np.empty(n_tok * nb if with_sum else 1, np.float32)
        self.corr = np.empty(n_tok * nb * 8, np.int32)
        prepare = _prepare_few if n_tok <= FEW_TOKENS else _prepare_many
        prepare(x, np.int32(offset if offset else -1), with_sum, self.xq, self.xd, self.xs, self.corr)
        self._lane_sums = None if offset else self.corr  # offset 0 needs no correction: keep Σ of each lane
        if not offset:
            self.corr = np.zeros_like(self.corr)

    def for_offset(self, offset: int) -> Activations:
        if offset == self.offset:
            return self
        other = Activations.__new__(Activations)
        other.__dict__.update(self.__dict__)
        lanes = self._lane_sums if self._lane_sums is not None else self.corr // np.int32(-self.offset)
        other.offset, other.corr = offset, lanes * np.int32(-offset)
        return other


# -- the kernel -------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _unpack_block(kind, qs, qh, g, nb, b, out):
    """Block ``b`` of group ``g`` as 8 lanes × 64 unsigned bytes into ``out[b*512:]``."""
    src = ((g * nb + b) * 4) * LANE_BYTES
    dst = b * 8 * LANE_BYTES
    low = vsplat_i(0x0F0F0F0F)
    h = vzero_i()
    if kind == Q5_0 or kind == Q5_1:
        h = vload_i(qh, (g * nb + b) * GROUP)
    for k in range(4):
        v = vload_i(qs, src + k * LANE_BYTES)
        lo = vand_i(v, low)
        hi = vand_i(vsrl_i(v, 4), low)
        if kind == Q5_0 or kind == Q5_1:
            lo = vor_i(lo, vspread_bits(vsrl_i(h, 4 * k)))
            hi = vor_i(hi, vspread_bits(vsrl_i(h, 16 + 4 * k)))
        vstore_i(out, dst + k * LANE_BYTES, lo)
        vstore_i(out, dst + (k + 4) * LANE_BYTES, hi)


@njit(cache=True, inline="always")
def _lanes_of_block(kind, qs, qh, g, nb, b, k):
    """Lanes k and k+4 of block ``b`` of group ``g``, widened to unsigned bytes in registers."""
    if kind == Q8_0:
        base = ((g * nb + b) * 8) * LANE_BYTES
        return vload_i(qs, base + k * LANE_BYTES), vload_i(qs, base + (k + 4) * LANE_BYTES)
    low = vsplat_i(0x0F0F0F0F)
    v = vload_i(qs, ((g * nb + b) * 4 + k) * LANE_BYTES)
    lo = vand_i(v, low)
    hi = vand_i(vsrl_i(v, 4), low)
    if kind == Q5_0 or kind == Q5_1:
        h = vload_i(qh, (g * nb + b) * GROUP)
        lo = vor_i(lo, vspread_bits(vsrl_i(h, 4 * k)))
        hi = vor_i(hi, vspread_bits(vsrl_i(h, 16 + 4 * k)))
    return lo, hi


@njit(cache=True, inline="always")
def _dot(kind, acc, w, x):
    """The byte dot product for this weight type (signed Q8_0 where products saturate in pairs)."""
    if SIGNED_Q8 and kind == Q8_0:
        return vdpbssd(acc, w, x)
    return vdpbusd(acc, w, x)


@njit(cache=True, inline="always")
def _lane(kind, acc, dd, corr, co, w, xq, xo):
    return vfma(dd, vcvt(_dot(kind, vbcast_i(corr, co), w, vbcast_i(xq, xo))), acc)


@njit(cache=True, inline="always")
def _token_from_registers(kind, per_block, qs, qh, d, m, xq, xd, xs, corr, t, n, g):
    """One token's 16 outputs of group ``g``, widening the weights block by block in registers."""
    nb = n // 32
    has_min = kind == Q4_1 or kind == Q5_1
    a0 = vzero_f()
    a1 = vzero_f()
    a2 = vzero_f()
    a3 = vzero_f()
    a4 = vzero_f()
    a5 = vzero_f()
    a6 = vzero_f()
    a7 = vzero_f()
    sm = vzero_f()
    for b in range(nb):
        tb = t * nb + b
        dd = vmul_f(vload_f16(d, (g * nb + b) * GROUP), vsplat_f(xd[tb]))
        xo = t * n + b * 32
        co = tb * 8
        w0, w4 = _lanes_of_block(kind, qs, qh, g, nb, b, 0)
        w1, w5 = _lanes_of_block(kind, qs, qh, g, nb, b, 1)
        w2, w6 = _lanes_of_block(kind, qs, qh, g, nb, b, 2)
        w3, w7 = _lanes_of_block(kind, qs, qh, g, nb, b, 3)
        if per_block:
            s = vbcast_i(corr, co)
            for k in range(1, 8):
                s = vadd_i(s, vbcast_i(corr, co + k))
            s = vdpbusd(s, w0, vbcast_i(xq, xo))
            s = vdpbusd(s, w1, vbcast_i(xq, xo + 4))
            s = vdpbusd(s, w2, vbcast_i(xq, xo + 8))
            s = vdpbusd(s, w3, vbcast_i(xq, xo + 12))
            s = vdpbusd(s, w4, vbcast_i(xq, xo + 16))
            s = vdpbusd(s, w5, vbcast_i(xq, xo + 20))
            s = vdpbusd(s, w6, vbcast_i(xq, xo + 24))
            s = vdpbusd(s, w7, vbcast_i(xq, xo + 28))
            a0 = vfma(vcvt(s), dd, a0)
        else:
            a0 = _lane(kind, a0, dd, corr, co, w0, xq, xo)
            a1 = _lane(kind, a1, dd, corr, co + 1, w1, xq, xo + 4)
            a2 = _lane(kind, a2, dd, corr, co + 2, w2, xq, xo + 8)
            a3 = _lane(kind, a3, dd, corr, co + 3, w3, xq, xo + 12)
            a4 = _lane(kind, a4, dd, corr, co + 4, w4, xq, xo + 16)
            a5 = _lane(kind, a5, dd, corr, co + 5, w5, xq, xo + 20)
            a6 = _lane(kind, a6, dd, corr, co + 6, w6, xq, xo + 24)
            a7 = _lane(kind, a7, dd, corr, co + 7, w7, xq, xo + 28)
            if has_min:
                sm = vfma(vload_f16(m, (g * nb + b) * GROUP), vsplat_f(xs[tb]), sm)
    if per_block:
        return a0
    y = vhsum8(a0, a1, a2, a3, a4, a5, a6, a7)
    return vadd_f(y, sm) if has_min else y


# -- eight rows at a time, for 256-bit registers ---------------------------------------------------
# Sixteen rows' eight lane accumulators fill all sixteen AVX2 registers twice over; eight rows' fill
# half of them. The sums are the same: each row's lanes are added exactly as above.


@njit(cache=True, inline="always")
def _half_lanes(kind, qs, qh, g, nb, b, k, half):
    """Lanes k and k+4 of block ``b`` of group ``g`` for rows 8·half .. 8·half+7, as unsigned bytes."""
    if kind == Q8_0:
        base = ((g * nb + b) * 8) * LANE_BYTES + 32 * half
        return v8load_i(qs, base + k * LANE_BYTES), v8load_i(qs, base + (k + 4) * LANE_BYTES)
    low = v8splat_i(0x0F0F0F0F)
    v = v8load_i(qs, ((g * nb + b) * 4 + k) * LANE_BYTES + 32 * half)
    lo = vand_i(v, low)
    hi = vand_i(vsrl_i(v, 4), low)
    if kind == Q5_0 or kind == Q5_1:
        h = v8load_i(qh, (g * nb + b) * GROUP + 8 * half)
        lo = vor_i(lo, vspread_bits(vsrl_i(h, 4 * k)))
        hi = vor_i(hi, vspread_bits(vsrl_i(h, 16 + 4 * k)))
    return lo, hi


@njit(cache=True, inline="always")
def _half_lane(kind, acc, dd, corr, co, w, xq, xo):
    return vfma(dd, vcvt(_dot(kind, v8bcast_i(corr, co), w, v8bcast_i(xq, xo))), acc)


@njit(cache=True, inline="always")
def _half_token(kind, per_block, qs, qh, d, m, xq, xd, xs, corr, t, n, g, half):
    """:func:`_token_from_registers` for rows 8·half .. 8·half+7 of group ``g``."""
    nb = n // 32
    has_min = kind == Q4_1 or kind == Q5_1
    a0 = v8zero_f()
    a1 = v8zero_f()
    a2 = v8zero_f()
    a3 = v8zero_f()
    a4 = v8zero_f()
    a5 = v8zero_f()
    a6 = v8zero_f()
    a7 = v8zero_f()
    sm = v8zero_f()
    for b in range(nb):
        tb = t * nb + b
        dd = vmul_f(v8load_f16(d, (g * nb + b) * GROUP + 8 * half), v8splat_f(xd[tb]))
        xo = t * n + b * 32
        co = tb * 8
        if per_block:
            s = v8bcast_i(corr, co)
            for k in range(1, 8):
                s = vadd_i(s, v8bcast_i(corr, co + k))
            for k in range(4):
                lo, hi = _half_lanes(kind, qs, qh, g, nb, b, k, half)
                s = vdpbusd(vdpbusd(s, lo, v8bcast_i(xq, xo + 4 * k)), hi, v8bcast_i(xq, xo + 16 + 4 * k))
            a0 = vfma(vcvt(s), dd, a0)
            continue
        w0, w4 = _half_lanes(kind, qs, qh, g, nb, b, 0, half)
        a0 = _half_lane(kind, a0, dd, corr, co, w0, xq, xo)
        a4 = _half_lane(kind, a4, dd, corr, co + 4, w4, xq, xo + 16)
        w1, w5 = _half_lanes(kind, qs, qh, g, nb, b, 1, half)
        a1 = _half_lane(kind, a1, dd, corr, co + 1, w1, xq, xo + 4)
        a5 = _half_lane(kind, a5, dd, corr, co + 5, w5, xq, xo + 20)
        w2, w6 = _half_lanes(kind, qs, qh, g, nb, b, 2, half)
        a2 = _half_lane(kind, a2, dd, corr, co + 2, w2, xq, xo + 8)
        a6 = _half_lane(kind, a6, dd, corr, co + 6, w6, xq, xo + 24)
        w3, w7 = _half_lanes(kind, qs, qh, g, nb, b, 3, half)
        a3 = _half_lane(kind, a3, dd, corr, co + 3, w3, xq, xo + 12)
        a7 = _half_lane(kind, a7, dd, corr, co + 7, w7, xq, xo + 28)
        if has_min:
            sm = vfma(v8load_f16(m, (g * nb + b) * GROUP + 8 * half), v8splat_f(xs[tb]), sm)
    if per_block:
        return a0
    y = vhsum8(a0, a1, a2, a3, a4, a5, a6, a7)
    return vadd_f(y, sm) if has_min else y


@njit(cache=True, inline="always")
def _few_outputs(kind, per_block, qs, qh, d, m, xq, xd, xs, corr, t, n, g, out, o):
    """One token's 16 outputs of group ``g`` into ``out[o:o+16]``: 16 rows at once, or 8 at a time."""
    if NARROW:
        for half in range(2):
            v8store_f(out, o + 8 * half, _half_token(kind, per_block, qs, qh, d, m, xq, xd, xs, corr, t, n, g, half))
    else:
        vstore_f(out, o, _token_from_registers(kind, per_block, qs, qh, d, m, xq, xd, xs, corr, t, n, g))


@njit(cache=True, parallel=True, error_model="numpy")
def _matmul_few(kind, per_block, qs, qh, d, m, xq, xd, xs, corr, n_tok, n, n_groups, out):
    """A few tokens (generation): the weights are read once, widened in registers, no buffers."""
    width = n_groups * GROUP
    for task in prange((n_groups + FEW_GROUP_CHUNK - 1) // FEW_GROUP_CHUNK):
        for g in range(task * FEW_GROUP_CHUNK, min(n_groups, (task + 1) * FEW_GROUP_CHUNK)):
            for t in range(n_tok):
                _few_outputs(kind, per_block, qs, qh, d, m, xq, xd, xs, corr, t, n, g, out, t * width + g * GROUP)


def _few_floats_kernel(kind: int, per_block: bool):
    """:func:`_matmul_few` from float activations, quantized first in the same compiled call (a
    generation step then pays one dispatch and no Python-side buffers per weight), compiled for one
    weight type: with the type a constant, the other types' branches fold away, which made a
    generation step's Q4_1 products ~15% faster on AVX2 (no type tests left in the inner loop) and
    each kernel compile in half the time of one for every type. Built on first use, cached per type.
    (Its loop over row groups is :func:`_matmul_few`'s; calling that instead would cost a second
    parallel launch per product.)"""
    kernel = _FEW_FLOATS.get((kind, per_block))
    if kernel is None:
        kernel = _FEW_FLOATS[(kind, per_block)] = _make_few_floats(kind, per_block)
    return kernel


_FEW_FLOATS: dict = {}


def _make_few_floats(kind: int, per_block: bool):
    @njit(cache=True, parallel=True, error_model="numpy")
    def _matmul_few_floats(qs, qh, d, m, x, offset, with_sum, n, n_groups, out):
        # kind and per_block are this closure's constants (Numba's cache keys each by their values)
        n_tok = x.shape[0]
        nb = n // 32
        xq = np.empty(n_tok * n, np.int8)
        xd = np.empty(n_tok * nb, F32)
        xs = np.empty(n_tok * nb if with_sum else 1, F32)
        corr = np.empty(n_tok * nb * 8, np.int32)
        _prepare_few(x, offset, with_sum, xq, xd, xs, corr)  # offset 0: every correction is 0
        xqu = xq.view(np.uint8)
        width = n_groups * GROUP
        for task in prange((n_groups + FEW_GROUP_CHUNK - 1) // FEW_GROUP_CHUNK):
            for g in range(task * FEW_GROUP_CHUNK, min(n_groups, (task + 1) * FEW_GROUP_CHUNK)):
                for t in range(n_tok):
                    _few_outputs(kind, per_block, qs, qh, d, m, xqu, xd, xs, corr, t, n, g, out, t * width + g * GROUP)

    return _matmul_few_floats


@njit(cache=True, inline="always")
def _block_sums(w, wbase, dv, xd, xq, corr, t, nb, n):
    """Repacked Q4_0 (ggml's q4_0_8x8): one ``fma(float(Σ of 32 products), d_w·d_x, acc)`` per block."""
    acc = vzero_f()
    for b in range(nb):
        tb = t * nb + b
        dd = vmul_f(vload_f(dv, b * GROUP), vsplat_f(xd[tb]))
        wo = wbase + b * 8 * LANE_BYTES
        xo = t * n + b * 32
        s = vbcast_i(corr, tb * 8)
        for k in range(1, 8):
            s = vadd_i(s, vbcast_i(corr, tb * 8 + k))
        for k in range(8):
            s = vdpbusd(s, vload_i(w, wo + k * LANE_BYTES), vbcast_i(xq, xo + 4 * k))
        acc = vfma(vcvt(s), dd, acc)
    return acc


@njit(cache=True, inline="always")
def _lane_sums_pair(kind, w, wbase, dv, mv, has_min, xd, xq, xs, corr, t, u, nb, n):
    """Two tokens' 16 outputs (eight lanes each, ``hsum_float_8``, plus the m·s sum for Q4_1/Q5_1),
    sharing each loaded weight lane between them."""
    a0 = vzero_f()
    a1 = vzero_f()
    a2 = vzero_f()
    a3 = vzero_f()
    a4 = vzero_f()
    a5 = vzero_f()
    a6 = vzero_f()
    a7 = vzero_f()
    b0 = vzero_f()
    b1 = vzero_f()
    b2 = vzero_f()
    b3 = vzero_f()
    b4 = vzero_f()
    b5 = vzero_f()
    b6 = vzero_f()
    b7 = vzero_f()
    sa = vzero_f()
    sb = vzero_f()
    for b in range(nb):
        ta = t * nb + b
        tb = u * nb + b
        dvb = vload_f(dv, b * GROUP)
        da = vmul_f(dvb, vsplat_f(xd[ta]))
        db = vmul_f(dvb, vsplat_f(xd[tb]))
        wo = wbase + b * 8 * LANE_BYTES
        xa = t * n + b * 32
        xb = u * n + b * 32
        ca = ta * 8
        cb = tb * 8
        w0 = vload_i(w, wo)
        a0 = _lane(kind, a0, da, corr, ca, w0, xq, xa)
        b0 = _lane(kind, b0, db, corr, cb, w0, xq, xb)
        w1 = vload_i(w, wo + 64)
        a1 = _lane(kind, a1, da, corr, ca + 1, w1, xq, xa + 4)
        b1 = _lane(kind, b1, db, corr, cb + 1, w1, xq, xb + 4)
        w2 = vload_i(w, wo + 128)
        a2 = _lane(kind, a2, da, corr, ca + 2, w2, xq, xa + 8)
        b2 = _lane(kind, b2, db, corr, cb + 2, w2, xq, xb + 8)
        w3 = vload_i(w, wo + 192)
        a3 = _lane(kind, a3, da, corr, ca + 3, w3, xq, xa + 12)
        b3 = _lane(kind, b3, db, corr, cb + 3, w3, xq, xb + 12)
        w4 = vload_i(w, wo + 256)
        a4 = _lane(kind, a4, da, corr, ca + 4, w4, xq, xa + 16)
        b4 = _lane(kind, b4, db, corr, cb + 4, w4, xq, xb + 16)
        w5 = vload_i(w, wo + 320)
        a5 = _lane(kind, a5, da, corr, ca + 5, w5, xq, xa + 20)
        b5 = _lane(kind, b5, db, corr, cb + 5, w5, xq, xb + 20)
        w6 = vload_i(w, wo + 384)
        a6 = _lane(kind, a6, da, corr, ca + 6, w6, xq, xa + 24)
        b6 = _lane(kind, b6, db, corr, cb + 6, w6, xq, xb + 24)
        w7 = vload_i(w, wo + 448)
        a7 = _lane(kind, a7, da, corr, ca + 7, w7, xq, xa + 28)
        b7 = _lane(kind, b7, db, corr, cb + 7, w7, xq, xb + 28)
        if has_min:
            mvb = vload_f(mv, b * GROUP)
            sa = vfma(mvb, vsplat_f(xs[ta]), sa)
            sb = vfma(mvb, vsplat_f(xs[tb]), sb)
    ya = vhsum8(a0, a1, a2, a3, a4, a5, a6, a7)
    yb = vhsum8(b0, b1, b2, b3, b4, b5, b6, b7)
    if has_min:
        return vadd_f(ya, sa), vadd_f(yb, sb)
    return ya, yb


@njit(cache=True, inline="always")
def _half_sums(kind, w, wbase, dv, mv, has_min, xd, xq, xs, corr, t, nb, n, half):
    """One token's outputs for rows 8·half .. 8·half+7, from the group's widened weights ``w``."""
    a0 = v8zero_f()
    a1 = v8zero_f()
    a2 = v8zero_f()
    a3 = v8zero_f()
    a4 = v8zero_f()
    a5 = v8zero_f()
    a6 = v8zero_f()
    a7 = v8zero_f()
    sm = v8zero_f()
    for b in range(nb):
        tb = t * nb + b
        dd = vmul_f(v8load_f(dv, b * GROUP + 8 * half), v8splat_f(xd[tb]))
        wo = wbase + b * 8 * LANE_BYTES + 32 * half
        xo = t * n + b * 32
        co = tb * 8
        a0 = _half_lane(kind, a0, dd, corr, co, v8load_i(w, wo), xq, xo)
        a1 = _half_lane(kind, a1, dd, corr, co + 1, v8load_i(w, wo + 64), xq, xo + 4)
        a2 = _half_lane(kind, a2, dd, corr, co + 2, v8load_i(w, wo + 128), xq, xo + 8)
        a3 = _half_lane(kind, a3, dd, corr, co + 3, v8load_i(w, wo + 192), xq, xo + 12)
        a4 = _half_lane(kind, a4, dd, corr, co + 4, v8load_i(w, wo + 256), xq, xo + 16)
        a5 = _half_lane(kind, a5, dd, corr, co + 5, v8load_i(w, wo + 320), xq, xo + 20)
        a6 = _half_lane(kind, a6, dd, corr, co + 6, v8load_i(w, wo + 384), xq, xo + 24)
        a7 = _half_lane(kind, a7, dd, corr, co + 7, v8load_i(w, wo + 448), xq, xo + 28)
        if has_min:
            sm = vfma(v8load_f(mv, b * GROUP + 8 * half), v8splat_f(xs[tb]), sm)
    y = vhsum8(a0, a1, a2, a3, a4, a5, a6, a7)
    return vadd_f(y, sm) if has_min else y


@njit(cache=True, parallel=True, error_model="numpy")
def _matmul(kind, per_block, qs, qh, d, m, xq, xd, xs, corr, n_tok, n, n_groups, out):
    """Many tokens: each group's weights widened once into a buffer that a chunk of tokens reads."""
    nb = n // 32
    width = n_groups * GROUP
    n_chunks = (n_tok + TOKEN_CHUNK - 1) // TOKEN_CHUNK
    has_min = kind == Q4_1 or kind == Q5_1
    for task in prange(n_groups * n_chunks):
        g = task % n_groups
        t0 = (task // n_groups) * TOKEN_CHUNK
        dv = np.empty(nb * GROUP, np.float32)
        mv = np.empty(nb * GROUP if has_min else 1, np.float32)
        for b in range(nb):
            vstore_f(dv, b * GROUP, vload_f16(d, (g * nb + b) * GROUP))
            if has_min:
                vstore_f(mv, b * GROUP, vload_f16(m, (g * nb + b) * GROUP))
        if kind == Q8_0:
            w = qs
            wbase = g * nb * 8 * LANE_BYTES
        else:
            w = np.empty(nb * 8 * LANE_BYTES, np.uint8)
            wbase = 0
            for b in range(nb):
                _unpack_block(kind, qs, qh, g, nb, b, w)
        t_end = min(n_tok, t0 + TOKEN_CHUNK)
        if NARROW and not per_block:  # (the repacked Q4_0's one sum per block keeps 16 rows: measured faster)
            for t in range(t0, t_end):
                for half in range(2):
                    v8store_f(out, t * width + g * GROUP + 8 * half,
                              _half_sums(kind, w, wbase, dv, mv, has_min, xd, xq, xs, corr, t, nb, n, half))
        elif per_block:
            for t in range(t0, t_end):
                vstore_f(out, t * width + g * GROUP, _block_sums(w, wbase, dv, xd, xq, corr, t, nb, n))
        else:
            for t in range(t0, t_end, 2):
                u = t + 1 if t + 1 < t_end else t
                yt, yu = _lane_sums_pair(kind, w, wbase, dv, mv, has_min, xd, xq, xs, corr, t, u, nb, n)
                vstore_f(out, t * width + g * GROUP, yt)
                vstore_f(out, u * width + g * GROUP, yu)


# -- dequantize (for Linear.dequantized and tests) ---------------------------------------------------


@njit(cache=True, error_model="numpy")
def _dequantize(kind, qs, qh, d, m, n, n_groups, rows, out):
    nb = n // 32
    off = np.int32(OFFSET_ARR[kind])
    w = np.empty(nb * 8 * LANE_BYTES, np.uint8)
    for g in range(n_groups):
        if kind == Q8_0:
            w[:] = qs[g * nb * 8 * LANE_BYTES:(g + 1) * nb * 8 * LANE_BYTES]
        else:
            for b in range(nb):
                _unpack_block(kind, qs, qh, g, nb, b, w)
        for r in range(GROUP):
            row = g * GROUP + r
            if row >= rows:
                break
            for b in range(nb):
                dd = F16_TO_F32[d[(g * nb + b) * GROUP + r]]
                mm = F16_TO_F32[m[(g * nb + b) * GROUP + r]] if kind == Q4_1 or kind == Q5_1 else F32(0)
                for k in range(8):
                    for i in range(4):
                        byte = w[(b * 8 + k) * LANE_BYTES + 4 * r + i]
                        v = (np.int32(np.int8(byte)) if SIGNED_Q8 and kind == Q8_0 else np.int32(byte)) - off
                        if kind == Q4_1 or kind == Q5_1:
                            out[row, b * 32 + 4 * k + i] = F32(v) * dd + mm
                        else:
                            out[row, b * 32 + 4 * k + i] = F32(v) * dd


OFFSET_ARR = np.array([OFFSET[k] for k in range(5)], np.int32)


# -- packing ------------------------------------------------------------------------------------------


INTERLEAVE_GROUPS = 64  # row groups rearranged per step at load time (bounds the file pages held, two steps at once)


def _row_range(raws: list[np.ndarray], r0: int, r1: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rows r0..r1 of the stacked ``raws`` (zero rows past the end), as one (r1-r0, row bytes) array,
    and the pieces of ``raws`` they came from."""
    pieces, start = [], 0
    for raw in raws:
        lo, hi = max(r0, start), min(r1, start + raw.shape[0])
        if lo < hi:
            pieces.append(raw[lo - start:hi - start])
        start += raw.shape[0]
    sources = list(pieces)
    have = sum(p.shape[0] for p in pieces)
    if have < r1 - r0:
        pieces.append(np.zeros((r1 - r0 - have, raws[0].shape[1]), np.uint8))
    return (pieces[0] if len(pieces) == 1 else np.concatenate(pieces)), sources


def interleave(raws: list[np.ndarray], n_groups: int, nb: int, size: int,
               fields: list[tuple[int, int, int, int]]) -> list[np.ndarray]:
    """Bytes lo..hi of each block of the weights ``raws`` (rows × row bytes each, stacked) as the flat
    [group][block][(hi-lo)/word][16 rows][word] layout, for each (lo, hi, word, flip) in ``fields``;
    rows past the last are zero, ``flip`` is XORed into every byte. One pass over the rows,
    INTERLEAVE_GROUPS row groups at a time, giving each chunk's file pages back as soon as it is
    copied: loading a weight costs its own size, not copies of it. The chunks are copied on the
    kernels' threads (NumPy releases the GIL while it copies), which also fault in the new pages side
    by side: a 7B model's 4.5 GB repacked in 2.6-3.2 s instead of 3.4-7.9 s on one thread."""
    units = {1: np.uint8, 2: np.uint16, 4: np.uint32}  # move whole words (numpy copes with misalignment)
    outs = [weight_buffer((n_groups, nb, (hi - lo) // word, GROUP), units[word]) for lo, hi, word, _ in fields]

    def copy_chunk(g0: int) -> None:
        g1 = min(n_groups, g0 + INTERLEAVE_GROUPS)
        chunk, sources = _row_range(raws, g0 * GROUP, g1 * GROUP)
        blocks = chunk.reshape(g1 - g0, GROUP, nb, size)
        for out, (lo, hi, word, flip) in zip(outs, fields):
            unit = units[word]
            words = blocks[:, :, :, lo:hi].view(unit).transpose(0, 2, 3, 1)
            if flip:
                np.bitwise_xor(words, unit(int.from_bytes(bytes([flip]) * word, "little")), out=out[g0:g1])
            else:
                out[g0:g1] = words
        for piece in sources:
            release_file_pages(piece)

    starts = range(0, n_groups, INTERLEAVE_GROUPS)
    workers = min(len(starts), numba.get_num_threads())
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(copy_chunk, starts))
    else:
        for g0 in starts:
            copy_chunk(g0)
    return [out.reshape(-1).view(np.uint8) for out in outs]


class PackedLegacy:
    """A Q8_0/Q5_0/Q5_1/Q4_0/Q4_1 weight (several stacked, when fused) in the 16-row layout."""

    def __init__(self, raws: list[np.ndarray], n: int, type_name: str):
        kind = KINDS[type_name]
        size = BLOCK_BYTES[kind]
        self.kind, self.n, self.type = kind, n, type_name
        nb = n // 32
        raws = [r.reshape(r.shape[0], -1) for r in raws]
        self.rows = sum(r.shape[0] for r in raws)
        self.n_groups = g = (self.rows + GROUP - 1) // GROUP
        has_min = kind in HAS_MIN
        qh_at = {Q5_0: 2, Q5_1: 4}.get(kind)
        fields = [(0, 2, 2, 0), (2, 34, 4, 0 if SIGNED_Q8 else 0x80) if kind == Q8_0 else (size - 16, size, 4, 0)]
        fields += [(2, 4, 2, 0)] if has_min else []
        fields += [(qh_at, qh_at + 4, 4, 0)] if qh_at else []
        packed = interleave(raws, g, nb, size, fields)
        self.d, self.qs = packed[0].view(np.uint16), packed[1]
        self.m = packed[2].view(np.uint16) if has_min else self.d
        self.qh = packed[-1].view(np.uint32) if qh_at else np.zeros(1, np.uint32)
        # ggml repacks Q4_0 (rows divisible by 8) and then adds one float per block, not eight lanes;
        # a fused Q4_0 layer is only built from parts that agree (see linear.fused_linear)
        self.per_block = kind == Q4_0 and all(r.shape[0] % 8 == 0 for r in raws)
        self.offset = OFFSET[kind]
        self.activation = "q8_1" if kind in HAS_MIN else "q8_0"

    def prepare(self, x: np.ndarray) -> Activations:
        return Activations(x, self.offset, self.kind in HAS_MIN)

    def matmul(self, x: np.ndarray, prepared: Activations | None = None, alone: bool = False) -> np.ndarray:
        """``x @ W.T`` (x: (N, n) float32), or from ``prepared`` activations (see :meth:`prepare`).

        ggml's vec_dot and tinyBLAS give these types the same bits for any batch size, so ``alone``
        (each row as a batch of one) changes nothing here."""
        if prepared is None and x.shape[0] <= FEW_TOKENS:
            out = np.empty((x.shape[0], self.n_groups * GROUP), np.float32)
            _few_floats_kernel(self.kind, self.per_block)(self.qs, self.qh, self.d, self.m, x, self.offset,
                                                          self.kind in HAS_MIN, self.n, self.n_groups, out.reshape(-1))
            return out if self.rows == out.shape[1] else np.ascontiguousarray(out[:, :self.rows])
        a = prepared.for_offset(self.offset) if prepared is not None else self.prepare(x)
        out = np.empty((a.n_tok, self.n_groups * GROUP), np.float32)
        kernel = _matmul_few if a.n_tok <= FEW_TOKENS else _matmul
        kernel(self.kind, self.per_block, self.qs, self.qh, self.d, self.m, a.xq.view(np.uint8), a.xd, a.xs,
                a.corr, a.n_tok, self.n, self.n_groups, out.reshape(-1))
        return out if self.rows == out.shape[1] else np.ascontiguousarray(out[:, :self.rows])


    def dequantize(self, r0: int, out: np.ndarray) -> None:
        full = np.empty((self.rows, self.n), np.float32)
        _dequantize(self.kind, self.qs, self.qh, self.d, self.m, self.n, self.n_groups, self.rows, full)
        out[...] = full[r0:r0 + out.shape[0]]


PACKERS = {name: (lambda raws, n, name=name: PackedLegacy(raws, n, name)) for name in KINDS}

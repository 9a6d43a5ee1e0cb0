"""Sixteen-lane vectors inside Numba functions: just enough SIMD to write ggml's integer kernels.

Numba's auto-vectorizer cannot be told to keep llama.cpp's summation order (eight float lanes
per 32-value block, one rounding per step) and at the same time use 8-bit integer dot
products. These helpers give Numba code two value types that live in one 512-bit register,
``V16i`` (16 × int32, or 64 bytes) and ``V16f`` (16 × float32), and the handful of operations
the exact kernels need. They compile to plain LLVM vector IR, which LLVM lowers to whatever
the host has (AVX-512 here, pairs of AVX2 registers elsewhere); the one x86-specific piece is
``vpdpbusd`` (4 unsigned × signed byte products summed into each int32 lane), used when the
host has AVX-512 VNNI and written out in generic IR otherwise (same result, slower).
``LAMINA_SIMD=generic`` forces the generic form (for testing it on a VNNI machine; give that
process its own ``NUMBA_CACHE_DIR``, as compiled code is cached per function, not per setting).

Loads and stores take an array and an element index and do no bounds checks: callers index
within the arrays they allocate. Kernels use them with 1-D (flattened) arrays.

Numba's on-disk cache of a kernel is checked against its own source file only: after editing
this module, touch (or clear the ``__pycache__`` entries of) the modules that use it.
"""

from __future__ import annotations

import os

from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, models, register_model

_I8 = ir.IntType(8)
_I16 = ir.IntType(16)
_I32 = ir.IntType(32)
_F32 = ir.FloatType()
_VI = ir.VectorType(_I32, 16)
_VF = ir.VectorType(_F32, 16)
_VB = ir.VectorType(_I8, 64)


def _host_has_vnni() -> bool:
    if os.environ.get("LAMINA_SIMD", "").lower() == "generic":
        return False
    try:
        features = llvm_binding.get_host_cpu_features()
    except RuntimeError:
        return False
    return bool(features.get("avx512vnni") and features.get("avx512bw") and features.get("avx512f"))


HAS_VNNI = _host_has_vnni()


class V16i(types.Type):
    """16 × int32 in one register (also read as 64 bytes by :func:`vdpbusd`)."""

    def __init__(self):
        super().__init__(name="V16i")


class V16f(types.Type):
    """16 × float32 in one register."""

    def __init__(self):
        super().__init__(name="V16f")


v16i = V16i()
v16f = V16f()


@register_model(V16i)
class _V16iModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VI)


@register_model(V16f)
class _V16fModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VF)


def _element_ptr(context, builder, aryty, ary, idx, target):
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.bitcast(builder.gep(data, [idx]), target.as_pointer())


def _splat(builder, vty, scalar):
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined), ir.Constant(_VI, [0] * 16))


def _is_array(a):
    return isinstance(a, types.Array)


# -- memory -------------------------------------------------------------------------------------


@intrinsic
def vload_i(typingctx, arr, idx):
    """The 64 bytes starting at element ``idx`` of ``arr``, as 16 int32."""
    if not (_is_array(arr) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[1], _VI), align=1)

    return v16i(arr, idx), codegen


@intrinsic
def vload_f(typingctx, arr, idx):
    """16 float32 starting at element ``idx`` of a float32 array."""
    if not (_is_array(arr) and arr.dtype == types.float32 and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[1], _VF), align=4)

    return v16f(arr, idx), codegen


@intrinsic
def vload_f16(typingctx, arr, idx):
    """16 float16 bit patterns (uint16 array) starting at element ``idx``, widened exactly to float32."""
    if not (_is_array(arr) and arr.dtype == types.uint16 and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        vh = ir.VectorType(ir.HalfType(), 16)
        h = builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[1], vh), align=2)
        return builder.fpext(h, _VF)

    return v16f(arr, idx), codegen


@intrinsic
def load_f16(typingctx, arr, idx):
    """The float16 (uint16 array) at element ``idx``, widened exactly to a float32."""
    if not (_is_array(arr) and arr.dtype == types.uint16 and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        h = builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[1], ir.HalfType()), align=2)
        return builder.fpext(h, _F32)

    return types.float32(arr, idx), codegen


def _small_load(extend):
    @intrinsic
    def impl(typingctx, arr, idx):
        if not (_is_array(arr) and isinstance(idx, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            vb = ir.VectorType(_I8, 16)
            b = builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[1], vb), align=1)
            return getattr(builder, extend)(b, _VI)

        return v16i(arr, idx), codegen

    return impl


vload_s8 = _small_load("sext")  # 16 bytes at element ``idx``, as signed int8 widened to int32 lanes
vload_u8 = _small_load("zext")  # 16 bytes at element ``idx``, as unsigned bytes widened to int32 lanes


@intrinsic
def vstore_i(typingctx, arr, idx, v):
    if not (_is_array(arr) and isinstance(idx, types.Integer) and v == v16i):
        return None

    def codegen(context, builder, sig, args):
        builder.store(args[2], _element_ptr(context, builder, sig.args[0], args[0], args[1], _VI), align=1)
        return context.get_dummy_value()

    return types.none(arr, idx, v), codegen


@intrinsic
def vstore_f(typingctx, arr, idx, v):
    if not (_is_array(arr) and arr.dtype == types.float32 and isinstance(idx, types.Integer) and v == v16f):
        return None

    def codegen(context, builder, sig, args):
        builder.store(args[2], _element_ptr(context, builder, sig.args[0], args[0], args[1], _VF), align=4)
        return context.get_dummy_value()

    return types.none(arr, idx, v), codegen


@intrinsic
def vbcast_i(typingctx, arr, idx):
    """The 4 bytes at element ``idx`` of ``arr`` (one int32, or four int8) in every lane."""
    if not (_is_array(arr) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        x = builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[1], _I32), align=1)
        return _splat(builder, _VI, x)

    return v16i(arr, idx), codegen


# -- constants and lanes --------------------------------------------------------------------------


@intrinsic
def vsplat_i(typingctx, x):
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        w = v.type.width
        v = builder.trunc(v, _I32) if w > 32 else (builder.sext(v, _I32) if w < 32 else v)
        return _splat(builder, _VI, v)

    return v16i(x), codegen


@intrinsic
def vsplat_f(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return _splat(builder, _VF, args[0])

    return v16f(x), codegen


@intrinsic
def vzero_i(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_VI, [0] * 16)

    return v16i(), codegen


@intrinsic
def vzero_f(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_VF, [0.0] * 16)

    return v16f(), codegen


@intrinsic
def vlane_f(typingctx, v, i):
    """Lane ``i`` of a V16f, as a float32."""
    if not (v == v16f and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0], builder.trunc(args[1], _I32) if args[1].type.width > 32 else args[1])

    return types.float32(v, i), codegen


@intrinsic
def round_f16(typingctx, x):
    """A float32 rounded to float16 (to nearest, ties to even; vcvtps2ph) and widened back."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.fpext(builder.fptrunc(args[0], ir.HalfType()), _F32)

    return types.float32(x), codegen


@intrinsic
def vround_f16(typingctx, a):
    """Each lane rounded to float16 (to nearest, ties to even; vcvtps2ph) and widened back."""
    if a != v16f:
        return None

    def codegen(context, builder, sig, args):
        return builder.fpext(builder.fptrunc(args[0], ir.VectorType(ir.HalfType(), 16)), _VF)

    return v16f(a), codegen


@intrinsic
def f16_bits(typingctx, x):
    """The float16 bit pattern (as an int32 in 0..65535) nearest to a float32 (vcvtps2ph)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        h = builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), _I16)
        return builder.zext(h, _I32)

    return types.int32(x), codegen


# -- arithmetic --------------------------------------------------------------------------------


def _binary(op, ty):
    @intrinsic
    def impl(typingctx, a, b):
        if a != ty or b != ty:
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])

        return ty(ty, ty), codegen

    return impl


vadd_f = _binary("fadd", v16f)
vdiv_f = _binary("fdiv", v16f)
vsub_f = _binary("fsub", v16f)
vmul_f = _binary("fmul", v16f)
vadd_i = _binary("add", v16i)
vsub_i = _binary("sub", v16i)
vmul_i = _binary("mul", v16i)  # low 32 bits of the product (vpmulld)
vand_i = _binary("and_", v16i)
vor_i = _binary("or_", v16i)


def _shift(op):
    @intrinsic
    def impl(typingctx, a, n):
        if a != v16i or not isinstance(n, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            k = args[1]
            k = builder.trunc(k, _I32) if k.type.width > 32 else (builder.zext(k, _I32) if k.type.width < 32 else k)
            return getattr(builder, op)(args[0], _splat(builder, _VI, k))

        return v16i(a, n), codegen

    return impl


vsrl_i = _shift("lshr")  # logical shift right of each int32 lane
vsra_i = _shift("ashr")  # arithmetic shift right
vsll_i = _shift("shl")


def _unary_f(name):
    @intrinsic
    def impl(typingctx, a):
        if a != v16f:
            return None

        def codegen(context, builder, sig, args):
            fn = builder.module.declare_intrinsic(f"llvm.{name}.v16f32", fnty=ir.FunctionType(_VF, [_VF]))
            return builder.call(fn, args)

        return v16f(a), codegen

    return impl


vabs_f = _unary_f("fabs")
vrint_f = _unary_f("rint")  # round to nearest, ties to even (the default rounding mode)


def _binary_call_f(name):
    @intrinsic
    def impl(typingctx, a, b):
        if a != v16f or b != v16f:
            return None

        def codegen(context, builder, sig, args):
            fn = builder.module.declare_intrinsic(f"llvm.{name}.v16f32", fnty=ir.FunctionType(_VF, [_VF, _VF]))
            return builder.call(fn, args)

        return v16f(a, b), codegen

    return impl


def _select(builder, op, a, b):
    return builder.select(builder.fcmp_ordered(op, a, b), a, b)


def _pick_f(op):
    """a op b ? a : b per lane: maxps / minps (with their NaN rule: the second operand)."""
    @intrinsic
    def impl(typingctx, a, b):
        if a != v16f or b != v16f:
            return None

        def codegen(context, builder, sig, args):
            return _select(builder, op, args[0], args[1])

        return v16f(a, b), codegen

    return impl


vmax_f = _pick_f(">")
vmin_f = _pick_f("<")


@intrinsic
def vhmax_f(typingctx, a):
    """The largest lane of a V16f, folded as a tree of maxps (no NaN expected)."""
    if a != v16f:
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        und = ir.Constant(_VF, ir.Undefined)
        for step in (8, 4, 2, 1):
            other = builder.shuffle_vector(v, und, ir.Constant(_VI, [(i + step) % 16 for i in range(16)]))
            v = _select(builder, ">", v, other)
        return builder.extract_element(v, ir.Constant(_I32, 0))

    return types.float32(a), codegen


@intrinsic
def vreduce_add_f(typingctx, a):
    """The sum of the 16 float32 lanes in the order of GCC's _mm512_reduce_add_ps: halves, then
    quarters, then pairs, then the last two ((v[i] + v[i+8]) + (v[i+4] + v[i+12]), …)."""
    if a != v16f:
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        und = ir.Constant(_VF, ir.Undefined)
        for step in (8, 4, 2, 1):
            other = builder.shuffle_vector(v, und, ir.Constant(_VI, [(i + step) % 16 for i in range(16)]))
            v = builder.fadd(v, other)
        return builder.extract_element(v, ir.Constant(_I32, 0))

    return types.float32(a), codegen


@intrinsic
def vhsum_i(typingctx, a):
    """The sum of the 16 int32 lanes (exact, wrapping like int32)."""
    if a != v16i:
        return None

    def codegen(context, builder, sig, args):
        fn = builder.module.declare_intrinsic("llvm.vector.reduce.add.v16i32", fnty=ir.FunctionType(_I32, [_VI]))
        return builder.call(fn, args)

    return types.int32(a), codegen


@intrinsic
def vlane_i(typingctx, v, i):
    """Lane ``i`` of a V16i, as an int32."""
    if not (v == v16i and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        idx = builder.trunc(args[1], _I32) if args[1].type.width > 32 else args[1]
        return builder.extract_element(args[0], idx)

    return types.int32(v, i), codegen


@intrinsic
def vsum4_i(typingctx, a):
    """Lanes 0..3 hold the sums of lanes 4i..4i+3 (the other lanes are unspecified)."""
    if a != v16i:
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        und = ir.Constant(_VI, ir.Undefined)
        pairs = builder.add(v, builder.shuffle_vector(v, und, ir.Constant(_VI, [i ^ 1 for i in range(16)])))
        quads = builder.add(pairs, builder.shuffle_vector(pairs, und, ir.Constant(_VI, [i ^ 2 for i in range(16)])))
        return builder.shuffle_vector(quads, und, ir.Constant(_VI, [0, 4, 8, 12] + [0] * 12))

    return v16i(a), codegen


@intrinsic
def vtoi(typingctx, a):
    """float32 lanes (already integral) to int32 lanes."""
    if a != v16f:
        return None

    def codegen(context, builder, sig, args):
        return builder.fptosi(args[0], _VI)

    return v16i(a), codegen


@intrinsic
def vstore_i8(typingctx, arr, idx, v):
    """The low byte of each int32 lane, as 16 bytes at element ``idx`` of a byte array."""
    if not (_is_array(arr) and isinstance(idx, types.Integer) and v == v16i):
        return None

    def codegen(context, builder, sig, args):
        vb = ir.VectorType(_I8, 16)
        builder.store(builder.trunc(args[2], vb), _element_ptr(context, builder, sig.args[0], args[0], args[1], vb),
                      align=1)
        return context.get_dummy_value()

    return types.none(arr, idx, v), codegen


@intrinsic
def vbits_f(typingctx, a):
    """The int32 lanes reinterpreted as float32 bits."""
    if a != v16i:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], _VF)

    return v16f(a), codegen


@intrinsic
def vwhere_gt(typingctx, a, b, c, d):
    """Per lane: c where a > b, else d (float32 lanes)."""
    if not all(t == v16f for t in (a, b, c, d)):
        return None

    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered(">", args[0], args[1]), args[2], args[3])

    return v16f(a, b, c, d), codegen


@intrinsic
def vcvt(typingctx, a):
    """int32 lanes to float32, rounded to nearest (cvtdq2ps)."""
    if a != v16i:
        return None

    def codegen(context, builder, sig, args):
        return builder.sitofp(args[0], _VF)

    return v16f(a), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a·b + c rounded once, per lane."""
    if not (a == v16f and b == v16f and c == v16f):
        return None

    def codegen(context, builder, sig, args):
        fn = builder.module.declare_intrinsic("llvm.fma.v16f32", fnty=ir.FunctionType(_VF, [_VF, _VF, _VF]))
        return builder.call(fn, args)

    return v16f(a, b, c), codegen


def _dpbusd_generic(builder, acc, a, b):
    a8 = builder.bitcast(a, _VB)
    b8 = builder.bitcast(b, _VB)
    wide = ir.VectorType(_I32, 64)
    prod = builder.mul(builder.zext(a8, wide), builder.sext(b8, wide))
    total = acc
    for i in range(4):
        part = builder.shuffle_vector(prod, ir.Constant(wide, ir.Undefined),
                                      ir.Constant(_VI, [4 * lane + i for lane in range(16)]))
        total = builder.add(total, part)
    return total


@intrinsic
def vdpbusd(typingctx, acc, a, b):
    """acc + (per int32 lane) the sum of the 4 products of ``a``'s unsigned bytes and ``b``'s
    signed bytes in that lane: exact (no saturation), as vpdpbusd."""
    if not (acc == v16i and a == v16i and b == v16i):
        return None

    def codegen(context, builder, sig, args):
        if HAS_VNNI:
            fn = builder.module.declare_intrinsic("llvm.x86.avx512.vpdpbusd.512", fnty=ir.FunctionType(_VI, [_VI] * 3))
            return builder.call(fn, args)
        return _dpbusd_generic(builder, *args)

    return v16i(acc, a, b), codegen


@intrinsic
def vhsum8(typingctx, a0, a1, a2, a3, a4, a5, a6, a7):
    """ggml's hsum_float_8 of eight lane accumulators, for 16 outputs at once:
    ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))."""
    if not all(t == v16f for t in (a0, a1, a2, a3, a4, a5, a6, a7)):
        return None

    def codegen(context, builder, sig, args):
        a = args
        r0 = builder.fadd(a[0], a[4])
        r1 = builder.fadd(a[1], a[5])
        r2 = builder.fadd(a[2], a[6])
        r3 = builder.fadd(a[3], a[7])
        return builder.fadd(builder.fadd(r0, r2), builder.fadd(r1, r3))

    return v16f(a0, a1, a2, a3, a4, a5, a6, a7), codegen

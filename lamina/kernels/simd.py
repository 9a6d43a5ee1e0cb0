"""Sixteen-lane vectors inside Numba functions: just enough SIMD to write ggml's integer kernels.

Numba's auto-vectorizer cannot be told to keep llama.cpp's summation order (eight float lanes
per 32-value block, one rounding per step) and at the same time use 8-bit integer dot
products. These helpers give Numba code two value types that live in one 512-bit register,
``V16i`` (16 × int32, or 64 bytes) and ``V16f`` (16 × float32), and the handful of operations
the exact kernels need. They compile to plain LLVM vector IR, which LLVM lowers to whatever
the target has (AVX-512, or pairs of AVX2 registers); the x86-specific piece is the byte dot
product (4 unsigned × signed byte products summed into each int32 lane), which the kernel family
(:mod:`.family`) forms with ``vpdpbusd`` (AVX-512 VNNI, or AVX-VNNI on 256-bit halves), with
``vpmaddubsw`` + ``vpmaddwd`` (AVX-512, AVX2) or in generic IR. All are exact for the operands the
kernels give: ``vpmaddubsw`` saturates a pair of products at 32767, which weight codes below 64
never reach; Q8_0's full-range bytes go through :func:`vdpbssd` (signed × signed, ggml's sign trick).

Loads and stores take an array and an element index and do no bounds checks: callers index
within the arrays they allocate. Kernels use them with 1-D (flattened) arrays.

Numba's on-disk cache of a kernel is checked against its own source file only: after editing
this module, touch (or clear the ``__pycache__`` entries of) the modules that use it.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic, models, register_model

from . import family

_I8 = ir.IntType(8)
_I16 = ir.IntType(16)
_I32 = ir.IntType(32)
_F32 = ir.FloatType()
_VI = ir.VectorType(_I32, 16)
_VF = ir.VectorType(_F32, 16)
_VB = ir.VectorType(_I8, 64)


DOT = family.DOT  # how byte products are formed (see the module docstring)
HAS_VNNI = DOT.startswith("vpdpbusd")
# Q8_0 weights use all 256 byte values: where pairs of products saturate (vpmaddubsw), they stay signed
SIGNED_Q8 = DOT.startswith("pmaddubs")
# 256-bit registers (AVX2, AVX-VNNI, and the portable code): sixteen of them, so the kernels work
# through eight rows at a time (V8 values), not sixteen
NARROW = DOT in ("pmaddubs256", "vpdpbusd256", "generic")


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


class V8i(types.Type):
    """8 × int32 (32 bytes) in one 256-bit register: half of a 16-row group, on 256-bit CPUs."""

    def __init__(self):
        super().__init__(name="V8i")


class V8f(types.Type):
    """8 × float32 in one 256-bit register."""

    def __init__(self):
        super().__init__(name="V8f")


v8i = V8i()
v8f = V8f()
_VI8 = ir.VectorType(_I32, 8)
_VF8 = ir.VectorType(_F32, 8)
_INT_TYPES = (v16i, v8i)
_FLOAT_TYPES = (v16f, v8f)


def _llvm(ty):
    """The LLVM vector type of a vector value type."""
    return {v16i: _VI, v16f: _VF, v8i: _VI8, v8f: _VF8}[ty]


def _float_of(ty):
    return v16f if ty in (v16i, v16f) else v8f


@register_model(V16i)
class _V16iModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VI)


@register_model(V16f)
class _V16fModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VF)


@register_model(V8i)
class _V8iModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VI8)


@register_model(V8f)
class _V8fModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VF8)


def _element_ptr(context, builder, aryty, ary, idx, target):
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.bitcast(builder.gep(data, [idx]), target.as_pointer())


def _splat(builder, vty, scalar):
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined), ir.Constant(ir.VectorType(_I32, vty.count),
                                                                                  [0] * vty.count))


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


def _two_eights(builder, lo, hi):
    return builder.shuffle_vector(lo, hi, ir.Constant(_VI, list(range(16))))


@intrinsic
def vload_f8x2(typingctx, arr, i, j):
    """8 float32 from element ``i`` in lanes 0..7 and 8 from element ``j`` in lanes 8..15 (two
    256-bit registers side by side: the AVX2 build's 8-lane accumulations, two at a time)."""
    if not (_is_array(arr) and arr.dtype == types.float32 and isinstance(i, types.Integer)
            and isinstance(j, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        v8 = ir.VectorType(_F32, 8)
        lo = builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[1], v8), align=4)
        hi = builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[2], v8), align=4)
        return _two_eights(builder, lo, hi)

    return v16f(arr, i, j), codegen


@intrinsic
def vload_f16_8x2(typingctx, arr, i, j):
    """:func:`vload_f8x2` of float16 bit patterns (uint16 array), widened exactly to float32."""
    if not (_is_array(arr) and arr.dtype == types.uint16 and isinstance(i, types.Integer)
            and isinstance(j, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        v8h, v8 = ir.VectorType(ir.HalfType(), 8), ir.VectorType(_F32, 8)
        lo = builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[1], v8h), align=2)
        hi = builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[2], v8h), align=2)
        return _two_eights(builder, builder.fpext(lo, v8), builder.fpext(hi, v8))

    return v16f(arr, i, j), codegen


def _hsum8_half(offset):
    @intrinsic
    def impl(typingctx, a):
        if a != v16f:
            return None

        def codegen(context, builder, sig, args):
            def lane(i):
                return builder.extract_element(args[0], ir.Constant(_I32, offset + i))

            t = [builder.fadd(lane(i), lane(i + 4)) for i in range(4)]
            return builder.fadd(builder.fadd(t[0], t[2]), builder.fadd(t[1], t[3]))

        return types.float32(a), codegen

    return impl


vhsum8_lo = _hsum8_half(0)  # hsum_float_8 of lanes 0..7: ((0+4)+(2+6)) + ((1+5)+(3+7))
vhsum8_hi = _hsum8_half(8)  # the same of lanes 8..15


@intrinsic
def vreduce_f32x8(typingctx, a):
    """GGML_F32x8_REDUCE of four 8-lane registers given as (x0 + x2 | x1 + x3): the halves added,
    then the 128-bit halves, then two horizontal adds: ((t0 + t1) + (t2 + t3))."""
    if a != v16f:
        return None

    def codegen(context, builder, sig, args):
        def lane(i):
            return builder.extract_element(args[0], ir.Constant(_I32, i))

        v = [builder.fadd(lane(i), lane(i + 8)) for i in range(8)]
        t = [builder.fadd(v[i], v[i + 4]) for i in range(4)]
        return builder.fadd(builder.fadd(t[0], t[1]), builder.fadd(t[2], t[3]))

    return types.float32(a), codegen


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


def _store_f(vector, vtype):
    @intrinsic
    def impl(typingctx, arr, idx, v):
        if not (_is_array(arr) and arr.dtype == types.float32 and isinstance(idx, types.Integer) and v == vtype):
            return None

        def codegen(context, builder, sig, args):
            builder.store(args[2], _element_ptr(context, builder, sig.args[0], args[0], args[1], vector), align=4)
            return context.get_dummy_value()

        return types.none(arr, idx, v), codegen

    return impl


def _bcast_i(vector, vtype):
    @intrinsic
    def impl(typingctx, arr, idx):
        if not (_is_array(arr) and isinstance(idx, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            x = builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[1], _I32), align=1)
            return _splat(builder, vector, x)

        return vtype(arr, idx), codegen

    return impl


vstore_f = _store_f(_VF, v16f)
vbcast_i = _bcast_i(_VI, v16i)  # the 4 bytes at element ``idx`` of ``arr`` (one int32, or four int8) in every lane


# -- constants and lanes --------------------------------------------------------------------------


def _splat_i(vector, vtype):
    @intrinsic
    def impl(typingctx, x):
        if not isinstance(x, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            v = args[0]
            w = v.type.width
            v = builder.trunc(v, _I32) if w > 32 else (builder.sext(v, _I32) if w < 32 else v)
            return _splat(builder, vector, v)

        return vtype(x), codegen

    return impl


def _splat_f(vector, vtype):
    @intrinsic
    def impl(typingctx, x):
        if x != types.float32:
            return None

        def codegen(context, builder, sig, args):
            return _splat(builder, vector, args[0])

        return vtype(x), codegen

    return impl


def _zero(vector, vtype, zero):
    @intrinsic
    def impl(typingctx):
        def codegen(context, builder, sig, args):
            return ir.Constant(vector, [zero] * vector.count)

        return vtype(), codegen

    return impl


vsplat_i = _splat_i(_VI, v16i)
vsplat_f = _splat_f(_VF, v16f)
vzero_i = _zero(_VI, v16i, 0)
vzero_f = _zero(_VF, v16f, 0.0)


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


def _binary(op, kinds):
    @intrinsic
    def impl(typingctx, a, b):
        if a != b or a not in kinds:
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])

        return a(a, b), codegen

    return impl


# (each works on 16 lanes or on 8, the two operands alike)
vadd_f = _binary("fadd", _FLOAT_TYPES)
vdiv_f = _binary("fdiv", _FLOAT_TYPES)
vsub_f = _binary("fsub", _FLOAT_TYPES)
vmul_f = _binary("fmul", _FLOAT_TYPES)
vadd_i = _binary("add", _INT_TYPES)
vsub_i = _binary("sub", _INT_TYPES)
vmul_i = _binary("mul", _INT_TYPES)  # low 32 bits of the product (vpmulld)
vand_i = _binary("and_", _INT_TYPES)
vor_i = _binary("or_", _INT_TYPES)


def _shift(op):
    @intrinsic
    def impl(typingctx, a, n):
        if a not in _INT_TYPES or not isinstance(n, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            k = args[1]
            k = builder.trunc(k, _I32) if k.type.width > 32 else (builder.zext(k, _I32) if k.type.width < 32 else k)
            return getattr(builder, op)(args[0], _splat(builder, _llvm(a), k))

        return a(a, n), codegen

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
def vbits_i(typingctx, a):
    """The float32 lanes' bits as int32 lanes."""
    if a != v16f:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], _VI)

    return v16i(a), codegen


@intrinsic
def vwhere_gt(typingctx, a, b, c, d):
    """Per lane: c where a > b, else d (float32 lanes)."""
    if not all(t == v16f for t in (a, b, c, d)):
        return None

    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered(">", args[0], args[1]), args[2], args[3])

    return v16f(a, b, c, d), codegen


@intrinsic
def vany_gt(typingctx, a, b):
    """Whether a > b in any lane (a compare and a movemask): lets a kernel skip a rare path for a
    whole register, as ggml's vector code does with ``_mm256_movemask_ps``."""
    if not (a == v16f and b == v16f):
        return None

    def codegen(context, builder, sig, args):
        mask = builder.bitcast(builder.fcmp_ordered(">", args[0], args[1]), ir.IntType(16))
        return builder.icmp_unsigned("!=", mask, ir.Constant(ir.IntType(16), 0))

    return types.boolean(a, b), codegen


@intrinsic
def vcvt(typingctx, a):
    """int32 lanes to float32, rounded to nearest (cvtdq2ps)."""
    if a not in _INT_TYPES:
        return None

    def codegen(context, builder, sig, args):
        return builder.sitofp(args[0], _llvm(_float_of(a)))

    return _float_of(a)(a), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a·b + c rounded once, per lane."""
    if not (a in _FLOAT_TYPES and b == a and c == a):
        return None

    def codegen(context, builder, sig, args):
        vt = _llvm(a)
        fn = builder.module.declare_intrinsic(f"llvm.fma.v{vt.count}f32", fnty=ir.FunctionType(vt, [vt, vt, vt]))
        return builder.call(fn, args)

    return a(a, b, c), codegen


def _dpbusd_generic(builder, acc, a, b, signed_a=False):
    lanes = acc.type.count
    vb = ir.VectorType(_I8, 4 * lanes)
    a8 = builder.bitcast(a, vb)
    b8 = builder.bitcast(b, vb)
    wide = ir.VectorType(_I32, 4 * lanes)
    prod = builder.mul(builder.sext(a8, wide) if signed_a else builder.zext(a8, wide), builder.sext(b8, wide))
    total = acc
    for i in range(4):
        part = builder.shuffle_vector(prod, ir.Constant(wide, ir.Undefined),
                                      ir.Constant(ir.VectorType(_I32, lanes), [4 * lane + i for lane in range(lanes)]))
        total = builder.add(total, part)
    return total


def _halves(builder, v, ty):
    """The low and high 256 bits of a 512-bit vector, as ``ty`` (a 256-bit vector type)."""
    wide = ir.VectorType(ty.element, ty.count * 2)
    v = builder.bitcast(v, wide)
    und = ir.Constant(wide, ir.Undefined)
    return [builder.shuffle_vector(v, und, ir.Constant(ir.VectorType(_I32, ty.count),
                                                      list(range(h * ty.count, (h + 1) * ty.count))))
            for h in (0, 1)]


def _join(builder, lo, hi):
    n = lo.type.count
    return builder.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(_I32, 2 * n), list(range(2 * n))))


def _call(builder, name, ret, args):
    fn = builder.module.declare_intrinsic(name, fnty=ir.FunctionType(ret, [a.type for a in args]))
    return builder.call(fn, args)


def _maddubs_256(builder, a, b):
    b32, h16, i8 = ir.VectorType(_I8, 32), ir.VectorType(_I16, 16), ir.VectorType(_I32, 8)
    w = _call(builder, "llvm.x86.avx2.pmadd.ub.sw", h16, [builder.bitcast(a, b32), builder.bitcast(b, b32)])
    return _call(builder, "llvm.x86.avx2.pmadd.wd", i8, [w, ir.Constant(h16, [1] * 16)])


def _maddubs_sum(builder, a, b):
    """Per int32 lane, the 4 products of ``a``'s unsigned and ``b``'s signed bytes: vpmaddubsw (pairs,
    saturating at ±32767) then vpmaddwd with ones (exact), on 512 bits or on two 256-bit halves."""
    if a.type.count == 8:
        return _maddubs_256(builder, a, b)
    if DOT == "pmaddubs512":
        w = _call(builder, "llvm.x86.avx512.pmaddubs.w.512", ir.VectorType(_I16, 32),
                  [builder.bitcast(a, _VB), builder.bitcast(b, _VB)])
        return _call(builder, "llvm.x86.avx512.pmaddw.d.512", _VI, [w, ir.Constant(ir.VectorType(_I16, 32), [1] * 32)])
    b32 = ir.VectorType(_I8, 32)
    return _join(builder, *[_maddubs_256(builder, ah, bh)
                            for ah, bh in zip(_halves(builder, a, b32), _halves(builder, b, b32))])


@intrinsic
def vdpbusd(typingctx, acc, a, b):
    """acc + (per int32 lane) the sum of the 4 products of ``a``'s unsigned bytes and ``b``'s
    signed bytes in that lane, as vpdpbusd. Exact wherever two products stay within ±32767 (weight
    codes up to 127 against activations in ±127: every caller but Q8_0, see :func:`vdpbssd`)."""
    if not (acc in _INT_TYPES and a == acc and b == acc):
        return None

    def codegen(context, builder, sig, args):
        if acc == v8i and DOT.startswith("vpdpbusd"):
            return _call(builder, "llvm.x86.avx512.vpdpbusd.256", _VI8, list(args))
        if DOT == "vpdpbusd512":
            return _call(builder, "llvm.x86.avx512.vpdpbusd.512", _VI, list(args))
        if DOT == "vpdpbusd256":
            v8 = ir.VectorType(_I32, 8)
            halves = [_halves(builder, x, v8) for x in args]
            return _join(builder, *[_call(builder, "llvm.x86.avx512.vpdpbusd.256", v8, [h[i] for h in halves])
                                    for i in (0, 1)])
        if DOT.startswith("pmaddubs"):
            return builder.add(args[0], _maddubs_sum(builder, args[1], args[2]))
        return _dpbusd_generic(builder, *args)

    return acc(acc, a, b), codegen


@intrinsic
def vdpbssd(typingctx, acc, a, b):
    """acc + (per int32 lane) the sum of the 4 products of ``a``'s and ``b``'s signed bytes, exact for
    ``b`` in ±127 (activations). With vpmaddubsw it is ggml's sign trick: |a| times b carrying a's
    sign, so a pair stays within 2·128·127; elsewhere it widens the bytes."""
    if not (acc in _INT_TYPES and a == acc and b == acc):
        return None
    vt = acc

    def codegen(context, builder, sig, args):
        acc, a, b = args
        if DOT.startswith("pmaddubs") and (acc.type.count == 8 or DOT == "pmaddubs256"):
            # vpsignb (256 bits only): |a| as unsigned bytes, b with a's sign
            b32 = ir.VectorType(_I8, 32)
            parts = []
            halves = [(a, b)] if acc.type.count == 8 else list(zip(_halves(builder, a, b32), _halves(builder, b, b32)))
            for ah, bh in halves:
                ah, bh = builder.bitcast(ah, b32), builder.bitcast(bh, b32)
                magnitude = _call(builder, "llvm.x86.avx2.psign.b", b32, [ah, ah])
                signed = _call(builder, "llvm.x86.avx2.psign.b", b32, [bh, ah])
                parts.append(_maddubs_256(builder, magnitude, signed))
            return builder.add(acc, parts[0] if len(parts) == 1 else _join(builder, *parts))
        if DOT.startswith("pmaddubs"):
            vb = ir.VectorType(_I8, 4 * acc.type.count)
            a8, b8 = builder.bitcast(a, vb), builder.bitcast(b, vb)
            zero = ir.Constant(vb, [0] * vb.count)
            negative = builder.icmp_signed("<", a8, zero)
            magnitude = builder.select(negative, builder.sub(zero, a8), a8)  # |-128| wraps to 128 unsigned
            signed = builder.select(negative, builder.sub(zero, b8), b8)
            return builder.add(acc, _maddubs_sum(builder, builder.bitcast(magnitude, _llvm(vt)),
                                                 builder.bitcast(signed, _llvm(vt))))
        return _dpbusd_generic(builder, acc, a, b, signed_a=True)

    return vt(vt, vt, vt), codegen


@intrinsic
def vspread_bits(typingctx, h):
    """Bits 0..3 of each int32 lane to bit 4 of its bytes 0..3 (Q5's fifth bit of 4 values): each
    lane's low byte copied to its four bytes, one bit kept per byte, and that bit turned into 0x10
    (a byte shuffle, an and and a compare, where a multiply would cost ten cycles)."""
    if h not in _INT_TYPES:
        return None

    def codegen(context, builder, sig, args):
        lanes = args[0].type.count
        vb = ir.VectorType(_I8, 4 * lanes)
        bytes_ = builder.bitcast(args[0], vb)
        low = builder.shuffle_vector(bytes_, ir.Constant(vb, ir.Undefined),
                                     ir.Constant(ir.VectorType(_I32, 4 * lanes), [4 * (i // 4) for i in range(4 * lanes)]))
        bit = ir.Constant(vb, [1 << (i % 4) for i in range(4 * lanes)])
        kept = builder.and_(low, bit)
        set_ = builder.icmp_unsigned("==", kept, bit)
        out = builder.select(set_, ir.Constant(vb, [0x10] * (4 * lanes)), ir.Constant(vb, [0] * (4 * lanes)))
        return builder.bitcast(out, _llvm(h))

    return h(h), codegen


@intrinsic
def vhsum8(typingctx, a0, a1, a2, a3, a4, a5, a6, a7):
    """ggml's hsum_float_8 of eight lane accumulators, for 16 outputs at once:
    ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))."""
    if a0 not in _FLOAT_TYPES or not all(t == a0 for t in (a1, a2, a3, a4, a5, a6, a7)):
        return None

    def codegen(context, builder, sig, args):
        a = args
        r0 = builder.fadd(a[0], a[4])
        r1 = builder.fadd(a[1], a[5])
        r2 = builder.fadd(a[2], a[6])
        r3 = builder.fadd(a[3], a[7])
        return builder.fadd(builder.fadd(r0, r2), builder.fadd(r1, r3))

    return a0(a0, a1, a2, a3, a4, a5, a6, a7), codegen


# -- eight-lane loads, stores and constants (the 256-bit kernels) -----------------------------------


def _load8(kind, element, align):
    @intrinsic
    def impl(typingctx, arr, idx):
        if not (_is_array(arr) and isinstance(idx, types.Integer)):
            return None
        if kind == "f" and arr.dtype != types.float32 or kind == "h" and arr.dtype != types.uint16:
            return None

        def codegen(context, builder, sig, args):
            ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1], ir.VectorType(element, 8))
            value = builder.load(ptr, align=align)
            return builder.fpext(value, _VF8) if kind == "h" else value

        return (v8i if kind == "i" else v8f)(arr, idx), codegen

    return impl


v8load_i = _load8("i", _I32, 1)             # 32 bytes at element ``idx`` as 8 int32
v8load_f = _load8("f", _F32, 4)             # 8 float32
v8load_f16 = _load8("h", ir.HalfType(), 2)  # 8 float16 bit patterns widened exactly


v8store_f = _store_f(_VF8, v8f)
v8bcast_i = _bcast_i(_VI8, v8i)  # the 4 bytes at element ``idx`` of ``arr`` in each of 8 lanes
v8splat_i = _splat_i(_VI8, v8i)
v8splat_f = _splat_f(_VF8, v8f)
v8zero_f = _zero(_VF8, v8f, 0.0)

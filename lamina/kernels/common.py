"""Pieces every kernel uses: float16 decoding, 32-bit integer and fused float operations, file pages."""

from __future__ import annotations

import numpy as np
from numba import njit

from . import family

F32 = np.float32

# float16 bit pattern -> float32, looked up once per scale (ggml keeps the same table).
F16_TO_F32 = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)

# -- 32-bit integer operations ----------------------------------------------------------------
# Numba widens every integer operation to 64 bits, which halves the lanes of the vectorized
# loops (and makes int->float conversions slow). These intrinsics keep the bit twiddling of
# unpacking quants in 32-bit lanes: 16 per AVX-512 register.

from llvmlite import ir  # noqa: E402
from numba import types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

_I32 = ir.IntType(32)


def _as_i32(builder, value, ty):
    width = ty.bitwidth
    if width == 32:
        return value
    if width > 32:
        return builder.trunc(value, _I32)
    return builder.sext(value, _I32) if ty.signed else builder.zext(value, _I32)


def _binary_i32(op):
    @intrinsic
    def impl(typingctx, a, b):
        if not (isinstance(a, types.Integer) and isinstance(b, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            x = _as_i32(builder, args[0], signature.args[0])
            y = _as_i32(builder, args[1], signature.args[1])
            return getattr(builder, op)(x, y)

        return types.int32(a, b), codegen

    return impl


and32 = _binary_i32("and_")
add32 = _binary_i32("add")
or32 = _binary_i32("or_")
shr32 = _binary_i32("lshr")  # logical shift right
shl32 = _binary_i32("shl")
sub32 = _binary_i32("sub")


@intrinsic
def i32(typingctx, a):
    """Any integer as int32 (zero- or sign-extended by its type)."""
    if not isinstance(a, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return _as_i32(builder, args[0], signature.args[0])

    return types.int32(a), codegen


@njit(cache=True, inline="always", error_model="numpy")
def reduce_add_ps(v, o):
    """_mm512_reduce_add_ps of v[o:o+16], in GCC's order (halves, quarters, pairs, last two)."""
    t0 = (v[o + 8] + v[o]) + (v[o + 12] + v[o + 4])
    t1 = (v[o + 9] + v[o + 1]) + (v[o + 13] + v[o + 5])
    t2 = (v[o + 10] + v[o + 2]) + (v[o + 14] + v[o + 6])
    t3 = (v[o + 11] + v[o + 3]) + (v[o + 15] + v[o + 7])
    return (t0 + t2) + (t1 + t3)


@njit(cache=True, inline="always", error_model="numpy")
def hsum_float_8(v, o):
    """ggml's hsum_float_8 of v[o:o+8] (and tinyBLAS's hsum of a __m256): ((0+4)+(2+6)) + ((1+5)+(3+7))."""
    return ((v[o] + v[o + 4]) + (v[o + 2] + v[o + 6])) + ((v[o + 1] + v[o + 5]) + (v[o + 3] + v[o + 7]))


# The horizontal sum of one vector register's worth of floats (EPR of them), as the family's llama.cpp
# build folds it: 16 lanes on AVX-512, 8 elsewhere.
EPR = family.EPR
chunk_sum = reduce_add_ps if EPR == 16 else hsum_float_8


@intrinsic
def fma32(typingctx, a, b, c):
    """a * b + c in float32 with a single rounding (LLVM's fma intrinsic: a hardware FMA), which
    is how GCC compiles ggml's contracted expressions and its FMA intrinsics."""
    if not all(t == types.float32 for t in (a, b, c)):
        return None

    def codegen(context, builder, signature, args):
        f = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f], ir.FunctionType(f, [f, f, f]))
        return builder.call(fn, args)

    return types.float32(types.float32, types.float32, types.float32), codegen


# -- giving back the file's pages ----------------------------------------------------------------

import ctypes  # noqa: E402
import mmap  # noqa: E402

_MADV_DONTNEED = 4
try:
    _madvise = ctypes.CDLL(None, use_errno=True).madvise
    _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
except (OSError, AttributeError):  # not Linux/glibc: keep the pages, only memory use differs
    _madvise = None


def _backed_by_file_map(view: np.ndarray) -> bool:
    base = view
    while base is not None:
        if isinstance(base, mmap.mmap):
            return True
        base = getattr(base, "base", None) if isinstance(base, np.ndarray) else getattr(base, "obj", None)
    return False


def weight_buffer(shape: tuple, dtype) -> np.ndarray:
    """An uninitialised array for repacked weights, in plain anonymous memory: NumPy asks the kernel
    for transparent huge pages on large arrays, and on a virtual machine faulting in 4.4 GB of them
    took 13.5 s where 4 KB pages took 1.2-3.8 s (generation reads them no slower)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes < (1 << 21):
        return np.empty(shape, dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype).reshape(shape)


def release_file_pages(view: np.ndarray) -> None:
    """Let the OS drop the pages of ``view`` if it is part of a read-only file map (a model's weights):
    once a kernel has repacked them they are not read again, and dropping them as packing goes keeps a
    loaded model at about its file size. Whole pages inside the view only; anything else is left alone."""
    if _madvise is None or view.size == 0 or not _backed_by_file_map(view):
        return
    page = mmap.PAGESIZE
    start = -(-view.ctypes.data // page) * page
    end = (view.ctypes.data + view.nbytes) // page * page
    if end > start:
        _madvise(start, end - start, _MADV_DONTNEED)

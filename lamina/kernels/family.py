"""Which family of kernels runs on this CPU, chosen once per process, and the Numba target that compiles it.

llama.cpp is compiled for an instruction set, and its arithmetic follows it: the AVX-512 build sums
float vectors 16 lanes at a time, the AVX2 build 8 at a time, so the two give different logits
(``../shared/refdata/llamacpp`` and ``llamacpp-avx2``). lamina reproduces the build that matches
the CPU it runs on. A family fixes two things:

* the float orders (:data:`EPR`, elements per float register: 16 on AVX-512, 8 on AVX2 and
  everywhere else), which decide llama.cpp's answer to the bit in attention, SwiGLU, softmax,
  layer norm and F16/F32 products (:mod:`.ggml_reference` states each order);
* how bytes are multiplied (:data:`DOT`): ``vpdpbusd`` on 512 bits (AVX-512 VNNI), on 256 bits
  (AVX-VNNI, Intel's desktop cores since the 12th generation), ``vpmaddubsw``+``vpmaddwd``
  (AVX-512 without VNNI, and AVX2), or portable LLVM IR (``generic``: any CPU Numba runs on,
  AArch64 included). Integer sums are exact in every form, so this changes speed, not results.

The families, best first: ``avx512-vnni``, ``avx512``, ``avx2``, ``generic``. The host's best is
used unless ``LAMINA_KERNELS`` names another (see :func:`choose`: below the host's, it is compiled
for a CPU of that family, Numba's ``haswell`` for avx2 or ``skylake-avx512`` for avx512, which is
how an AVX-512 machine tests the AVX2 family; above it, the family's arithmetic is computed with
the host's instructions). Compiled kernels are cached per family (``~/.cache/lamina/kernels/<family>``, or under
``NUMBA_CACHE_DIR``), because Numba's cache keys on the CPU target, not on this module's choices.

A NEON family would repeat, from ggml's ``arch/arm``: float32x4 accumulators (often two per loop)
and ``vdotq_s32``/i8mm byte products in the vec_dots, the q4_0 4x8/4x4, q4_K/q5_K/q6_K 8x8/8x4 and
q8_0 4x8/4x4 repacks with their gemm/gemv, tinyBLAS_Q0_ARM and ``tinyBLAS<4, float32x4_t>`` (fp16
arithmetic, ``float16x8_t``, for F16 where the CPU has it: vec_dot_f16 then accumulates in fp16),
``GGML_F32_EPR 4``/``STEP 16``, the NEON ``ggml_v_expf`` and 4-lane softmax/SiLU; ggml has no tiled
K-quant kernel on ARM. Until then AArch64 runs ``generic``: correct, with the AVX2 build's orders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

FAMILIES = ("avx512-vnni", "avx512", "avx2", "generic")
_RANK = {name: i for i, name in enumerate(FAMILIES)}


@dataclass(frozen=True)
class Family:
    name: str
    reason: str
    epr: int            # float32 elements per vector register in llama.cpp's build for this family
    dot: str            # "vpdpbusd512", "vpdpbusd256", "pmaddubs512", "pmaddubs256" or "generic"
    cpu_name: str | None       # Numba target when the host is not of this family (emulation)
    cpu_features: str | None


def _host_features() -> dict[str, bool]:
    try:
        from llvmlite import binding
        return {k: bool(v) for k, v in binding.get_host_cpu_features().items()}
    except (ImportError, RuntimeError):
        return {}


def natural_family(features: dict[str, bool]) -> str:
    """The best family a CPU with these features runs natively."""
    if all(features.get(f) for f in ("avx512f", "avx512bw", "avx512dq", "avx512vl")):
        return "avx512-vnni" if features.get("avx512vnni") else "avx512"
    if all(features.get(f) for f in ("avx2", "fma", "f16c")):
        return "avx2"
    return "generic"


# Numba targets for running a family on a CPU above it (AVX-VNNI left out: the plain AVX2 machine).
# Numba targets for running a family on a CPU above it: the family's own instructions, no more.
_TARGETS = {"avx512": ("skylake-avx512", "+avx512f"), "avx2": ("haswell", "+avx2")}
_TARGET_FEATURES = {"avx512": {"avx512f": True, "avx512bw": True}, "avx2": {"avx2": True}}


def choose(env: dict[str, str] | None = None, features: dict[str, bool] | None = None) -> Family:
    """The family for this process: ``LAMINA_KERNELS`` if given, else the host's best.

    A family below the host's is compiled for a CPU of that family (so an AVX-512 machine runs the
    AVX2 family as an AVX2 machine would). A family above it is still computed exactly, with the
    host's instructions: its arithmetic is llama.cpp's for that build, only slower (how the test
    suite reproduces the AVX-512 references on any machine). ``generic`` uses no x86 instructions
    of its own and compiles for whatever the host is."""
    env = os.environ if env is None else env
    features = _host_features() if features is None else features
    host = natural_family(features)
    asked = env.get("LAMINA_KERNELS", "").strip().lower()
    if asked in ("", "auto"):
        name, reason = host, f"detected: this CPU's best ({_describe_features(features)})"
    elif asked not in _RANK:
        raise ValueError(f"LAMINA_KERNELS={asked!r}: choose one of {', '.join(FAMILIES)} (or auto)")
    else:
        name = asked
        if asked == host:
            reason = "forced by LAMINA_KERNELS"
        elif _RANK[asked] < _RANK[host]:  # above what the CPU has
            reason = f"forced by LAMINA_KERNELS; computed with this CPU's {host} instructions, slower"
        else:
            reason = f"forced by LAMINA_KERNELS; this CPU's best is {host}"
    cpu_name = cpu_features = None
    target = features
    if name in _TARGETS and _RANK[name] > _RANK[host]:
        cpu_name, cpu_features = _TARGETS[name]
        target = _TARGET_FEATURES[name]
    instructions = name if _RANK[name] >= _RANK[host] else host  # what the compiled code may use
    dot = {"avx512-vnni": "vpdpbusd512", "avx512": "pmaddubs512",
           "avx2": "vpdpbusd256" if target.get("avxvnni") else "pmaddubs256"}.get(instructions, "generic")
    if name == "generic" or env.get("LAMINA_SIMD", "").strip().lower() == "generic":
        dot = "generic"  # (LAMINA_SIMD=generic: the older switch for generic byte products only)
    return Family(name, reason, 16 if name.startswith("avx512") else 8, dot, cpu_name, cpu_features)


def _describe_features(features: dict[str, bool]) -> str:
    shown = [f for f in ("avx512f", "avx512bw", "avx512vnni", "avxvnni", "avx2", "fma", "f16c", "neon")
             if features.get(f)]
    return ", ".join(shown) if shown else "no AVX2"


def _configure_numba(family: Family) -> None:
    """Point Numba at the family's target and cache folder; must run before anything is compiled."""
    from numba import config

    if family.cpu_name is not None:
        config.CPU_NAME = family.cpu_name
        config.CPU_FEATURES = family.cpu_features
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "lamina", "kernels")
    config.CACHE_DIR = os.path.join(base, family.name)


CURRENT = choose()
_configure_numba(CURRENT)
NAME, EPR, DOT = CURRENT.name, CURRENT.epr, CURRENT.dot


def describe() -> str:
    """One line for ``lamina --version``: the family, why, and how bytes are multiplied."""
    return f"kernels: {NAME} ({CURRENT.reason}; byte products: {DOT}, float order: {EPR} lanes)"

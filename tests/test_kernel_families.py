"""Each kernel family repeats its own llama.cpp build's arithmetic (lamina.kernels.family).

The suite itself runs the AVX-512 family (conftest.py). Here each other family runs, in a process
of its own (a family is chosen once per process), the suite's exactness tests: the kernels against
ggml's orders for every exact weight type (test_kernels_exact.py, whose references follow the
family), and the three real models' logits and greedy continuations against llama.cpp built for
that family's CPU — ``refdata/llamacpp-avx2`` for AVX2, whose arithmetic differs from the AVX-512
build's in attention, SwiGLU and F16/F32 products. On this machine's CPU the AVX2 family is
compiled for an AVX2 CPU (Numba's ``haswell``), and its machine code must not touch a 512-bit register.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lamina.kernels.family import choose, natural_family

TESTS = Path(__file__).resolve().parent
AVX512 = dict.fromkeys(("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512vnni", "avx2", "fma", "f16c"), True)
AVX2 = dict.fromkeys(("avx2", "fma", "f16c"), True)


def test_the_family_follows_the_cpu_and_the_override():
    assert natural_family(AVX512) == "avx512-vnni"
    assert natural_family({**AVX512, "avx512vnni": False}) == "avx512"
    assert natural_family(AVX2) == "avx2"
    assert natural_family({"neon": True}) == "generic"
    host = choose({}, AVX2)
    assert (host.name, host.epr, host.dot, host.cpu_name) == ("avx2", 8, "pmaddubs256", None)
    assert choose({}, {**AVX2, "avxvnni": True}).dot == "vpdpbusd256"  # Intel's cores since the 12th generation
    below = choose({"LAMINA_KERNELS": "avx2"}, AVX512)  # an AVX2 machine, on an AVX-512 one
    assert (below.epr, below.dot, below.cpu_name) == (8, "pmaddubs256", "haswell")
    above = choose({"LAMINA_KERNELS": "avx512-vnni"}, AVX2)  # the AVX-512 build's sums, with AVX2 instructions
    assert (above.epr, above.dot, above.cpu_name) == (16, "pmaddubs256", None)
    assert "slower" in above.reason and "forced" in above.reason
    assert choose({"LAMINA_KERNELS": "generic"}, AVX512).dot == "generic"
    with pytest.raises(ValueError, match="choose one of avx512-vnni, avx512, avx2, generic"):
        choose({"LAMINA_KERNELS": "sse4"}, AVX512)


def _pytest_as(family: str, *selection: str, timeout: int) -> None:
    env = {**os.environ, "LAMINA_KERNELS": family}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *selection],
                          cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"LAMINA_KERNELS={family} pytest {' '.join(selection)}:\n{done.stdout[-4000:]}"


def test_avx2_family_is_llamacpps_avx2_build():
    """Every exact kernel, and the three models' top-64 logits (all eight prompts each) and greedy
    continuations, equal to llama.cpp built for AVX2."""
    _pytest_as("avx2", "tests/test_kernels_exact.py", "tests/test_engine_agreement.py",
               "-k", "test_kernels_exact or bit_for_bit or greedy_generation", timeout=1500)


ZMM_SCRIPT = r"""
import re, sys
import numpy as np
from numba.core.registry import CPUDispatcher
from lamina.llama import Llama
import lamina.kernels.attention, lamina.kernels.floats, lamina.kernels.glu, lamina.kernels.kquants, lamina.kernels.legacy
llm = Llama(sys.argv[1], n_ctx=256, verbose=False)
llm.eval(llm.tokenize(b"The capital of France is " * 10))   # a prompt's batch kernels
llm.eval([int(np.argmax(llm.logits()))])                  # and one token's
zmm = vpmaddubsw = checked = 0
per_type = list(lamina.kernels.legacy._FEW_FLOATS.values())  # generation kernels built per weight type
for module in (lamina.kernels.legacy, lamina.kernels.kquants, lamina.kernels.floats, lamina.kernels.attention,
               lamina.kernels.glu):
    for obj in list(vars(module).values()) + (per_type if module is lamina.kernels.legacy else []):
        if isinstance(obj, CPUDispatcher):
            for sig in obj.signatures:
                asm = obj.inspect_asm(sig)
                checked += 1
                zmm += len(re.findall(r"%zmm\d+", asm))
                vpmaddubsw += asm.count("vpmaddubsw")
print(checked, zmm, vpmaddubsw)
"""


def test_avx2_family_code_uses_no_512_bit_registers(model_paths, tmp_path):
    # a fresh cache: Numba shows no machine code for kernels it loaded from its cache
    env = {**os.environ, "LAMINA_KERNELS": "avx2", "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", ZMM_SCRIPT, str(model_paths["qwen2"])], env=env,
                          capture_output=True, text=True, timeout=900, check=True)
    checked, zmm, vpmaddubsw = map(int, done.stdout.split()[-3:])
    assert checked >= 8 and zmm == 0 and vpmaddubsw > 0, done.stdout


@pytest.mark.parametrize("family", ["generic", "avx512"])
def test_other_families_compute_their_builds_arithmetic(family):
    """generic (portable IR byte products, the AVX2 build's float orders) and avx512 (AVX-512 without
    VNNI: vpmaddubsw, Q8_0 kept signed) against the kernel references for every exact type and batch
    size, the SwiGLU order and the weight layout, and smollm2 against its build."""
    _pytest_as(family, "tests/test_kernels_exact.py", "tests/test_engine_agreement.py",
               "-k", "fast_kernels or swiglu or dequantized or (bit_for_bit and smollm2)", timeout=1500)

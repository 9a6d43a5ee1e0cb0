"""The ``lamina`` command's process: Numba set up without SciPy (17 MB less resident memory), and
not at all by the commands that run no kernels."""

import subprocess
import sys

PROBE = """
import sys
from lamina.cli import _initialize_numba_without_scipy
_initialize_numba_without_scipy()
from numba import njit

@njit(cache=False)
def add_one(x):
    return x + 1

assert add_one(1) == 2
print("scipy" in sys.modules)
try:
    import scipy.linalg  # the user's own code may still use SciPy afterwards
    print("importable")
except ImportError:
    print("not installed")
"""


def test_cli_initializes_numba_without_importing_scipy():
    out = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True, text=True).stdout.splitlines()
    assert out[0] == "False"
    assert out[1] in ("importable", "not installed")


def test_commands_without_kernels_do_not_load_numba(refdata):
    """`lamina info` and `lamina tokenize` start fast: they never import Numba."""
    model = refdata / "tiny" / "tiny-qwen3.f16.gguf"
    probe = (
        "import sys\n"
        "from lamina.cli import main\n"
        f"main(['info', {str(model)!r}])\n"
        f"main(['tokenize', '-m', {str(model)!r}, '-p', 'Hello'])\n"
        "print('numba' in sys.modules, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stderr.split()
    assert out == ["False"]

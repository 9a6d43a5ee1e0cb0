"""The first-run notice: said once when kernels compile, silent when they are cached, never fatal."""

import os
import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent("""
    import io
    import sys
    from lamina.kernels import compile_notice
    if "--close-stderr" in sys.argv:
        sys.stderr = io.StringIO()  # as a test harness captures standard error ...
    compile_notice.enable()
    if "--close-stderr" in sys.argv:
        sys.stderr.close()  # ... and closes it before the kernels compile
    import numba

    @numba.njit(cache=True)
    def twice(x):
        return 2 * x

    print(twice(21))
""")


@pytest.fixture
def program(tmp_path):
    path = tmp_path / "program.py"
    path.write_text(PROGRAM)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def run(*args):
        return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, env=env,
                              timeout=300)
    return run


def test_first_run_says_it_compiles_and_second_run_is_silent(program, tmp_path):
    first = program()
    assert first.returncode == 0 and first.stdout == "42\n", first.stderr
    lines = first.stderr.splitlines()
    assert lines[0].startswith("lamina: compiling kernels for this CPU (") and str(tmp_path / "cache") in lines[0]
    assert lines[-1].startswith("lamina: compiled 1 kernel in ") and len(lines) == 2  # not a terminal: no counter
    second = program()
    assert second.returncode == 0 and second.stdout == "42\n" and second.stderr == ""


def test_a_closed_standard_error_does_not_break_the_computation(program):
    done = program("--close-stderr")
    assert done.returncode == 0 and done.stdout == "42\n", done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr

"""The first run on a new machine: how soon the user hears what is happening, and how long it takes.

For each kernel family, with an empty kernel cache (a fresh ``NUMBA_CACHE_DIR``, as on a machine where
the set-up's warm step has not run), ``lamina -m smollm2 -p Hello -n 1 --temp 0 -t 2`` is run twice:

* **notice**: seconds from process start to the first line on standard error (the first run's
  "lamina: compiling kernels for this CPU ..." line);
* **first run**: wall time to the first generated token and exit, compiling what the model needs;
* **second run**: the same command again, every kernel loaded from the cache.

    python benchmarks/bench_first_run.py                      # this CPU's family
    python benchmarks/bench_first_run.py --families avx512-vnni,avx2 -r 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time


def timed_run(cmd: list[str], env: dict[str, str]) -> tuple[float, float | None, str]:
    """(wall seconds, seconds to the first standard-error line or None, standard error)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first_line: list[float] = []
    lines: list[str] = []

    def read_stderr():
        for line in proc.stderr:
            if not first_line:
                first_line.append(time.monotonic() - start)
            lines.append(line)

    reader = threading.Thread(target=read_stderr)
    reader.start()
    code = proc.wait()
    wall = time.monotonic() - start
    reader.join()
    if code:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}):\n{''.join(lines)}")
    return wall, (first_line[0] if first_line else None), "".join(lines)


def main(argv: list[str] | None = None) -> int:
    from lamina.kernels.family import choose
    from lamina.testing.models import ensure_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=choose({}).name,
                        help="comma-separated kernel families (LAMINA_KERNELS values)")
    parser.add_argument("--model", default=None, help="GGUF file (default: the smollm2 test model)")
    parser.add_argument("-r", "--repetitions", type=int, default=1, help="fresh caches per family")
    args = parser.parse_args(argv)
    model = args.model or str(ensure_models()["smollm2"])
    cmd = [sys.executable, "-m", "lamina.cli", "-m", model, "-p", "Hello", "-n", "1", "--temp", "0", "-t", "2"]
    print("| family | notice after | first run (empty cache) | second run (cached) | kernels compiled |")
    print("| --- | ---: | ---: | ---: | --- |")
    for family in args.families.split(","):
        for _ in range(args.repetitions):
            with tempfile.TemporaryDirectory(prefix="lamina-first-run-") as cache:
                env = {**os.environ, "LAMINA_KERNELS": family, "NUMBA_CACHE_DIR": cache}
                first, notice, err = timed_run(cmd, env)
                second, _, _ = timed_run(cmd, env)
            summary = next((line.split("lamina: compiled ", 1)[1].split(" (")[0] for line in err.splitlines()
                            if line.startswith("lamina: compiled ")), "none")
            print(f"| {family} | {notice:.2f} s | {first:.1f} s | {second:.2f} s | {summary} |" if notice is not None
                  else f"| {family} | - | {first:.1f} s | {second:.2f} s | {summary} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

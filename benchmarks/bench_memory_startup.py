"""Peak memory of a generation run, and the start-up time of a second run (cached kernels).

* ``lamina -m MODEL -p PROMPT -n 128``: peak resident memory against the budget
  model file + KV cache + 150 MB (the KV cache of the default 4096-token context, f16).
* ``lamina -m smollm2 -p Hello -n 1`` run twice: the second run's wall time (target < 3 s).

    python benchmarks/bench_memory_startup.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

PROMPT = "The history of the printing press"


def peak_rss(cmd: list[str]) -> tuple[float, int]:
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M"] + cmd, check=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True).stderr.strip().splitlines()[-1].split()
    return float(out[0]), int(out[1]) * 1024


def main() -> int:
    from lamina.engine.kv_cache import KVCache
    from lamina.gguf import read
    from lamina.models import load_model
    from lamina.testing.models import ensure_models

    lamina = [sys.executable, "-m", "lamina.cli"]
    paths = ensure_models()
    print("| model | file | KV cache (4096) | budget | peak RSS | within |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, path in paths.items():
        model = load_model(read(path))
        kv = KVCache.bytes_needed(model.kv_shapes(), 4096, 1)
        del model
        size = os.path.getsize(path)
        budget = size + kv + 150 * 2**20
        _, rss = peak_rss(lamina + ["-m", str(path), "-p", PROMPT, "-n", "128", "-t", "2", "--temp", "0"])
        print(f"| {name} | {size / 2**20:.0f} MiB | {kv / 2**20:.0f} MiB | {budget / 2**20:.0f} MiB | "
              f"{rss / 2**20:.0f} MiB | {'yes' if rss <= budget else 'NO'} |", flush=True)
    cmd = lamina + ["-m", str(paths["smollm2"]), "-p", "Hello", "-n", "1"]
    first, _ = peak_rss(cmd)
    second, _ = peak_rss(cmd)
    print(f"\nstart-up, `lamina -m smollm2 -p Hello -n 1`: first run {first:.2f} s, second run {second:.2f} s "
          f"(target < 3 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

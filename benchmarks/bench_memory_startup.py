"""Peak memory of a generation run, and the start-up time of a second run (cached kernels).

* ``lamina -m MODEL -p PROMPT -n 128``: peak resident memory against the budget
  model file + KV cache + 150 MB, with the default context (the model's training context, as
  llama.cpp's default; its KV cache is allocated lazily) and with ``-c 4096``.
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
    print("| model | file | context | KV cache | budget | peak RSS | within |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, path in paths.items():
        model = load_model(read(path))
        shapes, n_train = model.kv_shapes(), model.n_ctx_train
        del model
        size = os.path.getsize(path)
        for n_ctx in (n_train, 4096):
            kv = KVCache.bytes_needed(shapes, n_ctx, 1)
            budget = size + kv + 150 * 2**20
            _, rss = peak_rss(lamina + ["-m", str(path), "-p", PROMPT, "-n", "128", "-t", "2", "--temp", "0",
                                        "-c", str(n_ctx)])
            print(f"| {name} | {size / 2**20:.0f} MiB | {n_ctx} | {kv / 2**20:.0f} MiB | {budget / 2**20:.0f} MiB | "
                  f"{rss / 2**20:.0f} MiB | {'yes' if rss <= budget else 'NO'} |", flush=True)
    cmd = lamina + ["-m", str(paths["smollm2"]), "-p", "Hello", "-n", "1"]
    first, _ = peak_rss(cmd)
    second, _ = peak_rss(cmd)
    print(f"\nstart-up, `lamina -m smollm2 -p Hello -n 1`: first run {first:.2f} s, second run {second:.2f} s "
          f"(target < 3 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

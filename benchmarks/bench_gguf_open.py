"""Time and memory to open each real model with lamina.gguf.read, beside the gguf package's GGUFReader.

    python benchmarks/bench_gguf_open.py [--repeat N] [--no-oracle] [smollm2 qwen2 gemma3]

"Opening" is what ``lamina.gguf.read`` does: header, every metadata value (the
whole vocabulary included), the tensor index, and a zero-copy view per tensor; no
tensor data is read. The time is the median (and minimum) of ``--repeat`` opens in
this process, with the file already in the page cache. The gguf package's reader
is timed once per model (it takes seconds). Resident memory is measured in a fresh
child process: VmRSS (and its anonymous and file-backed parts) from
/proc/self/status before and after one open; it must stay well under the file size,
which shows that tensor data is not touched. The issue's target is under 0.3 s per model.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

from lamina.gguf import read
from lamina.testing.models import MODEL_NAMES, ensure_models

TARGET_SECONDS = 0.3


def rss_kib() -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of this process, in KiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
    return out


def child_memory(path: str) -> None:
    """Run in a fresh interpreter: print the RSS growth of one open as JSON."""
    before = rss_kib()
    f = read(path)
    n = len(f.tensors)
    after = rss_kib()
    print(json.dumps({k: after[k] - before[k] for k in before} | {"tensors": n}))


def memory_growth(path: str) -> dict[str, int]:
    code = "import sys; sys.path.insert(0, sys.argv[1]); import bench_gguf_open as b; b.child_memory(sys.argv[2])"
    done = subprocess.run([sys.executable, "-c", code, sys.path[0], path], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def time_opens(path: str, repeat: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of each open (CPU time is what other processes on a busy machine cannot inflate)."""
    wall, cpu = [], []
    for _ in range(repeat):
        gc.collect()
        start, start_cpu = time.perf_counter(), time.process_time()
        f = read(path)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        f.close()
        del f
    return wall, cpu


def time_oracle(path: str) -> float:
    from gguf import GGUFReader

    start = time.perf_counter()
    GGUFReader(path)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=list(MODEL_NAMES), help="short names (default: all three)")
    parser.add_argument("--repeat", type=int, default=7, help="opens per model for the median (default 7)")
    parser.add_argument("--no-oracle", action="store_true", help="skip the slow gguf package reader")
    args = parser.parse_args(argv)
    paths = ensure_models(args.models)

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n")
    print(f"| model | file | keys / tensors | lamina open: wall median (min) of {args.repeat} | CPU median "
          "| gguf GGUFReader, once | RSS growth on open (anon + file-backed) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ok = True
    for name, path in paths.items():
        path = str(path)
        mem = memory_growth(path)  # first, in a fresh process
        read(path).close()  # warm the page cache for the timed runs
        wall, cpu = time_opens(path, args.repeat)
        f = read(path)
        size = f.file_size
        median, best, cpu_median = statistics.median(wall), min(wall), statistics.median(cpu)
        oracle = "skipped" if args.no_oracle else f"{time_oracle(path):.2f} s"
        rss = mem["VmRSS"] * 1024
        print(f"| {name} | {size / 2**20:.1f} MiB | {len(f.fields)} / {len(f.tensors)} | {median * 1000:.0f} ms "
              f"({best * 1000:.0f} ms) | {cpu_median * 1000:.0f} ms | {oracle} | {rss / 2**20:.1f} MiB = "
              f"{100 * rss / size:.1f}% of the file ({mem['RssAnon'] / 1024:.1f} + {mem['RssFile'] / 1024:.1f} MiB) |",
              flush=True)
        ok &= median < TARGET_SECONDS and rss < size / 4
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    print(f"target: every wall-clock median under {TARGET_SECONDS} s and RSS growth well under the file size: "
          f"{'met' if ok else 'NOT MET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

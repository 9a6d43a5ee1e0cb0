"""Quantize and dequantize speed of the grid i-quants (IQ2_XXS … IQ1_M).

    python benchmarks/bench_iquants.py [--rows R] [--cols C] [--repeat N] [--threads T]

On an R × C float32 matrix of Gaussian values (default 256 × 4096, like a slice of a
weight matrix), for each type: quantize speed with and without importance weights
(rows per second and MB of float32 input per second; types ggml refuses without
weights show "-"), and dequantize throughput in GB/s of float32 written. The first
call of each type (Numba compile or cache load, grid tables) is reported apart as
"first call". Best of ``--repeat`` runs. The machine may be shared: the load
average is printed with the results, and timings from a loaded machine are upper
bounds.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

TYPES = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M"]


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="Numba threads (default: all cores)")
    args = ap.parse_args()
    if args.threads:
        import numba

        numba.set_num_threads(args.threads)
    import numba

    from lamina.quants import block_format, dequantize, quantize

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, args.cols)).astype(np.float32)
    imatrix = (rng.random(args.cols) + 0.1).astype(np.float32)
    mb = x.nbytes / 1e6
    print(f"{args.rows} x {args.cols} float32 ({mb:.1f} MB), {numba.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'type':8} {'first call':>10} {'rows/s (imatrix)':>17} {'MB/s (imatrix)':>15} "
          f"{'rows/s (none)':>14} {'MB/s (none)':>12} {'dequant GB/s':>13}")
    for name in TYPES:
        fmt = block_format(name)
        start = time.perf_counter()
        raw = quantize(x[:1], name, imatrix)
        dequantize(raw, name, (1, args.cols))
        first = time.perf_counter() - start
        t_imat = best_time(lambda: quantize(x, name, imatrix), args.repeat)
        if fmt.requires_importance:
            none_cols = f"{'-':>14} {'-':>12}"
        else:
            quantize(x[:1], name)
            t_none = best_time(lambda: quantize(x, name), args.repeat)
            none_cols = f"{args.rows / t_none:14.0f} {mb / t_none:12.2f}"
        raw = quantize(x, name, imatrix)
        t_deq = best_time(lambda: dequantize(raw, name, x.shape), max(args.repeat, 5))
        print(f"{name:8} {first:9.2f}s {args.rows / t_imat:17.0f} {mb / t_imat:15.2f} {none_cols} "
              f"{x.nbytes / t_deq / 1e9:13.2f}")


if __name__ == "__main__":
    main()

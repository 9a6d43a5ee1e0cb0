"""What decoding several sequences together costs, and what batch-invariant rows cost on top.

    python benchmarks/bench_batched_decode.py --models smollm2,qwen2 -B 1,4,8 -t 2

For B sequences, each with a 64-token prompt in its cache, one decode step (one new token
per sequence) is timed three ways: all B rows in one plain batch (llama.cpp's arithmetic
for a batch of B, whose bits depend on B), all B rows in one batch under
``rows_computed_alone`` (each row gets a batch of one's arithmetic, as the server decodes),
and B separate one-token decodes. Medians over ``-r`` steps, after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from lamina.engine.batch import Batch
from lamina.engine.context import Context
from lamina.gguf import read
from lamina.kernels import rows_computed_alone
from lamina.kernels.linear import set_num_threads
from lamina.models import load_model
from lamina.testing.models import model_path

PROMPT_LEN = 64


def step_batch(n: int) -> Batch:
    return Batch(np.full(n, 42, np.int32), np.full(n, PROMPT_LEN, np.int32), np.arange(n, dtype=np.int32),
                 np.ones(n, bool))


def timed(ctx: Context, fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat + 1):
        for seq in range(ctx.n_seq_max):  # every step decodes position PROMPT_LEN again
            ctx.truncate(seq, PROMPT_LEN)
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples[1:]) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="smollm2,qwen2")
    ap.add_argument("-B", "--batch-sizes", default="1,4,8")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--repeat", type=int, default=10)
    args = ap.parse_args()
    set_num_threads(args.threads)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    print(f"{'model':9s} {'B':>3s} {'batched ms':>11s} {'rows alone ms':>14s} {'B x single ms':>14s} "
          f"{'alone/batched':>14s}")
    for name in args.models.split(","):
        model = load_model(read(model_path(name)))
        rng = np.random.default_rng(0)
        for n in sizes:
            ctx = Context(model, n_ctx=256 * n, n_batch=512, n_ubatch=512, n_seq_max=n)
            for seq in range(n):
                ctx.decode(Batch.for_sequence(rng.integers(0, model.n_vocab, PROMPT_LEN), 0, seq))

            def alone():
                with rows_computed_alone():
                    ctx.decode(step_batch(n))

            batched = timed(ctx, lambda: ctx.decode(step_batch(n)), args.repeat)
            rows_alone = timed(ctx, alone, args.repeat)
            singles = timed(ctx, lambda: [ctx.decode(Batch.for_sequence([42], PROMPT_LEN, s)) for s in range(n)],
                            args.repeat)
            print(f"{name:9s} {n:3d} {batched:11.2f} {rows_alone:14.2f} {singles:14.2f} {rows_alone / batched:13.2f}x")


if __name__ == "__main__":
    main()

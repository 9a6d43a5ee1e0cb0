"""``lamina perplexity -m MODEL -f FILE -c 512``: llama-perplexity's measurement and output."""

from __future__ import annotations

import argparse
import sys
import time

from lamina.cli.options import add_model_options


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lamina perplexity",
                                description="Perplexity of a model on a text file, computed as llama-perplexity does.")
    add_model_options(p, ctx_default=512)
    p.add_argument("-f", "--file", required=True, help="text file to score")
    p.add_argument("--chunks", type=int, default=-1, help="maximum number of chunks to process (default: all)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lamina.engine.context import Context
    from lamina.llama import Llama
    from lamina.perplexity import PerplexityError, perplexity

    n_ctx = args.ctx_size
    if n_ctx <= 0:
        print("error: perplexity needs a positive context size (-c)", file=sys.stderr)
        return 1
    n_seq = max(1, args.batch_size // n_ctx)
    try:
        with open(args.file, "rb") as f:
            text = f.read()
        llm = Llama(args.model, n_ctx=n_ctx, n_batch=n_seq * n_ctx, n_ubatch=args.ubatch_size,
                    n_threads=args.threads, verbose=False, n_seq_max=n_seq)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    tokens = llm.tokenize(text, add_bos=True, special=False)
    print(f"perplexity: tokenizing the input took {(time.perf_counter() - t0) * 1e3:.2f} ms ({len(tokens)} tokens)",
          file=sys.stderr)
    bos = llm.token_bos() if llm.tokenizer_.add_bos else None
    ctx: Context = llm._ctx
    n_chunk = len(tokens) // n_ctx if args.chunks < 0 else min(args.chunks, len(tokens) // n_ctx)
    print(f"perplexity: calculating perplexity over {n_chunk} chunks, n_ctx={n_ctx}, batch_size={n_seq * n_ctx}, "
          f"n_seq={n_seq}", file=sys.stderr)
    t0 = time.perf_counter()

    def progress(chunk: int, ppl: float) -> None:
        if chunk == 1:
            took = time.perf_counter() - t0
            print(f"perplexity: {took:.2f} seconds per pass - ETA {took * n_chunk / n_seq / 60:.2f} minutes",
                  file=sys.stderr)
        print(f"[{chunk}]{ppl:.4f},", end="", flush=True)

    try:
        result = perplexity(ctx, tokens, n_ctx, bos, args.chunks, progress)
    except PerplexityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print()
    print(f"Final estimate: PPL = {result.ppl:.4f} +/- {result.uncertainty:.5f}")
    print(f"perplexity: {result.n_chunks} chunks in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0

"""``lamina bench``: llama-bench's measurements and table, so the two tools' outputs line up.

For each model and test it runs one warm-up, then ``-r`` timed repetitions on an empty
cache: ``pp N`` evaluates N random tokens in batches of ``-b`` (logits for the last
only), ``tg N`` generates N tokens one at a time from random ids (no sampling), as
llama-bench does. Speeds are tokens per second, mean ± standard deviation.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time

import numpy as np

from lamina.cli.options import add_hub_options, resolve_model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lamina bench", description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", action="append", default=[], help="model file (repeatable)")
    add_hub_options(p)
    p.add_argument("-p", "--n-prompt", default="512", help="prompt lengths, comma-separated (default: 512)")
    p.add_argument("-n", "--n-gen", default="128", help="generation lengths, comma-separated (default: 128)")
    p.add_argument("-t", "--threads", default=None, help="thread counts, comma-separated (default: physical cores)")
    p.add_argument("-b", "--batch-size", type=int, default=2048, help="logical batch size (default: 2048)")
    p.add_argument("-ub", "--ubatch-size", type=int, default=512, help="physical batch size (default: 512)")
    p.add_argument("-r", "--repetitions", type=int, default=5, help="repetitions per test (default: 5)")
    p.add_argument("-o", "--output", choices=["md", "json", "jsonl", "csv"], default="md", help="output format")
    return p


def _ints(text: str) -> list[int]:
    return [int(v) for v in str(text).split(",") if v.strip() != ""]


def model_description(llm) -> str:
    """llama-bench's model column: architecture, size label, file type."""
    from lamina.gguf.file_types import file_type_name

    g = llm.gguf
    arch = g.get_str("general.architecture", "?")
    size = g.get_str("general.size_label", None) or _params_label(sum(t.n_elements for t in g.tensors.values()))
    ftype = g.get_int("general.file_type", None)
    return f"{arch} {size} {file_type_name(ftype) if ftype is not None else '?'}"


def _params_label(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _run_prompt(llm, n_prompt: int, n_batch: int, rng) -> None:
    llm.reset()
    done = 0
    n_vocab = llm.n_vocab()
    while done < n_prompt:
        n = min(n_batch, n_prompt - done)
        tokens = rng.integers(0, n_vocab, n)
        if done == 0 and llm.tokenizer_.add_bos:
            tokens[0] = llm.token_bos()
        llm.eval(tokens)
        done += n


def _run_gen(llm, n_gen: int, rng) -> None:
    llm.reset()
    n_vocab = llm.n_vocab()
    token = llm.token_bos() if llm.tokenizer_.add_bos else int(rng.integers(0, n_vocab))
    for _ in range(n_gen):
        llm.eval([token])
        token = int(rng.integers(0, n_vocab))


def run_tests(model_path: str, threads: int, n_prompts: list[int], n_gens: list[int], n_batch: int,
              n_ubatch: int, reps: int) -> list[dict]:
    from lamina.llama import Llama

    n_ctx = max([0] + n_prompts) + max([0] + n_gens) + 8
    llm = Llama(model_path, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch, n_threads=threads, verbose=False)
    rng = np.random.default_rng(0)
    base = {
        "build_commit": "lamina", "cpu_info": _cpu_name(), "backends": "CPU",
        "model_filename": model_path, "model_type": model_description(llm),
        "model_size": os.path.getsize(model_path) - llm.gguf.data_offset,
        "model_n_params": sum(t.n_elements for t in llm.gguf.tensors.values()),
        "n_batch": n_batch, "n_ubatch": n_ubatch, "n_threads": threads, "type_k": "f16", "type_v": "f16",
    }
    results = []
    tests = [(p, 0) for p in n_prompts if p > 0] + [(0, g) for g in n_gens if g > 0]
    for n_prompt, n_gen in tests:
        if n_prompt:  # warm-up, as llama-bench: one batch of the prompt test / one generated token
            _run_prompt(llm, min(n_batch, n_prompt), n_batch, rng)
        else:
            _run_gen(llm, 1, rng)
        samples_ns = []
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            if n_prompt:
                _run_prompt(llm, n_prompt, n_batch, rng)
            else:
                _run_gen(llm, n_gen, rng)
            samples_ns.append(time.perf_counter_ns() - t0)
        n = n_prompt + n_gen
        ts = [n * 1e9 / s for s in samples_ns]
        results.append({
            **base, "n_prompt": n_prompt, "n_gen": n_gen,
            "test_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "avg_ns": int(statistics.mean(samples_ns)), "stddev_ns": int(_stdev(samples_ns)),
            "avg_ts": statistics.mean(ts), "stddev_ts": _stdev(ts),
            "samples_ns": samples_ns, "samples_ts": ts,
        })
    return results


def _stdev(values) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def markdown_table(results: list[dict]) -> str:
    head = ["model", "size", "params", "backend", "threads", "test", "t/s"]
    rows = []
    for r in results:
        test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
        rows.append([r["model_type"], f"{r['model_size'] / 2**20:.2f} MiB", f"{r['model_n_params'] / 1e6:.2f} M",
                     r["backends"], str(r["n_threads"]), test, f"{r['avg_ts']:.2f} ± {r['stddev_ts']:.2f}"])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    right = {1, 2, 4, 5, 6}
    fmt = lambda cells: "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)  # noqa: E731
                                          for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    sep = "| " + " | ".join(("-" * (w - 1) + ":") if i in right else "-" * w for i, w in enumerate(widths)) + " |"
    return "\n".join([fmt(head), sep] + [fmt(r) for r in rows])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        resolve_model(args)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    from lamina.llama import default_threads

    threads = _ints(args.threads) if args.threads else [default_threads()]
    results = []
    try:
        for model in args.model:
            for t in threads:
                results += run_tests(model, t, _ints(args.n_prompt), _ints(args.n_gen), args.batch_size,
                                     args.ubatch_size, max(1, args.repetitions))
                if args.output == "md":
                    print(f"benchmarked {os.path.basename(model)} with {t} threads", file=sys.stderr)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.output == "md":
        print(markdown_table(results))
    elif args.output == "json":
        print(json.dumps(results, indent=2))
    elif args.output == "jsonl":
        for r in results:
            print(json.dumps(r))
    else:
        w = csv.DictWriter(sys.stdout, fieldnames=list(results[0]) if results else [])
        w.writeheader()
        for r in results:
            w.writerow({k: (";".join(map(str, v)) if isinstance(v, list) else v) for k, v in r.items()})
    return 0

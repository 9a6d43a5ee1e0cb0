"""Tokenizer speed on the three real models: building from GGUF metadata, and tokenizing GPL-3.

    python benchmarks/bench_tokenizer.py [--repeat N] [--gguf-dir DIR] [smollm2 qwen2 gemma3]

``--gguf-dir`` takes the model files from DIR (``<full model name>.gguf``, see
``lamina.testing.models.MODEL_NAMES``) instead of the test-model cache; vocabulary-only
copies (metadata, no tensors) are enough, which lets the benchmark run on a machine
without the models.

For each model the GGUF file is opened once (``lamina.gguf.read``, timed separately:
that is the reader's work, not the tokenizer's). Then, ``--repeat`` times:

- **build**: ``Tokenizer.from_gguf(file)``, a fresh tokenizer with empty caches;
- **first**: that new tokenizer's first ``tokenize(GPL-3.txt, add_special=True,
  parse_special=False)`` (35 KB, ~7.5k tokens): every word is merged from scratch;
- **again**: the same call a second time, when every word comes from the word cache.

Each figure is the median (and minimum) over the repeats, in milliseconds of wall time, and
for build and first tokenize also of this process's CPU time (``time.process_time``), which
stays meaningful when other work shares the machine's cores. The
ids are checked against llama.cpp's (``refdata/llamacpp/tokens/<model>.GPL-3.ids``). The
issue's targets: first tokenize under 50 ms for each model, and building gemma-3's
262k-token tokenizer under 0.5 s (llama.cpp: 55-120 ms and 0.86 s on the reference machine).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

from lamina.gguf import read
from lamina.testing.models import MODEL_NAMES, ensure_models, shared_dir
from lamina.tokenizer import Tokenizer

TARGET_FIRST_MS = 50.0
TARGET_BUILD_GEMMA3_MS = 500.0


def ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1e3:6.1f} ({min(seconds) * 1e3:5.1f})"


def bench_model(name: str, path, text: bytes, expected: list[int], repeat: int) -> dict:
    t0 = time.perf_counter()
    gguf = read(path)
    open_s = time.perf_counter() - t0
    build, first, again, build_cpu, first_cpu = [], [], [], [], []
    ids = []
    for _ in range(repeat):
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        tok = Tokenizer.from_gguf(gguf)
        t1, c1 = time.perf_counter(), time.process_time()
        ids = tok.tokenize(text, add_special=True, parse_special=False)
        t2, c2 = time.perf_counter(), time.process_time()
        tok.tokenize(text, add_special=True, parse_special=False)
        t3 = time.perf_counter()
        build.append(t1 - t0)
        first.append(t2 - t1)
        again.append(t3 - t2)
        build_cpu.append(c1 - c0)
        first_cpu.append(c2 - c1)
        del tok
    return {"name": name, "open": open_s, "build": build, "first": first, "again": again,
            "build_cpu": build_cpu, "first_cpu": first_cpu,
            "n_vocab": len(gguf.metadata["tokenizer.ggml.tokens"]), "n_tokens": len(ids), "exact": ids == expected}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=7, help="fresh tokenizers per model (default: 7)")
    p.add_argument("--gguf-dir", help="read <full model name>.gguf from this folder instead of the model cache")
    p.add_argument("models", nargs="*", help=f"short names ({', '.join(MODEL_NAMES)}); default: all")
    args = p.parse_args(argv)
    names = args.models or list(MODEL_NAMES)
    if args.gguf_dir:
        paths = {n: Path(args.gguf_dir) / f"{MODEL_NAMES[n]}.gguf" for n in names}
    else:
        paths = ensure_models(names)
    refdata = shared_dir() / "refdata"
    text = (refdata / "text" / "GPL-3.txt").read_bytes()
    print(f"GPL-3.txt: {len(text)} bytes; times in ms, median (min) of {args.repeat}; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(f"{'model':<8} {'n_vocab':>7} {'open':>5} {'build':>14} {'build cpu':>14} {'1st tokenize':>14} "
          f"{'1st cpu':>14} {'again':>14} {'tokens':>6} exact")
    ok = True
    for name in names:
        expected = [int(x) for x in (refdata / "llamacpp" / "tokens" / f"{name}.GPL-3.ids").read_text().split()]
        r = bench_model(name, paths[name], text, expected, args.repeat)
        print(f"{name:<8} {r['n_vocab']:>7} {r['open'] * 1e3:5.0f} {ms(r['build'])} {ms(r['build_cpu'])} "
              f"{ms(r['first'])} {ms(r['first_cpu'])} {ms(r['again'])} {r['n_tokens']:>6} "
              f"{'yes' if r['exact'] else 'NO'}")
        ok &= r["exact"]
        if statistics.median(r["first"]) * 1e3 > TARGET_FIRST_MS:
            print(f"  note: first tokenize above the {TARGET_FIRST_MS:.0f} ms target")
        if name == "gemma3" and statistics.median(r["build"]) * 1e3 > TARGET_BUILD_GEMMA3_MS:
            print(f"  note: build above the {TARGET_BUILD_GEMMA3_MS:.0f} ms target")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""lamina against llama.cpp on the same machine, in one run: prompt processing (pp512) and
generation (tg128) on the three real models, 2 threads.

llama.cpp is driven through llama-cpp-python's ``Llama.eval`` from a separate virtual
environment (see shared/docs/PEERS.md for building it); it is a comparison tool only.
Both are measured the way llama-bench measures: random tokens, an empty cache per
repetition, one warm-up. The two programs alternate repetition by repetition so that
a change in machine load affects both alike.

    python benchmarks/bench_vs_llamacpp.py --peer-python /work/peer/peer/bin/python -r 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

PEER_SCRIPT = r"""
import json, sys, time, numpy as np
from llama_cpp import Llama
path, threads, n_prompt, n_gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = Llama(path, n_ctx=n_prompt + n_gen + 8, n_batch=512, n_ubatch=512, n_threads=threads,
            n_threads_batch=threads, verbose=False)
rng = np.random.default_rng(0)
def pp():
    llm.reset()  # eval() then drops every cached position from 0 on
    llm.eval(rng.integers(0, llm.n_vocab(), n_prompt).tolist())
def tg():
    llm.reset()
    for _ in range(n_gen):
        llm.eval([int(rng.integers(0, llm.n_vocab()))])
pp(); tg()  # warm-up
for line in sys.stdin:
    t = time.perf_counter(); (pp if line.strip() == "pp" else tg)(); dt = time.perf_counter() - t
    print(json.dumps({"test": line.strip(), "seconds": dt}), flush=True)
"""


def lamina_runner(path: str, threads: int, n_prompt: int, n_gen: int):
    import numpy as np

    from lamina.llama import Llama

    llm = Llama(path, n_ctx=n_prompt + n_gen + 8, n_batch=512, n_ubatch=512, n_threads=threads, verbose=False)
    rng = np.random.default_rng(0)

    def pp():
        llm.reset()
        llm.eval(rng.integers(0, llm.n_vocab(), n_prompt))

    def tg():
        llm.reset()
        for _ in range(n_gen):
            llm.eval([int(rng.integers(0, llm.n_vocab()))])

    pp()
    tg()  # warm-up (and Numba's compiled kernels loaded)
    return {"pp": pp, "tg": tg}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer-python", help="python of a venv with llama-cpp-python 0.3.36 (omit: lamina only)")
    ap.add_argument("--models", default="smollm2,qwen2,gemma3")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-r", "--repetitions", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    from lamina.testing.models import ensure_models

    paths = ensure_models(args.models.split(","))
    results = {}
    for name, path in paths.items():
        ours = lamina_runner(str(path), args.threads, args.n_prompt, args.n_gen)
        peer = None
        if args.peer_python:
            peer = subprocess.Popen([args.peer_python, "-c", PEER_SCRIPT, str(path), str(args.threads),
                                     str(args.n_prompt), str(args.n_gen)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        samples = {("lamina", "pp"): [], ("lamina", "tg"): [], ("llama.cpp", "pp"): [], ("llama.cpp", "tg"): []}
        for _ in range(args.repetitions):
            for test in ("pp", "tg"):
                t = time.perf_counter()
                ours[test]()
                samples[("lamina", test)].append(time.perf_counter() - t)
                if peer is not None:
                    peer.stdin.write(test + "\n")
                    peer.stdin.flush()
                    samples[("llama.cpp", test)].append(json.loads(peer.stdout.readline())["seconds"])
        if peer is not None:
            peer.stdin.close()
            peer.wait()
        del ours
        row = {}
        for (who, test), secs in samples.items():
            if secs:
                n = args.n_prompt if test == "pp" else args.n_gen
                ts = [n / s for s in secs]
                row[f"{who} {test}{n}"] = (statistics.mean(ts), statistics.stdev(ts) if len(ts) > 1 else 0.0)
        results[name] = row
        print(f"{name}: " + ", ".join(f"{k} {m:.1f} ± {s:.1f} t/s" for k, (m, s) in row.items()), flush=True)
    if args.peer_python:
        print("\n| model | lamina pp | llama.cpp pp | ratio | lamina tg | llama.cpp tg | ratio |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, row in results.items():
            lp, cp = row[f"lamina pp{args.n_prompt}"][0], row[f"llama.cpp pp{args.n_prompt}"][0]
            lg, cg = row[f"lamina tg{args.n_gen}"][0], row[f"llama.cpp tg{args.n_gen}"][0]
            print(f"| {name} | {lp:.1f} | {cp:.1f} | {lp / cp:.2f}x | {lg:.1f} | {cg:.1f} | {lg / cg:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

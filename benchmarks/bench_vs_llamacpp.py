"""lamina against llama.cpp on the same machine, in one run: prompt processing (pp512) and
generation (tg128) on the three real models, 2 threads.

llama.cpp is driven through llama-cpp-python's ``Llama.eval`` from a separate virtual
environment (see shared/docs/PEERS.md for building it; ``LLAMA_CPP_LIB_PATH`` points it at
another build's libllama, e.g. one built without AVX-512); it is a comparison tool only.
Both are measured the way llama-bench measures: random tokens, an empty cache per
repetition, one warm-up. The two programs alternate repetition by repetition so that
a change in machine load affects both alike. llama.cpp runs with flash attention on, its own
CLI's and server's default and the arithmetic lamina repeats (``--flash-attn off`` for
llama-cpp-python's default).

``--model NAME=PATH`` adds another file (e.g. benchmarks/make_synthetic_model.py's 7B-class
model; use ``-p 64 -n 16`` there). ``--startup`` also measures, each program in a fresh process
per model, best of three: the time from process start to the first token (``lamina -m MODEL -p ""
-n 1``; llama.cpp through the same llama-cpp-python harness: load, evaluate BOS) and the peak
resident memory, against the budget file + KV cache + 150 MB.

    python benchmarks/bench_vs_llamacpp.py --peer-python /work/peer/peer/bin/python -r 5
    LAMINA_KERNELS=avx2 LLAMA_CPP_LIB_PATH=.../build-avx2/bin python benchmarks/bench_vs_llamacpp.py ...
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
path, threads, n_prompt, n_gen, fa = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
llm = Llama(path, n_ctx=n_prompt + n_gen + 8, n_batch=512, n_ubatch=512, n_threads=threads,
            n_threads_batch=threads, flash_attn=fa == "on", verbose=False)
rng = np.random.default_rng(0)
def pp():
    llm.reset()  # eval() then drops every cached position from 0 on
    llm.eval(rng.integers(0, llm.n_vocab(), n_prompt).tolist())
def tg():
    llm.reset()
    for _ in range(n_gen):
        llm.eval([int(rng.integers(0, llm.n_vocab()))])
pp(); tg()  # warm-up
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    t = time.perf_counter(); (pp if line.strip() == "pp" else tg)(); dt = time.perf_counter() - t
    print(json.dumps({"test": line.strip(), "seconds": dt}), flush=True)
"""


# pause before each measurement: llama.cpp's OpenMP threads spin-wait after a run (GOMP's spin count)
# and a program measured right after it shares the cores with them (lamina's generation lost ~15%)
SETTLE_SECONDS = 0.5


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
    ap.add_argument("--flash-attn", choices=("on", "off"), default="on", help="llama.cpp's flash attention")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="another GGUF file")
    ap.add_argument("--startup", action="store_true", help="also time start-up and measure peak memory")
    ap.add_argument("--bandwidth", action="store_true",
                    help="also report generation as GB/s of weights read, beside the machine's read bandwidth")
    args = ap.parse_args()
    from lamina.testing.models import ensure_models

    paths = ensure_models(args.models.split(",")) if args.models else {}
    paths.update(dict(m.split("=", 1) for m in args.model))
    results = {}
    for name, path in paths.items():
        ours = lamina_runner(str(path), args.threads, args.n_prompt, args.n_gen)
        peer = None
        if args.peer_python:
            peer = subprocess.Popen([args.peer_python, "-c", PEER_SCRIPT, str(path), str(args.threads),
                                     str(args.n_prompt), str(args.n_gen), args.flash_attn],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            read_peer(peer)  # loaded and warmed up: its start must not overlap lamina's first repetition
        samples = {("lamina", "pp"): [], ("lamina", "tg"): [], ("llama.cpp", "pp"): [], ("llama.cpp", "tg"): []}
        for _ in range(args.repetitions):
            for test in ("pp", "tg"):
                time.sleep(SETTLE_SECONDS)
                t = time.perf_counter()
                ours[test]()
                samples[("lamina", test)].append(time.perf_counter() - t)
                if peer is not None:
                    time.sleep(SETTLE_SECONDS)
                    samples[("llama.cpp", test)].append(ask_peer(peer, test))
        if peer is not None:
            peer.stdin.close()
            peer.wait()
        del ours
        row = {}
        for (who, test), secs in samples.items():
            if secs:
                n = args.n_prompt if test == "pp" else args.n_gen
                ts = [n / s for s in secs]
                row[f"{who} {test}{n}"] = (statistics.mean(ts), statistics.stdev(ts) if len(ts) > 1 else 0.0,
                                           [round(t, 1) for t in ts])
        results[name] = row
        print(f"{name}: " + ", ".join(f"{k} {m:.1f} ± {s:.1f} t/s {each}" for k, (m, s, each) in row.items()),
              flush=True)
    if args.peer_python:
        print("\n| model | lamina pp | llama.cpp pp | ratio | lamina tg | llama.cpp tg | ratio |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, row in results.items():
            lp, cp = row[f"lamina pp{args.n_prompt}"][0], row[f"llama.cpp pp{args.n_prompt}"][0]
            lg, cg = row[f"lamina tg{args.n_gen}"][0], row[f"llama.cpp tg{args.n_gen}"][0]
            print(f"| {name} | {lp:.1f} | {cp:.1f} | {lp / cp:.2f}x | {lg:.1f} | {cg:.1f} | {lg / cg:.2f}x |")
    if args.bandwidth:
        print_bandwidth(results, paths, args)
    if args.startup:
        startup = {name: startup_and_memory(str(path), args) for name, path in paths.items()}
        print("\n| model | lamina to first token | llama.cpp | lamina peak RSS | llama.cpp peak RSS | budget |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, row in startup.items():
            peer = row.get("llama.cpp", (float("nan"), float("nan")))
            print(f"| {name} | {row['lamina'][0]:.2f} s | {peer[0]:.2f} s | {row['lamina'][1]:.0f} MB | "
                  f"{peer[1]:.0f} MB | {row['budget']:.0f} MB |")
            results.setdefault(name, {})["startup"] = row
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def ask_peer(peer: subprocess.Popen, test: str) -> float:
    """Seconds llama.cpp took for one repetition of ``test``."""
    try:
        peer.stdin.write(test + "\n")
        peer.stdin.flush()
    except BrokenPipeError:
        pass  # read_peer says what happened
    return read_peer(peer)["seconds"]


def read_peer(peer: subprocess.Popen) -> dict:
    """The llama.cpp harness's next answer; a harness that died says so."""
    answer = peer.stdout.readline()
    if not answer:
        sys.exit("the llama.cpp harness stopped (its error is above; does LLAMA_CPP_LIB_PATH name a build's bin/?)")
    return json.loads(answer)


def print_bandwidth(results: dict, paths: dict, args) -> None:
    """Generation reads every weight once per token: tokens/s x weight bytes is the memory traffic it
    achieves, to set against what this machine's memory delivers to the same number of threads."""
    machine = read_bandwidth(args.threads)
    print(f"\nmachine read bandwidth, {args.threads} threads: {machine:.1f} GB/s (a parallel sum over 2 GiB, best of 5)")
    print("| model | weights read per token | lamina tg | GB/s | of machine | llama.cpp tg | GB/s | of machine |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, row in results.items():
        per_token = weight_bytes_per_token(str(paths[name])) / 1e9
        cells = []
        for who in ("lamina", "llama.cpp"):
            tg = row.get(f"{who} tg{args.n_gen}", (float("nan"),))[0]
            cells += [f"{tg:.1f}", f"{tg * per_token:.1f}", f"{tg * per_token / machine:.0%}"]
        print(f"| {name} | {per_token:.2f} GB | " + " | ".join(cells) + " |")
        row["bandwidth"] = {"machine_gb_s": machine, "weights_gb_per_token": per_token}


def weight_bytes_per_token(path: str) -> int:
    """Bytes of weights one generated token reads: every tensor but the embedding table (one row of it),
    unless that table is also the output matrix."""
    from lamina.gguf import read

    tensors = {name: t.n_bytes for name, t in read(path).tensors.items()}
    if "output.weight" in tensors:
        tensors.pop("token_embd.weight", None)
    return sum(tensors.values())


def read_bandwidth(threads: int) -> float:
    """GB/s with which ``threads`` threads read a 2 GiB array from memory (a sum of 64-bit words)."""
    import numba
    import numpy as np

    @numba.njit(parallel=True, cache=False)
    def total(words):
        chunks = numba.get_num_threads() * 16
        per = (words.size + chunks - 1) // chunks
        out = np.zeros(chunks, dtype=np.uint64)
        for c in numba.prange(chunks):
            acc = np.uint64(0)
            for i in range(c * per, min(words.size, (c + 1) * per)):
                acc += words[i]
            out[c] = acc
        return out.sum()

    numba.set_num_threads(threads)
    words = np.ones(2**28, dtype=np.uint64)
    total(words)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        total(words)
        best = min(best, time.perf_counter() - t)
    return words.nbytes / best / 1e9


FIRST_TOKEN = r"""
import sys
if sys.argv[1] == "lamina":  # the lamina command itself: load, evaluate the BOS token, sample one
    from lamina.cli import main
    sys.exit(main(["-m", sys.argv[2], "-c", sys.argv[3], "-t", sys.argv[4], "-p", "", "-n", "1", "--temp", "0"]))
from llama_cpp import Llama
llm = Llama(sys.argv[2], n_ctx=int(sys.argv[3]), n_threads=int(sys.argv[4]), flash_attn=sys.argv[5] == "on",
            verbose=False)
llm.eval([llm.token_bos()])
"""


def startup_and_memory(path: str, args) -> dict:
    """Fresh processes: (seconds from start to the first token's logits, peak RSS in MB) for each program,
    and lamina's memory budget (file + its KV cache at this context + 150 MB)."""
    import os

    n_ctx = args.n_prompt + args.n_gen + 8
    row = {}
    programs = [("lamina", sys.executable)] + ([("llama.cpp", args.peer_python)] if args.peer_python else [])
    for _ in range(3):  # the programs in turns, so that a change in the machine's load touches both
        for who, python in programs:
            start = time.perf_counter()
            proc = subprocess.Popen([python, "-c", FIRST_TOKEN, "lamina" if who == "lamina" else "peer", path,
                                     str(n_ctx), str(args.threads), args.flash_attn],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, status, usage = os.wait4(proc.pid, 0)
            if os.waitstatus_to_exitcode(status):
                sys.exit(f"{who} failed on {path}")
            took = (time.perf_counter() - start, usage.ru_maxrss / 1024)
            if who not in row or took[0] < row[who][0]:
                row[who] = took
    row["budget"] = (os.path.getsize(path) + kv_cache_bytes(path, n_ctx)) / 2**20 + 150
    return row


def kv_cache_bytes(path: str, n_ctx: int) -> int:
    """The float16 KV cache for n_ctx tokens, from the file's metadata (every layer attends to all n_ctx)."""
    from lamina.gguf import read

    m = read(path).metadata
    arch = m["general.architecture"]
    heads = int(m[f"{arch}.attention.head_count"])
    kv_heads = int(m.get(f"{arch}.attention.head_count_kv", heads))
    head_k = int(m.get(f"{arch}.attention.key_length", int(m[f"{arch}.embedding_length"]) // heads))
    head_v = int(m.get(f"{arch}.attention.value_length", head_k))
    return int(m[f"{arch}.block_count"]) * kv_heads * (head_k + head_v) * n_ctx * 2


if __name__ == "__main__":
    sys.exit(main())

"""``lamina serve`` against ``llama-server`` on the same machine, in one run: streaming clients
served together by continuous batching.

Both servers are started with the same flags (``-m MODEL -c CTX -np SLOTS -t THREADS``) and
kept running side by side; the rounds alternate between them, so a change in machine load
affects both alike, and only one is driven at a time. Each round sends ``C`` streaming
``/completion`` requests at once (distinct prompts of about 30 tokens, ``n_predict`` tokens
each, greedy, ``ignore_eos``) and measures:

* aggregate tokens/s: all generated tokens over the round's wall time (first request sent to
  last token received);
* time to first token (TTFT), the median over the round's requests;
* per-stream tokens/s after the first token, the median over requests.

    python benchmarks/bench_server.py --peer-server /work/peer/.../build/bin/llama-server \\
        --model smollm2 -np 8 --clients 1,8 -n 128 -r 3

llama-server is a comparison tool only (see shared/docs/PEERS.md for building it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx

from lamina.testing.models import model_path
from lamina.testing.server_process import ServerProcess

TOPICS = ["a lighthouse keeper", "a lost umbrella", "the first snow", "a robot gardener", "an old map",
          "a night train", "a talking cat", "a quiet library", "the last bakery", "a paper boat",
          "a mountain village", "a broken clock", "a desert well", "a forgotten song", "a chess champion",
          "a winter market"]


def prompt_for(i: int) -> str:
    return f"Write a long and detailed story about {TOPICS[i % len(TOPICS)]}, told in the first person. Story {i}:"


async def one_stream(client: httpx.AsyncClient, url: str, i: int, n_predict: int, t_start: float) -> dict:
    body = {"prompt": prompt_for(i), "n_predict": n_predict, "temperature": 0, "ignore_eos": True, "stream": True,
            "cache_prompt": False}
    first = last = None
    n_tokens = 0
    async with client.stream("POST", url + "/completion", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            now = time.perf_counter()
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            if first is None:
                first = now
            last = now
            if chunk.get("stop"):
                n_tokens = chunk["tokens_predicted"]
    return {"ttft": first - t_start, "tokens": n_tokens, "decode_s": last - first, "end": last}


async def one_round(url: str, clients: int, n_predict: int) -> dict:
    async with httpx.AsyncClient(timeout=600) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one_stream(client, url, i, n_predict, t0) for i in range(clients)))
    wall = max(r["end"] for r in results) - t0
    return {"aggregate": sum(r["tokens"] for r in results) / wall,
            "ttft": statistics.median(r["ttft"] for r in results),
            "per_stream": statistics.median((r["tokens"] - 1) / r["decode_s"] for r in results)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer-server", help="llama-server binary built from llama-cpp-python 0.3.36's tree (omit: lamina only)")
    ap.add_argument("--model", default="smollm2", help="smollm2, qwen2 or gemma3 (the test models), or a path")
    ap.add_argument("-c", "--ctx-size", type=int, default=4096)
    ap.add_argument("-np", "--parallel", type=int, default=8)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--clients", default="1,8", help="comma-separated numbers of concurrent streams")
    ap.add_argument("-n", "--n-predict", type=int, default=128)
    ap.add_argument("-r", "--rounds", type=int, default=3)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    path = str(model_path(args.model)) if "/" not in args.model else args.model
    flags = ["-m", path, "-c", str(args.ctx_size), "-np", str(args.parallel), "-t", str(args.threads)]
    servers = {"lamina": ServerProcess(flags)}
    if args.peer_server:
        servers["llama-server"] = ServerProcess([*flags, "--no-webui"], command=(args.peer_server,))
    clients = [int(c) for c in args.clients.split(",")]
    try:
        for s in servers.values():
            s.wait_ready(timeout=600)
        for s in servers.values():  # warm-up: every batch shape the rounds will use (lamina compiles kernels)
            for c in clients:
                asyncio.run(one_round(s.url, c, 8))
        samples = {(name, c): [] for name in servers for c in clients}
        for _ in range(args.rounds):
            for c in clients:
                for name, s in servers.items():
                    samples[(name, c)].append(asyncio.run(one_round(s.url, c, args.n_predict)))
    finally:
        for s in servers.values():
            s.stop()

    print(f"{args.model}, -c {args.ctx_size} -np {args.parallel} -t {args.threads}, {args.n_predict} tokens per "
          f"stream, median of {args.rounds} rounds")
    print(f"{'server':14s} {'streams':>7s} {'aggregate tok/s':>16s} {'per-stream tok/s':>17s} {'TTFT ms':>9s}")
    table = {}
    for (name, c), rounds in samples.items():
        row = {k: statistics.median(r[k] for r in rounds) for k in ("aggregate", "per_stream", "ttft")}
        table[f"{name}/{c}"] = row
        print(f"{name:14s} {c:7d} {row['aggregate']:16.1f} {row['per_stream']:17.1f} {row['ttft'] * 1e3:9.0f}")
    if "llama-server" in servers:
        for c in clients:
            a, b = table[f"lamina/{c}"], table[f"llama-server/{c}"]
            print(f"ratio lamina/llama-server, {c} streams: aggregate {a['aggregate'] / b['aggregate']:.2f}x, "
                  f"TTFT {a['ttft'] / b['ttft']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()

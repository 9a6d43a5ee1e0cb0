"""``lamina serve --ray`` on one machine: replicas, routing policies, and the cost of the Ray hop.

One local Ray cluster is started here; each configuration is the real command joining it
(``lamina serve --ray --ray-address ADDR ...``), run alone, then stopped. Three measurements:

1. **Throughput and time to first token.** 16 chat sessions at once, each of ``--turns``
   turns (a shared system prompt, its own first question, then follow-ups; ``-n`` greedy
   tokens per answer, ``ignore_eos``), streamed with the OpenAI wire format. Reported:
   all completion tokens over the wall time, and the p50/p95 of every request's time to its
   first token. Against 1 replica (1 CPU, then 2 CPUs) and 2 replicas of 1 CPU each, the
   same number of slots in all (``--slots`` in total), and a plain ``lamina serve`` (no Ray).
2. **Cache hit rate.** The same sessions against 2 replicas with prefix-aware routing and
   with round-robin: the share of all prompt tokens found in a slot's cache
   (``usage.prompt_tokens_details.cached_tokens`` over ``usage.prompt_tokens``).
3. **The Ray hop.** One small request at a time (a 1-token completion), in turn to a direct
   ``lamina serve`` and to the same server behind Ray (1 replica), both running: the
   difference of the medians is what Ray Serve's proxy, the ingress and the replica call
   add. A Ray Serve deployment that answers ``{}`` at once gives the floor of any Ray Serve
   application on the same machine.

    python benchmarks/bench_ray_serve.py --model smollm2 -n 32 --turns 3 --sessions 16 --repeat 3 -r 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

import httpx

from lamina.cli.bench import _cpu_name as cpu_name
from lamina.testing.models import model_path
from lamina.testing.server_process import ServerProcess, free_port

SYSTEM = ("You are a patient tutor. You explain things to curious students in plain words, with one example "
          "each time, and you keep every answer short.")
TOPICS = ["volcanoes", "the moon's phases", "photosynthesis", "prime numbers", "how bridges stand", "rainbows",
          "the water cycle", "magnets", "black holes", "bread dough rising", "ocean tides", "how vaccines work",
          "the printing press", "earthquakes", "honeybees", "electric circuits", "glaciers", "coral reefs"]
FOLLOW_UPS = ["Can you give another example?", "Why does that happen?", "Summarize it in one sentence.",
              "What is a common mistake about it?"]


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


async def one_turn(client: httpx.AsyncClient, url: str, messages: list[dict], n: int) -> dict:
    body = {"messages": messages, "max_tokens": n, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first, text, usage, replica = None, [], None, None
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        replica = r.headers.get("x-lamina-replica")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices", []):
                if choice["delta"].get("content"):
                    first = first or time.perf_counter()
                    text.append(choice["delta"]["content"])
    return {"ttft": first - t0, "text": "".join(text), "usage": usage, "replica": replica}


async def session(client: httpx.AsyncClient, url: str, i: int, turns: int, n: int) -> list[dict]:
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Lesson {i}: explain {TOPICS[i % len(TOPICS)]} to me."}]
    results = []
    for turn in range(turns):
        result = await one_turn(client, url, messages, n)
        results.append(result)
        messages += [{"role": "assistant", "content": result["text"]},
                     {"role": "user", "content": FOLLOW_UPS[(i + turn) % len(FOLLOW_UPS)]}]
    return results


async def sessions(url: str, count: int, turns: int, n: int, first: int = 0) -> dict:
    async with httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_connections=count + 4)) as client:
        t0 = time.perf_counter()
        done = await asyncio.gather(*(session(client, url, first + i, turns, n) for i in range(count)))
        wall = time.perf_counter() - t0
    requests = [r for s in done for r in s]
    prompt = sum(r["usage"]["prompt_tokens"] for r in requests)
    cached = sum(r["usage"]["prompt_tokens_details"]["cached_tokens"] for r in requests)
    later = [r for s in done for r in s[1:]]  # turns after the first: their history could have been cached
    return {"tokens_per_s": sum(r["usage"]["completion_tokens"] for r in requests) / wall,
            "ttft_p50": percentile([r["ttft"] for r in requests], 0.5),
            "ttft_p95": percentile([r["ttft"] for r in requests], 0.95),
            "hit_rate": cached / prompt,
            "later_hit_rate": sum(r["usage"]["prompt_tokens_details"]["cached_tokens"] for r in later) /
            max(1, sum(r["usage"]["prompt_tokens"] for r in later)),
            "sticky": sum(len({r["replica"] for r in s}) == 1 for s in done) / len(done), "wall": wall}


def rounds(url: str, args) -> dict:
    """The medians over ``--repeat`` rounds of ``--sessions`` new sessions each (on this machine, shared with
    other work, one round can be slowed by it; the median is what a quieter machine is close to)."""
    runs = [asyncio.run(sessions(url, args.sessions, args.turns, args.n, first=k * args.sessions))
            for k in range(args.repeat)]
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


def start(model: str, address: str | None, flags: list[str], port: int | None = None) -> ServerProcess:
    """``lamina serve`` with ``flags``; with ``address``, on that Ray cluster (whose Ray Serve listens on ``port``
    from the first application on: a cluster has one HTTP address)."""
    ray_flags = ["--ray", "--ray-address", address] if address else []
    return ServerProcess(["-m", model, *ray_flags, *flags], port=port).wait_ready(timeout=600)


def hop_overhead(direct: str, ray_url: str, rounds: int) -> dict:
    """Median milliseconds of a one-token completion: direct, through Ray, and through a Ray Serve deployment
    that only answers ``{}`` (the floor of any Ray Serve application on this machine)."""
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class Echo:
        async def __call__(self, request) -> dict:
            await request.body()
            return {}

    serve.run(Echo.bind(), name="echo", route_prefix="/echo")
    body = {"prompt": "Hello", "n_predict": 1, "temperature": 0, "cache_prompt": True}
    urls = {"direct": direct + "/completion", "ray": ray_url + "/completion", "echo": ray_url + "/echo"}
    times: dict[str, list[float]] = {name: [] for name in urls}
    with httpx.Client(timeout=60) as client:
        for url in urls.values():  # warm each
            for _ in range(3):
                client.post(url, json=body).raise_for_status()
        for _ in range(rounds):
            for name, url in urls.items():
                t0 = time.perf_counter()
                client.post(url, json=body).raise_for_status()
                times[name].append((time.perf_counter() - t0) * 1e3)
    serve.delete("echo")
    return {f"{name}_ms": statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", help="smollm2, qwen2 or gemma3 (the test models), or a path")
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("-n", type=int, default=32, help="tokens per answer")
    ap.add_argument("--slots", type=int, default=16, help="slots in total, split between the replicas")
    ap.add_argument("--ctx-per-slot", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3, help="rounds of sessions per configuration (medians reported)")
    ap.add_argument("-r", "--rounds", type=int, default=40, help="requests to each server for the hop overhead")
    ap.add_argument("--only", default="throughput,routing,hop", help="which measurements to run")
    args = ap.parse_args()
    import ray

    model = str(model_path(args.model)) if os.sep not in args.model else args.model
    only = set(args.only.split(","))
    print(f"# {cpu_name()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"{os.path.basename(model)}; {args.sessions} sessions x {args.turns} turns x {args.n} tokens; "
          f"{args.slots} slots in all; medians of {args.repeat} rounds", flush=True)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    port = free_port()

    def flags(replicas: int, cpus: int, routing: str = "prefix") -> list[str]:
        """``lamina serve`` flags for ``replicas`` replicas of ``cpus`` CPUs (0 replicas: one server, no Ray)."""
        np_ = args.slots // max(1, replicas)
        own = ["-np", str(np_), "-c", str(np_ * args.ctx_per_slot)]
        if not replicas:
            return own + ["-t", str(cpus)]
        return own + ["--replicas", str(replicas), "--replica-cpus", str(cpus), "--ray-routing", routing]

    def measure(replicas: int, cpus: int, routing: str = "prefix") -> dict:
        srv = start(model, address if replicas else None, flags(replicas, cpus, routing), port if replicas else None)
        try:
            m = rounds(srv.url, args)
        finally:
            srv.stop()
        return {**m, "speed": f"{m['tokens_per_s']:.1f} | {m['ttft_p50'] * 1e3:.0f} ms | {m['ttft_p95'] * 1e3:.0f} ms"}

    try:
        if "throughput" in only:
            print("| replicas | CPUs each | slots each | tokens/s | TTFT p50 | TTFT p95 | prompt tokens cached |")
            print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            for replicas, cpus in ((1, 1), (1, 2), (2, 1)):
                m = measure(replicas, cpus)
                print(f"| {replicas} | {cpus} | {args.slots // replicas} | {m['speed']} | {m['hit_rate']:.0%} |",
                      flush=True)
            m = measure(0, 2)
            print(f"| no Ray: one lamina serve | 2 | {args.slots} | {m['speed']} | {m['hit_rate']:.0%} |", flush=True)
        if "routing" in only:
            print("\n| routing (2 replicas) | prompt tokens cached | of turns 2+ | sessions on one replica | "
                  "tokens/s | TTFT p50 | TTFT p95 |")
            print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
            for routing in ("prefix", "round-robin"):
                m = measure(2, 1, routing)
                print(f"| {routing} | {m['hit_rate']:.0%} | {m['later_hit_rate']:.0%} | {m['sticky']:.0%} | "
                      f"{m['speed']} |", flush=True)
        if "hop" in only:
            direct = start(model, None, ["-np", "4", "-c", "4096", "-t", "1"])
            behind = start(model, address, ["--replicas", "1", "--replica-cpus", "1", "-np", "4", "-c", "4096"], port)
            try:
                h = hop_overhead(direct.url, behind.url, args.rounds)
            finally:
                behind.stop()
                direct.stop()
            print(f"\nRay hop, medians of {args.rounds} one-token completions: direct {h['direct_ms']:.1f} ms, "
                  f"through Ray Serve {h['ray_ms']:.1f} ms: {h['ray_ms'] - h['direct_ms']:.1f} ms more per request "
                  f"(a Ray Serve deployment that only answers {{}}: {h['echo_ms']:.1f} ms)", flush=True)
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()

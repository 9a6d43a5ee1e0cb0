"""What structured output costs: schema compile time, the per-token constraint, and generation speed.

In process, on the model's real vocabulary (qwen2: 151,936 tokens):

* building the matcher's view of the vocabulary (once per model);
* compiling each schema (median of 5), and making a matcher from it;
* constraining one token: the whole-vocabulary mask that the sampler computes when its first
  choice does not fit (the worst case, done here at every token of a greedy generation), and the
  one-token check it does first (the common case); median, 99th percentile and maximum.

Through the HTTP servers, ``lamina serve`` and ``llama-server`` side by side in one run:
``/completion`` tokens/s (``timings.predicted_per_second``) with ``json_schema`` (and with llama.cpp's
``grammars/json.gbnf`` as ``grammar``) against the same number of tokens without a grammar
(``ignore_eos``), each the median of ``-r`` rounds.

    python benchmarks/bench_grammar.py --model qwen2 \\
        --peer-server /work/peer/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server

llama-server is a comparison tool only (see shared/docs/PEERS.md for building it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import httpx
import numpy as np

from lamina.testing.models import model_path
from lamina.testing.server_process import ServerProcess

SCHEMAS = {
    "person": {"type": "object", "properties": {
        "name": {"type": "string"}, "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "email": {"type": "string", "format": "email"},
        "address": {"type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"},
                                                     "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["street", "city"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5}},
        "required": ["name", "age", "address"]},
    "inventory": {"type": "array", "minItems": 2, "maxItems": 4, "items": {"type": "object", "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"}, "count": {"type": "integer", "minimum": 0},
        "price": {"type": "number"}, "kind": {"enum": ["tool", "part", "kit"]}},
        "required": ["sku", "count", "kind"]}},
    "event": {"type": "object", "$defs": {"when": {"type": "string", "format": "date-time"}},
              "properties": {"title": {"type": "string"}, "start": {"$ref": "#/$defs/when"},
                             "end": {"$ref": "#/$defs/when"}, "public": {"type": "boolean"}},
              "required": ["title", "start"]},
}
PROMPT = "Write one example as JSON:\n"
# llama.cpp's grammars/json.gbnf, as GBNF (character-level in the matcher, see lamina/grammar/to_lark.py)
JSON_GBNF = json.loads((Path(__file__).parent.parent / "tests" / "data" /
                        "llamacpp_grammar_cases.json").read_text())["grammars"]["json.gbnf"]


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


def in_process(model: str) -> dict:
    from lamina import Llama
    from lamina.grammar import GrammarMatcher, compile_gbnf
    from lamina.grammar.json_schema import compile_json_schema
    from lamina.grammar.vocabulary import matcher_tokenizer

    llm = Llama(str(model_path(model)), n_ctx=1024, verbose=False)
    tok = llm.tokenizer_
    t0 = time.perf_counter()
    llg = matcher_tokenizer(tok)
    vocab_s = time.perf_counter() - t0
    compile_ms, matcher_ms = {}, {}
    for name, schema in SCHEMAS.items():
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            compiled = compile_json_schema(schema)
            times.append((time.perf_counter() - t0) * 1e3)
        compile_ms[name] = statistics.median(times)
        t0 = time.perf_counter()
        GrammarMatcher(compiled, llg, llm.n_vocab())
        matcher_ms[name] = (time.perf_counter() - t0) * 1e3
    schema_costs = token_costs(llm, llg, [compile_json_schema(s) for s in SCHEMAS.values()])
    gbnf_costs = token_costs(llm, llg, [compile_gbnf(JSON_GBNF)])
    llm.close()
    return {"vocab": tok.n_vocab, "vocab_s": vocab_s, "compile_ms": compile_ms, "matcher_ms": matcher_ms,
            "schema": schema_costs, "gbnf": gbnf_costs}


def token_costs(llm, llg, grammars: list[str]) -> dict:
    """Greedy generation under each grammar, timing the one-token check and the whole mask per token."""
    from lamina.grammar import GrammarMatcher

    mask_ms, check_ms = [], []
    for compiled in grammars:
        matcher = GrammarMatcher(compiled, llg, llm.n_vocab())
        llm.reset()
        llm.eval(llm.tokenize(PROMPT.encode(), add_bos=True))
        for _ in range(160):
            logits = llm.logits()
            best = int(np.argmax(logits))
            t0 = time.perf_counter()
            matcher.allows(best)
            check_ms.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            allowed = matcher.mask()
            mask_ms.append((time.perf_counter() - t0) * 1e3)
            token = int(np.argmax(np.where(allowed, logits, -np.inf)))
            matcher.accept(token)
            if llm.tokenizer_.is_eog(token) or matcher.finished:
                break
            llm.eval([token])
    return {"mask_ms": (statistics.median(mask_ms), percentile(mask_ms, 99), max(mask_ms), len(mask_ms)),
            "check_ms": (statistics.median(check_ms), percentile(check_ms, 99), max(check_ms))}


def server_speed(url: str, rounds: int) -> dict:
    """tokens/s with each schema, and without a grammar for as many tokens."""
    out = {}
    with httpx.Client(timeout=600) as client:
        client.post(url + "/completion", json={"prompt": PROMPT, "n_predict": 4})  # warm up
        cases = {name: {"json_schema": schema} for name, schema in SCHEMAS.items()}
        cases["json.gbnf"] = {"grammar": JSON_GBNF}
        for name, constraint in cases.items():
            constrained, free, lengths = [], [], []
            for _ in range(rounds):
                r = client.post(url + "/completion", json={"prompt": PROMPT, "n_predict": 256, "temperature": 0,
                                                           "cache_prompt": False, **constraint}).json()
                n = r["timings"]["predicted_n"]
                constrained.append(r["timings"]["predicted_per_second"])
                lengths.append(n)
                r = client.post(url + "/completion", json={"prompt": PROMPT, "n_predict": n, "temperature": 0,
                                                           "ignore_eos": True, "cache_prompt": False}).json()
                free.append(r["timings"]["predicted_per_second"])
            out[name] = (statistics.median(constrained), statistics.median(free), lengths[-1])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen2")
    p.add_argument("--peer-server", default=None, help="llama-server binary to compare with")
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("-r", "--rounds", type=int, default=3)
    args = p.parse_args()

    r = in_process(args.model)
    print(f"model {args.model}: {r['vocab']} tokens; matcher's vocabulary built in {r['vocab_s']:.2f} s (once)")
    for name in SCHEMAS:
        print(f"  schema {name:10s} compiles in {r['compile_ms'][name]:6.2f} ms, matcher made in "
              f"{r['matcher_ms'][name]:6.2f} ms")
    for label, key in (("the 3 schemas", "schema"), ("json.gbnf", "gbnf")):
        med, p99, mx, n = r[key]["mask_ms"]
        print(f"  {label}: whole-vocabulary mask, {n} tokens: median {med:.3f} ms, p99 {p99:.3f} ms, "
              f"max {mx:.3f} ms")
        med, p99, mx = r[key]["check_ms"]
        print(f"  {label}: one-token check: median {med:.4f} ms, p99 {p99:.4f} ms, max {mx:.4f} ms")

    servers = [("lamina serve", None)]
    if args.peer_server:
        servers.append(("llama-server", (args.peer_server,)))
    flags = ["-m", str(model_path(args.model)), "-c", "2048", "-np", "1", "-t", str(args.threads)]
    for label, command in servers:
        kwargs = {} if command is None else {"command": command}
        server = ServerProcess(flags, **kwargs).wait_ready()
        try:
            speeds = server_speed(server.url, args.rounds)
        finally:
            server.stop()
        for name, (constrained, free, n) in speeds.items():
            print(f"  {label:12s} {name:10s} {n:3d} tokens: {constrained:6.1f} tok/s with the schema, "
                  f"{free:6.1f} without ({constrained / free:.2f}x)", flush=True)


if __name__ == "__main__":
    main()

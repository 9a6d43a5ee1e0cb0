"""Time per token of the sampler chain on vocabulary-sized logit vectors.

    python benchmarks/bench_sampling.py [--repeat N]

Logits are drawn once (standard normal times 3, float32) for each vocabulary
size of the real models (smollm2 49152, qwen2 151936, gemma3 262144), with 64
accepted tokens of history. Each line gives the median microseconds per
``SamplerChain.sample`` call for one setting.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from lamina.sampling import SamplerChain, SamplingParams

SETTINGS = {
    "default (top-k 40, top-p, min-p, temp)": {},
    "greedy (temperature 0)": {"temperature": 0.0},
    "default + repeat/freq/presence penalties": {"repeat_penalty": 1.1, "frequency_penalty": 0.1,
                                                  "presence_penalty": 0.1},
    "default + DRY (no breakers)": {"dry_multiplier": 0.8, "dry_sequence_breakers": ()},
    "mirostat 2": {"mirostat": 2},
    "top-k disabled (full-vocabulary top-p)": {"top_k": 0},
}
VOCABS = {"smollm2": 49152, "qwen2": 151936, "gemma3": 262144}


def time_chain(params: SamplingParams, logits: np.ndarray, repeat: int) -> float:
    chain = SamplerChain(params, len(logits))
    chain.accept_many(np.random.default_rng(1).integers(0, len(logits), 64).tolist())
    chain.sample(logits)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        chain.sample(logits)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'setting':45s} " + " ".join(f"{name:>9s}" for name in VOCABS))
    logits = {name: (rng.standard_normal(n) * 3).astype(np.float32) for name, n in VOCABS.items()}
    for label, fields in SETTINGS.items():
        params = SamplingParams(seed=42, **fields)
        repeat = max(5, args.repeat // 20) if fields.get("top_k") == 0 else args.repeat
        cells = [time_chain(params, logits[name], repeat) for name in VOCABS]
        print(f"{label:45s} " + " ".join(f"{us:7.0f}us" for us in cells))


if __name__ == "__main__":
    main()

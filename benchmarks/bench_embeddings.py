"""Embedding throughput: sentences per second through a 110M-parameter BERT (bge-base's shape),
lamina beside llama.cpp's ``llama-embedding`` on the same file, in one run.

The model is ``lamina.testing.tiny_encoders``' ``bert-base`` (random weights, F16 matrices, the
bge WordPiece vocabulary, 768 wide, 12 layers, 110M parameters), written once to the cache.
1,000 sentences of 10 to 60 tokens ([CLS] and [SEP] included) are made from whole-word tokens of
the vocabulary with a fixed seed. Both sides pack as many sentences as fit in a batch of
``--batch`` tokens, each a sequence of its own, CLS pooling, and use ``--threads`` threads;
lamina's time is ``Llama.embed`` over the list (after a warm-up that compiles its kernels),
llama-embedding's its wall time for all the sentences less its wall time for one, so neither
counts loading the model; ``--rounds`` rounds of each, in turns, and the medians.

    python benchmarks/bench_embeddings.py \\
        --peer /work/peer/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-embedding

llama-embedding is a comparison tool only (see shared/docs/PEERS.md for building it; it needs
``-DLLAMA_BUILD_EXAMPLES=ON``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np

from lamina import Llama
from lamina.testing.models import cache_dir
from lamina.testing.tiny_encoders import write_encoder_model


def sentences(llm: Llama, count: int, seed: int = 0) -> list[str]:
    """``count`` texts of 10-60 tokens each, made of single-token lowercase words."""
    tok = llm.tokenizer_
    # a word-initial WordPiece token is stored with a leading "▁" (llama.cpp's GGUF convention)
    candidates = [(i, t[1:]) for i, t in ((i, tok.token_text(i)) for i in range(tok.n_vocab)) if t.startswith("▁")]
    words = [w for i, w in candidates if w.isascii() and w.isalpha() and w.islower() and len(w) > 2
             and tok.tokenize(w, add_special=False) == [i]]
    rng = np.random.default_rng(seed)
    out = []
    for n_tokens in rng.integers(10, 61, size=count):
        text = " ".join(rng.choice(words, size=int(n_tokens) - 2))
        assert len(llm.tokenize(text.encode())) == n_tokens, text
        out.append(text)
    return out


def lamina_runner(path: str, batch: int, threads: int):
    llm = Llama(path, embedding=True, pooling_type="cls", n_batch=batch, n_ctx=512, n_threads=threads, verbose=False)

    def run(texts: list[str]) -> float:
        start = time.perf_counter()
        llm.embed(texts)
        return time.perf_counter() - start

    return run


def run_llama_embedding(peer: str, path: str, texts: list[str], batch: int, threads: int) -> float:
    """llama-embedding's wall time for ``texts`` less its wall time for the first one alone (loading
    the model, and writing out; its own ``prompt eval time`` leaves batches out, so it is not used)."""
    def wall(subset: list[str]) -> float:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("\n".join(subset))
        try:
            start = time.perf_counter()
            out = subprocess.run([peer, "-m", path, "-f", f.name, "--pooling", "cls", "-b", str(batch), "-ub",
                                  str(batch), "-c", str(batch), "-t", str(threads), "--embd-output-format", "array"],
                                 capture_output=True, text=True, timeout=3600)
            elapsed = time.perf_counter() - start
        finally:
            os.unlink(f.name)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        return elapsed

    return wall(texts) - wall(texts[:1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer", help="llama-embedding binary to compare with")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each, taken in turns; the median is shown")
    args = ap.parse_args()
    path = cache_dir() / "bench" / "bert-base-random.f16.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_encoder_model("bert-base", path)
    probe = Llama(str(path), embedding=True, vocab_only=True, verbose=False)
    texts = sentences(probe, args.count)
    n_tokens = sum(len(probe.tokenize(t.encode())) for t in texts)
    print(f"{args.count} sentences, {n_tokens} tokens, bert-base shape (110M, F16), {args.threads} threads, "
          f"batches of {args.batch} tokens, CLS pooling")
    run = lamina_runner(str(path), args.batch, args.threads)
    run(texts[:64])  # compiles the kernels for these shapes
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(run(texts))
        if args.peer:
            theirs.append(run_llama_embedding(args.peer, str(path), texts, args.batch, args.threads))
    ours_s = statistics.median(ours)
    print(f"lamina          {ours_s:8.2f} s  {args.count / ours_s:8.1f} sentences/s  {n_tokens / ours_s:8.0f} tokens/s"
          f"   (rounds: {', '.join(f'{t:.1f}' for t in ours)} s)")
    if args.peer:
        theirs_s = statistics.median(theirs)
        print(f"llama-embedding {theirs_s:8.2f} s  {args.count / theirs_s:8.1f} sentences/s  "
              f"{n_tokens / theirs_s:8.0f} tokens/s   (rounds: {', '.join(f'{t:.1f}' for t in theirs)} s)")
        print(f"lamina / llama-embedding: {theirs_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()

"""The exact matrix kernels on the three real models' own layers: prompt batches and single tokens.

For each distinct layer of a model (its projections of layer 0, the last layer's feed-forward
down projection when its type differs, the output layer) this times ``Linear(x)`` — llama.cpp's
arithmetic, bit for bit — for a 512-token batch (prompt processing) and for one token
(generation), and, for comparison, the float path the kernels replaced: the activation rounded
as ggml rounds it, the weight dequantized to float32, NumPy's BLAS sgemm (weights dequantized
outside the timing: the float path's best case).

    python benchmarks/bench_exact_kernels.py [--models smollm2,qwen2,gemma3] [-t 2] [-r 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def best_of(fn, repetitions: int) -> float:
    fn()
    times = []
    for _ in range(repetitions):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def layers_of(model):
    """(label, layer) for every distinct kernel the model's forward pass calls."""
    from lamina.kernels.linear import Linear, LinearStack

    seen, found = set(), []

    def visit(label, layer):
        parts = layer.parts if isinstance(layer, LinearStack) else [layer]
        for i, part in enumerate(parts):
            key = (part.type, part.out_features, part.in_features)
            if isinstance(part, Linear) and key not in seen:
                seen.add(key)
                found.append((label if len(parts) == 1 else f"{label}[{i}]", part))

    for block in model.blocks:
        visit("attn qkv", block.attn.wqkv)
        visit("attn out", block.attn.wo)
        visit("ffn gate+up", block.ffn.gate_up)
        visit("ffn down", block.ffn.down)
    visit("output", model.output)
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="smollm2,qwen2,gemma3")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--repetitions", type=int, default=5)
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    args = ap.parse_args()

    import lamina.gguf as gguf
    from lamina.kernels import set_num_threads
    from lamina.kernels.activations import round_activations
    from lamina.models import load_model
    from lamina.testing.models import ensure_models

    set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print("| model | layer | type | rows × inputs | pp{0} exact ms | GMAC/s | pp{0} float BLAS ms | GMAC/s | tg exact µs | GB/s |"
          .format(args.n_prompt))
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, path in ensure_models(args.models.split(",")).items():
        model = load_model(gguf.read(str(path)))
        layers = layers_of(model)
        inputs = [rng.standard_normal((args.n_prompt, layer.in_features)).astype(np.float32) for _, layer in layers]
        # all exact timings first: OpenBLAS's threads keep spinning for a while after each call
        exact = []
        for (label, layer), x in zip(layers, inputs):
            # llama.cpp runs the output layer on the last token only
            pp = float("nan") if label == "output" else best_of(lambda: layer(x), args.repetitions)
            exact.append((pp, best_of(lambda: layer(x[:1].copy()), args.repetitions * 4)))
        for (label, layer), x, (pp_exact, tg) in zip(layers, inputs, exact):
            rows, n = layer.out_features, layer.in_features
            weight_bytes = sum(a.nbytes for a in vars(layer.packed).values() if isinstance(a, np.ndarray))
            macs = rows * n * args.n_prompt
            pp_blas = float("nan")
            if label != "output":
                dense = layer.dequantized()
                pp_blas = best_of(lambda: round_activations(x, layer.activation) @ dense.T, args.repetitions)
                del dense
            print(f"| {name} | {label} | {layer.type} | {rows} × {n} | {pp_exact * 1e3:.2f} | {macs / pp_exact / 1e9:.0f} "
                  f"| {pp_blas * 1e3:.2f} | {macs / pp_blas / 1e9:.0f} | {tg * 1e6:.0f} | {weight_bytes / tg / 1e9:.1f} |",
                  flush=True)
        del model
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

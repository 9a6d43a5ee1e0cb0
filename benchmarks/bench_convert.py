"""`lamina convert` + `lamina quantize` beside llama.cpp's `convert_hf_to_gguf.py` + `llama-quantize`.

    python benchmarks/bench_convert.py --peer-python VENV/bin/python --llama-cpp TREE [--size 1b|7b|tiny]

A synthetic checkpoint in a real model's shapes is written first (random BF16 weights, sharded
in two safetensors files with their index; SmolLM2's tokenizer from ../shared/refdata/convert):
``1b`` is TinyLlama-1.1B's blocks (2048 wide, 22 layers, 32/4 heads, 5632 feed-forward), ``7b``
Mistral-7B's (4096, 32 layers, 32/8 heads, 14336), ``tiny`` a 64-wide test model. Then, each as
a fresh process, wall time and peak resident memory (the child's ``ru_maxrss``):

1. checkpoint -> F16 GGUF: ``lamina convert`` and ``convert_hf_to_gguf.py`` (run by
   ``--peer-python``, an environment with the converter's requirements); the two files must be
   byte-identical;
2. F16 GGUF -> Q4_K_M: ``lamina quantize`` and ``llama-quantize`` (``TREE/build/bin``),
   2 threads each;
3. checkpoint -> Q8_0 GGUF directly, both converters.

The machine is shared: the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "refdata" / "convert"
SHAPES = {  # hidden, layers, heads, kv heads, feed-forward
    "tiny": (64, 2, 4, 2, 128),
    "1b": (2048, 22, 32, 4, 5632),
    "7b": (4096, 32, 32, 8, 14336),
}
VOCAB = 49152


def write_checkpoint(folder: Path, size: str) -> int:
    """A Llama-architecture checkpoint of random BF16 weights in two shards; returns its bytes."""
    hidden, layers, heads, kv_heads, ff = SHAPES[size]
    head_dim = hidden // heads
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": ff, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
              "num_hidden_layers": layers, "vocab_size": VOCAB, "max_position_embeddings": 4096,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "bos_token_id": 1,
              "eos_token_id": 2, "torch_dtype": "bfloat16"}
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copyfile(SHARED / "qwen3" / name, folder / name)
    shapes = [("model.embed_tokens.weight", (VOCAB, hidden)), ("lm_head.weight", (VOCAB, hidden)),
              ("model.norm.weight", (hidden,))]
    for b in range(layers):
        p = f"model.layers.{b}"
        shapes += [(f"{p}.input_layernorm.weight", (hidden,)), (f"{p}.post_attention_layernorm.weight", (hidden,)),
                   (f"{p}.self_attn.q_proj.weight", (heads * head_dim, hidden)),
                   (f"{p}.self_attn.k_proj.weight", (kv_heads * head_dim, hidden)),
                   (f"{p}.self_attn.v_proj.weight", (kv_heads * head_dim, hidden)),
                   (f"{p}.self_attn.o_proj.weight", (hidden, heads * head_dim)),
                   (f"{p}.mlp.gate_proj.weight", (ff, hidden)), (f"{p}.mlp.up_proj.weight", (ff, hidden)),
                   (f"{p}.mlp.down_proj.weight", (hidden, ff))]
    half = len(shapes) // 2
    rng = np.random.default_rng(0)
    weight_map, total = {}, 0
    for i, part in enumerate((shapes[:half], shapes[half:])):
        name = f"model-{i + 1:05d}-of-00002.safetensors"
        total += _write_part(folder / name, part, rng)
        weight_map.update({n: name for n, _ in part})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return total


def _write_part(path: Path, shapes, rng) -> int:
    header, offset = {}, 0
    for name, shape in sorted(shapes):
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for name, shape in sorted(shapes):
            values = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
            if name.endswith("norm.weight"):
                values += np.float32(1.0)
            f.write((values.view(np.uint32) >> 16).astype("<u2").tobytes())
    return offset


def run_child(argv: list[str]) -> tuple[float, float]:
    """Run a command; (wall seconds, peak RSS in MB) of that child alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"{' '.join(argv)} failed:\n{err[-3000:]}")
    return wall, usage.ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", required=True, help="a Python with convert_hf_to_gguf.py's requirements")
    parser.add_argument("--llama-cpp", required=True, type=Path, help="llama.cpp tree with build/bin/llama-quantize")
    parser.add_argument("--size", choices=sorted(SHAPES), default="1b")
    parser.add_argument("--workdir", type=Path, default=None, help="where the files go (default: a temporary folder)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-convert-", dir=args.workdir))
    try:
        ckpt = work / "hf-bench"
        t0 = time.perf_counter()
        total = write_checkpoint(ckpt, args.size)
        print(f"checkpoint: {args.size}, {total / 1e9:.2f} GB BF16 in 2 shards, written in "
              f"{time.perf_counter() - t0:.0f} s")
        lamina = [sys.executable, "-m", "lamina.cli"]
        converter = [args.peer_python, str(args.llama_cpp / "convert_hf_to_gguf.py")]
        quantizer = str(args.llama_cpp / "build" / "bin" / "llama-quantize")
        # warm lamina's kernel cache once, as its set-up does, so the runs time converting, not compiling
        run_child(lamina + ["quantize", str(SHARED.parent / "tiny" / "tiny-qwen3.f16.gguf"),
                            str(work / "warm.gguf"), "Q4_K_M", "2"])
        rows = []
        steps = [
            ("HF -> F16", lamina + ["convert", str(ckpt), "--outtype", "f16", "--outfile", str(work / "l-f16.gguf")],
             converter + [str(ckpt), "--outtype", "f16", "--outfile", str(work / "p-f16.gguf")]),
            ("F16 -> Q4_K_M", lamina + ["quantize", str(work / "l-f16.gguf"), str(work / "l-q4.gguf"), "Q4_K_M", "2"],
             [quantizer, str(work / "p-f16.gguf"), str(work / "p-q4.gguf"), "Q4_K_M", "2"]),
            ("HF -> Q8_0", lamina + ["convert", str(ckpt), "--outtype", "q8_0", "--outfile", str(work / "l-q8.gguf")],
             converter + [str(ckpt), "--outtype", "q8_0", "--outfile", str(work / "p-q8.gguf")]),
        ]
        for label, ours, theirs in steps:
            ours_t = run_child(ours)
            theirs_t = run_child(theirs)
            rows.append((label, ours_t, theirs_t))
        from lamina.hub import file_sha256

        same = {name: file_sha256(work / f"l-{name}.gguf") == file_sha256(work / f"p-{name}.gguf")
                for name in ("f16", "q8")}
        print(f"\nbyte-identical with llama.cpp: F16 {same['f16']}, Q8_0 {same['q8']}\n")
        print("| step | lamina s | llama.cpp s | speed ratio | lamina peak MB | llama.cpp peak MB |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for label, (lw, lm), (pw, pm) in rows:
            print(f"| {label} | {lw:.1f} | {pw:.1f} | {pw / lw:.2f}x | {lm:.0f} | {pm:.0f} |")
        lw = rows[0][1][0] + rows[1][1][0]
        pw = rows[0][2][0] + rows[1][2][0]
        print(f"| HF -> Q4_K_M (both steps) | {lw:.1f} | {pw:.1f} | {pw / lw:.2f}x | | |")
        print(f"\nload average: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The eight architectures of ../shared/refdata/tiny beyond the three real models: each tiny
random-weight float16 model must give llama.cpp's top-64 logits for every reference prompt.

The reference README's calibration: float32 Hugging Face transformers lands within 0.001-0.003
of llama.cpp on these files. lamina repeats llama.cpp's arithmetic (float16 weights and KV cache,
the router's softmax, experts added slot by slot), so its logits equal the reference's, which
are printed with six decimals: 1e-5 allows only that printing's rounding (a missing norm, scale,
bias or the wrong rotary layout moves these logits by tenths).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lamina.engine.batch import Batch
from lamina.engine.context import Context
from lamina.gguf import read
from lamina.models import load_model

TINY = ["qwen3", "qwen3moe", "mixtral", "llama3scaled", "olmo2", "granite", "starcoder2", "stablelm"]
TOLERANCE = 1e-5


def _references(refdata, arch):
    lines = (refdata / "tiny" / f"{arch}.greedy.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _top64_difference(model, ref) -> float:
    ctx = Context(model, n_ctx=512, n_batch=512, n_ubatch=512)
    logits = ctx.decode(Batch.for_sequence(ref["tokens"], 0))[-1]
    ids = np.array([t for t, _ in ref["top64"]])
    expected = np.array([v for _, v in ref["top64"]], dtype=np.float32)
    return float(np.abs(logits[ids] - expected).max())


@pytest.mark.parametrize("arch", TINY)
def test_tiny_model_logits_match_llamacpp(refdata, arch):
    model = load_model(read(refdata / "tiny" / f"tiny-{arch}.f16.gguf"))
    diffs = [_top64_difference(model, ref) for ref in _references(refdata, arch)]
    assert len(diffs) >= 5
    assert max(diffs) < TOLERANCE, diffs


def test_mixture_of_experts_routes_each_token_to_its_most_probable_experts(refdata):
    """Router weights renormalised over the chosen experts (llama.cpp's norm_w), most probable first."""
    model = load_model(read(refdata / "tiny" / "tiny-qwen3moe.f16.gguf"))
    moe = model.blocks[0].ffn
    x = np.random.default_rng(3).standard_normal((5, model.n_embd)).astype(np.float32)
    chosen, weights = moe.route(x)
    logits = x @ moe.router.dequantized().T
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    expected = np.argsort(-probs, axis=1)[:, :2]
    assert np.array_equal(chosen, expected)
    kept = np.take_along_axis(probs, expected, axis=1)
    np.testing.assert_allclose(weights, kept / kept.sum(axis=1, keepdims=True), rtol=1e-3)
    # the output is the weighted sum of the chosen experts' feed-forwards
    out = moe(x)
    for t in range(len(x)):
        total = np.zeros(model.n_embd, np.float32)
        for e, w in zip(chosen[t], weights[t]):
            gate_up, down = moe.experts[e]
            g, u = gate_up.split(gate_up(x[t:t + 1]))
            total += w * down(g / (1 + np.exp(-g)) * u)[0]
        np.testing.assert_allclose(out[t], total, atol=2e-3)


def test_quantized_experts_are_sliced_block_for_block(refdata, tmp_path):
    """Each expert of a quantized 3-D expert tensor reads its own rows of blocks."""
    from lamina.cli import quantize as quantize_cli
    from lamina.quants import dequantize

    out = tmp_path / "moe-q8_0.gguf"
    assert quantize_cli.main([str(refdata / "tiny" / "tiny-qwen3moe.f16.gguf"), str(out), "Q8_0"]) == 0
    f = read(out)
    model = load_model(f)
    t = f.tensors["blk.1.ffn_down_exps.weight"]
    n_in, n_out, n_expert = t.shape
    assert t.type == "Q8_0"
    whole = dequantize(t.data, t.type, (n_expert * n_out, n_in)).reshape(n_expert, n_out, n_in)
    for e, (_, down) in enumerate(model.blocks[1].ffn.experts):
        np.testing.assert_array_equal(down.dequantized(), whole[e])

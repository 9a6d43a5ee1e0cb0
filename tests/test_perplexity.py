"""Perplexity as llama-perplexity computes it, against shared/refdata/llamacpp/perplexity.json."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import MODELS
from lamina.llama import Llama
from lamina.perplexity import PerplexityError, chunk_log_probs, perplexity
from lamina.testing.models import MODEL_NAMES


def _llama(path, n_ctx=512, n_seq=4):
    return Llama(str(path), n_ctx=n_ctx, n_batch=n_seq * n_ctx, n_seq_max=n_seq, verbose=False)


@pytest.mark.parametrize("name", MODELS)
def test_gpl3_perplexity_within_one_percent_of_llamacpp(name, model_paths, refdata):
    expected, _ = json.loads((refdata / "llamacpp" / "perplexity.json").read_text())["ppl"][MODEL_NAMES[name]]
    llm = _llama(model_paths[name])
    tokens = llm.tokenize((refdata / "text" / "GPL-3.txt").read_bytes(), add_bos=True, special=False)
    bos = llm.token_bos() if llm.tokenizer_.add_bos else None
    result = perplexity(llm._ctx, tokens, 512, bos)
    assert result.n_chunks == len(tokens) // 512
    assert result.n_scored == result.n_chunks * 255
    assert abs(result.ppl / expected - 1) < 0.01, f"{name}: PPL {result.ppl:.4f}, llama.cpp {expected:.4f}"


def test_log_probs_are_a_log_softmax():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    lp = chunk_log_probs(logits, np.array([2, 1]))
    assert lp[0] == pytest.approx(3 - math.log(math.exp(1) + math.exp(2) + math.exp(3)))
    assert lp[1] == pytest.approx(-math.log(3))


def test_too_short_text_is_a_clear_error(model_paths):
    llm = _llama(model_paths["smollm2"], n_ctx=64, n_seq=1)
    with pytest.raises(PerplexityError, match="at least 128 tokens"):
        perplexity(llm._ctx, list(range(100)), 64, None)


def test_command_prints_llamacpp_style_output(model_paths, refdata):
    done = subprocess.run([sys.executable, "-m", "lamina.cli", "perplexity", "-m", str(model_paths["smollm2"]),
                           "-f", str(refdata / "text" / "GPL-3.txt"), "-c", "128", "--chunks", "2"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "[1]" in done.stdout and "[2]" in done.stdout
    final = [line for line in done.stdout.splitlines() if line.startswith("Final estimate: PPL = ")]
    assert len(final) == 1 and " +/- " in final[0]

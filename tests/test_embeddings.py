"""Embeddings from decoder models, against the reference llama-server's own vectors.

tests/data/llamacpp_embeddings.json holds what llama-server answered on /embedding (raw, not
normalized) for three texts with smollm2 under pooling mean, last and cls (made by
tests/data/make_llamacpp_embeddings.py). All three are llama.cpp's bit for bit (the mean is ggml's
matrix product with the mean matrix, summed in its order).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lamina import Llama

REFERENCE = json.loads((Path(__file__).parent / "data" / "llamacpp_embeddings.json").read_text())


@pytest.fixture(scope="module")
def embedders(model_paths):
    made = {}
    yield lambda pooling: made.setdefault(pooling, Llama(str(model_paths["smollm2"]), embedding=True,
                                                         pooling_type=pooling, n_ctx=512, verbose=False))
    for llm in made.values():
        llm.close()


@pytest.mark.parametrize("pooling", ["mean", "last", "cls"])
def test_pooled_embeddings_match_llama_server(embedders, pooling):
    ours = np.array(embedders(pooling).embed(REFERENCE["texts"]), dtype=np.float32)
    ref = np.array(REFERENCE["poolings"][pooling], dtype=np.float32)
    assert np.array_equal(ours, ref)


def test_embed_and_create_embedding_shapes(embedders):
    llm = embedders("mean")
    one = llm.embed("Hello world")
    assert isinstance(one, list) and len(one) == llm.n_embd()
    unit = llm.embed("Hello world", normalize=True)
    assert abs(np.linalg.norm(unit) - 1) < 1e-6
    assert np.allclose(np.array(unit), np.array(one) / np.linalg.norm(one), atol=1e-6)
    r = llm.create_embedding(["Hello world", "Embeddings map text to vectors of numbers."])
    assert r["object"] == "list" and [d["index"] for d in r["data"]] == [0, 1]
    assert r["data"][0]["object"] == "embedding" and r["data"][0]["embedding"] == one
    assert r["usage"]["prompt_tokens"] == len(llm.tokenize(b"Hello world")) + \
        len(llm.tokenize(b"Embeddings map text to vectors of numbers."))
    with pytest.raises(ValueError, match="n_batch"):
        llm.embed("word " * 600, truncate=False)


def test_pooling_none_and_refusals(model_paths):
    llm = Llama(str(model_paths["smollm2"]), embedding=True, n_ctx=128, verbose=False)
    assert llm.pooling_type() == 0  # the file names no pooling: llama.cpp's default for it, none
    rows = llm.embed("Hello world")
    assert len(rows) == len(llm.tokenize(b"Hello world")) and len(rows[0]) == llm.n_embd()
    per_token = llm.create_embedding("Hello world")["data"][0]["embedding"]  # as llama-cpp-python: the rows
    assert np.array_equal(np.array(per_token, np.float32), np.array(rows, np.float32))
    with pytest.raises(ValueError, match="not one of"):
        Llama(str(model_paths["smollm2"]), embedding=True, pooling_type="max", verbose=False, vocab_only=True)
    with pytest.raises(RuntimeError, match="embedding=True"):
        Llama(str(model_paths["smollm2"]), n_ctx=64, verbose=False).embed("x")


def test_cli_prints_as_llama_embedding(model_paths):
    import subprocess
    import sys

    def run(*args):
        out = subprocess.run([sys.executable, "-m", "lamina.cli", "embedding", "-m", str(model_paths["smollm2"]), *args],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout

    texts = REFERENCE["texts"]
    array = json.loads(run("-p", "\n".join(texts), "--pooling", "last", "--embd-normalize", "-1",
                           "--embd-output-format", "array"))
    assert np.array_equal(np.round(np.array(REFERENCE["poolings"]["last"], np.float64), 7), np.array(array))
    listing = json.loads(run("-p", texts[0], "--pooling", "cls", "--embd-output-format", "json"))
    v = np.array(listing["data"][0]["embedding"])
    assert listing["object"] == "list" and abs(np.linalg.norm(v) - 1) < 1e-5  # --embd-normalize 2 by default
    text = run("-p", "\n".join(texts[:2]), "--pooling", "mean")
    lines = text.splitlines()
    assert lines[1].startswith("embedding 0: ") and len(lines[1].split()) == 2 + 16
    assert "cosine similarity matrix:" in text and lines[-1].strip().startswith("0.")


def test_server_embeddings(model_paths):
    import httpx
    import openai

    from lamina.testing.server_process import ServerProcess

    srv = ServerProcess(["-m", str(model_paths["smollm2"]), "--embedding", "--pooling", "mean", "-c", "512",
                         "-np", "1"])
    try:
        srv.wait_ready()
        r = httpx.post(srv.url + "/embedding", json={"content": REFERENCE["texts"], "embd_normalize": -1})
        assert r.status_code == 200, r.text
        ours = np.array([item["embedding"][0] for item in r.json()], np.float32)
        assert np.array_equal(ours, np.array(REFERENCE["poolings"]["mean"], np.float32))
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none")
        reply = client.embeddings.create(model="x", input=REFERENCE["texts"][:2])
        assert [d.index for d in reply.data] == [0, 1] and reply.usage.prompt_tokens > 0
        assert abs(np.linalg.norm(reply.data[0].embedding) - 1) < 1e-5  # euclidean-normalized, as llama-server
        refused = httpx.post(srv.url + "/completion", json={"prompt": "x", "n_predict": 2})
        assert refused.status_code == 501 and "--embedding" in refused.json()["error"]["message"]
        bad = httpx.post(srv.url + "/v1/embeddings", json={"input": [1, 2]})
        assert bad.status_code == 400
    finally:
        srv.stop()

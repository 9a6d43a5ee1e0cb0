"""BERT-family embeddings and reranking, against the reference llama-server's own answers.

``tests/data/llamacpp_encoder_embeddings.json.gz`` (made by
``tests/data/make_llamacpp_encoder_embeddings.py``) holds, for the random-weight models of
``lamina.testing.tiny_encoders`` written with llama.cpp's ``gguf`` package, the sha256 of every
tensor's bytes, the raw vectors llama-server's ``/embedding`` answered under pooling mean, cls
and none, its ``/rerank`` answer for the reranker, and what ``llama-embedding`` printed (7
decimals) for 40 texts embedded as one batch. lamina writes the same models with its own writer
(the hashes prove they are the same) and must give the same vectors: bit for bit one text at a
time, to the printed digits for the batch.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from lamina import Llama
from lamina.embeddings import rerank_tokens
from lamina.testing.tiny_encoders import tensor_digests, write_encoder_model

REFERENCE = json.loads(gzip.decompress((Path(__file__).parent / "data" /
                                        "llamacpp_encoder_embeddings.json.gz").read_bytes()))
TEXTS = REFERENCE["texts"]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoders")
    return {name: write_encoder_model(name, folder / f"{name}.gguf") for name in REFERENCE["models"]}


@pytest.fixture(scope="module")
def embedders(model_files):
    made = {}
    yield lambda name, pooling=-1: made.setdefault((name, pooling), Llama(
        model_files[name], embedding=True, pooling_type=pooling, verbose=False))
    for llm in made.values():
        llm.close()


@pytest.mark.parametrize("name", list(REFERENCE["models"]))
def test_lamina_writes_the_reference_models(name):
    assert tensor_digests(name) == REFERENCE["models"][name]["tensor_sha256"]


@pytest.mark.parametrize("name", ["bert", "nomic-bert", "jina-bert-v2"])
@pytest.mark.parametrize("pooling", ["mean", "cls", "none"])
def test_embeddings_are_llama_servers_bit_for_bit(embedders, name, pooling):
    llm = embedders(name, pooling)
    expected = REFERENCE["models"][name]["poolings"][pooling]["one_by_one"]
    for text, want in zip(TEXTS, expected):
        got = np.array(llm.embed(text), np.float32)
        want = np.array(want, np.float32).reshape(got.shape)
        assert np.array_equal(got, want), (name, pooling, text, float(np.abs(got - want).max()))


@pytest.mark.parametrize("name", ["bert", "nomic-bert", "jina-bert-v2"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_a_batch_of_sequences_is_llama_embeddings(embedders, name, pooling):
    """40 texts in one batch (several hundred tokens: the tiled attention, and for CLS the last layer
    run for the first tokens only) give what llama-embedding's batch gives, to its 7 printed decimals."""
    got = np.array(embedders(name, pooling).embed(REFERENCE["batch_texts"]), np.float32)
    want = np.array(REFERENCE["models"][name]["batched"][pooling], np.float64)
    assert np.abs(got.astype(np.float64) - want).max() <= 5.1e-8


@pytest.mark.parametrize("name", ["bert", "nomic-bert", "jina-bert-v2"])
def test_several_texts_in_one_batch(embedders, name):
    """embed(list) runs the texts as sequences of one batch: each sees only its own tokens."""
    for pooling in ("cls", "mean"):
        together = np.array(embedders(name, pooling).embed(TEXTS), np.float32)
        want = np.array([v[0] for v in REFERENCE["models"][name]["poolings"][pooling]["one_by_one"]], np.float32)
        if pooling == "cls":  # the first token's state does not depend on how the batch is summed
            assert np.array_equal(together, want)
        else:  # the mean matrix spans the batch: ggml sums it over all its tokens, zeros included
            cos = (together * want).sum(1) / np.linalg.norm(together, axis=1) / np.linalg.norm(want, axis=1)
            assert cos.min() >= 0.9999 and np.abs(together - want).max() <= 1e-6


def test_the_file_default_pooling_and_the_openai_shape(embedders):
    llm = embedders("bert")  # the file says mean
    assert llm.pooling_type() == 1
    r = llm.create_embedding(TEXTS[:2])
    assert [d["index"] for d in r["data"]] == [0, 1]
    assert r["usage"]["prompt_tokens"] == sum(len(llm.tokenize(t.encode())) for t in TEXTS[:2])
    unit = np.array(llm.embed(TEXTS[0], normalize=True))
    assert abs(np.linalg.norm(unit) - 1) < 1e-6


def test_reranker_scores_are_llama_servers(embedders):
    llm = embedders("bert-rerank")
    assert llm.pooling_type() == 4  # rank, from the file
    want = {r["index"]: r["relevance_score"] for r in REFERENCE["models"]["bert-rerank"]["rerank"]["results"]}
    pairs = [rerank_tokens(llm.tokenizer_, REFERENCE["query"], d) for d in REFERENCE["documents"]]
    assert sum(map(len, pairs)) == REFERENCE["models"]["bert-rerank"]["rerank"]["usage"]["prompt_tokens"]
    for i, tokens in enumerate(pairs):
        assert tokens[0] == llm.tokenizer_.bos_id and llm.tokenizer_.sep_id in tokens
        assert np.float32(llm.embed_tokens([tokens])[0][0]) == np.float32(want[i])


def test_refusals(model_files):
    with pytest.raises(ValueError, match="classification head"):
        Llama(model_files["bert"], embedding=True, pooling_type="rank", verbose=False)
    llm = Llama(model_files["bert"], verbose=False)
    with pytest.raises(ValueError, match="embedding model"):
        llm.create_completion("hello", max_tokens=2)
    emb = Llama(model_files["bert"], embedding=True, n_batch=1024, verbose=False)
    with pytest.raises(ValueError, match="512 positions"):  # BERT's learned positions end there
        emb.embed("word " * 600, truncate=False)


def test_server_embeddings_and_rerank(model_files):
    import httpx
    import openai

    from lamina.testing.server_process import ServerProcess

    srv = ServerProcess(["-m", model_files["bert"], "--embedding", "-c", "512", "-np", "1"])
    try:
        srv.wait_ready()
        r = httpx.post(srv.url + "/embedding", json={"content": TEXTS, "embd_normalize": -1})
        assert r.status_code == 200, r.text
        want = np.array([v[0] for v in REFERENCE["models"]["bert"]["poolings"]["mean"]["together"]], np.float32)
        assert np.array_equal(np.array([item["embedding"][0] for item in r.json()], np.float32), want)
        reply = openai.OpenAI(base_url=srv.url + "/v1", api_key="none").embeddings.create(model="x", input=TEXTS[:2])
        assert len(reply.data) == 2 and abs(np.linalg.norm(reply.data[0].embedding) - 1) < 1e-5
        refused = httpx.post(srv.url + "/rerank", json={"query": "q", "documents": ["d"]})
        assert refused.status_code == 501 and "--reranking" in refused.json()["error"]["message"]
    finally:
        srv.stop()

    srv = ServerProcess(["-m", model_files["bert-rerank"], "--reranking", "-c", "512", "-np", "1"])
    try:
        srv.wait_ready()
        body = {"query": REFERENCE["query"], "documents": REFERENCE["documents"]}
        r = httpx.post(srv.url + "/v1/rerank", json=body)
        assert r.status_code == 200, r.text
        ref = REFERENCE["models"]["bert-rerank"]["rerank"]
        got = r.json()
        assert got["usage"] == ref["usage"] and got["object"] == "list"
        assert [x["index"] for x in got["results"]] == [x["index"] for x in ref["results"]]
        assert [np.float32(x["relevance_score"]) for x in got["results"]] == \
            [np.float32(x["relevance_score"]) for x in ref["results"]]
        top = httpx.post(srv.url + "/rerank", json={**body, "top_n": 2}).json()["results"]
        assert [x["index"] for x in top] == [x["index"] for x in ref["results"][:2]]
        tei = httpx.post(srv.url + "/rerank", json={"query": "q", "texts": ["a", "b"], "return_text": True}).json()
        assert isinstance(tei, list) and {x["text"] for x in tei} == {"a", "b"} and "score" in tei[0]
        for bad in ({"documents": ["x"]}, {"query": 1, "documents": ["x"]}, {"query": "q", "documents": []},
                    {"query": "q", "documents": [1]}):
            r = httpx.post(srv.url + "/rerank", json=bad)
            assert r.status_code == 400, bad
    finally:
        srv.stop()

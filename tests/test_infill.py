"""Fill-in-the-middle: ``/infill`` against llama-server's own answers, and ``Llama(..., suffix=)``.

tests/data/llamacpp_infill.json holds what the reference llama-server answered (greedy) for three
requests on qwen2.5-coder (made by tests/data/make_llamacpp_infill.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from lamina.fim import fim_prompt
from lamina.testing.server_process import ServerProcess

REFERENCE = json.loads((Path(__file__).parent / "data" / "llamacpp_infill.json").read_text())


@pytest.fixture(scope="module")
def qwen_server(model_paths):
    srv = ServerProcess(["-m", str(model_paths[REFERENCE["model"]]), *REFERENCE["server_flags"]])
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


@pytest.mark.parametrize("case", REFERENCE["cases"], ids=[str(i) for i in range(len(REFERENCE["cases"]))])
def test_infill_matches_llama_server(qwen_server, case):
    r = httpx.post(qwen_server.url + "/infill", json=case["body"], timeout=300)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["tokens_evaluated"] == case["tokens_evaluated"]  # the same prompt, token for token in length
    assert answer["tokens"] == case["tokens"] and answer["content"] == case["content"]


def test_infill_refusals(qwen_server, model_paths):
    r = httpx.post(qwen_server.url + "/infill", json={"input_prefix": "x"})
    assert r.status_code == 400 and "'input_suffix' is required" in r.json()["error"]["message"]
    r = httpx.post(qwen_server.url + "/infill", json={"input_prefix": "x", "input_suffix": "y",
                                                      "input_extra": [{"filename": 3, "text": ""}]})
    assert r.status_code == 400 and "filename" in r.json()["error"]["message"]
    srv = ServerProcess(["-m", str(model_paths["smollm2"]), "-c", "256", "-np", "1"])
    try:
        srv.wait_ready()
        r = httpx.post(srv.url + "/infill", json={"input_prefix": "x", "input_suffix": "y"})
        assert r.status_code == 501 and "no FIM" in r.json()["error"]["message"]
    finally:
        srv.stop()


def test_llama_suffix_fills_in_the_middle(llms):
    llm = llms("qwen2")
    tok = llm.tokenizer_
    prompt = fim_prompt(tok, "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n")
    assert prompt[0] == tok.vocab.ids["fim_pre"] and prompt[-1] == tok.vocab.ids["fim_mid"]
    out = llm.create_completion("def add(a, b):\n    return ", suffix="\n\nprint(add(1, 2))\n", max_tokens=8,
                                temperature=0)
    text = out["choices"][0]["text"]
    assert text.startswith("a + b") and "print(add(1, 2))" not in text  # the suffix is not appended
    plain = llms("smollm2")  # no FIM tokens: the suffix is appended, as llama-cpp-python does
    assert plain.create_completion("Hi", suffix=" END", max_tokens=2, temperature=0)["choices"][0]["text"].endswith(
        " END")

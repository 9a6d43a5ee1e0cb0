"""``lamina serve`` as its clients see it: a real server process, the official ``openai`` client, httpx.

The greedy texts are checked against the ``lamina`` command's output for the same prompt
(``lamina -m MODEL -p PROMPT -n N --temp 0``), itself checked against llama.cpp's
references in test_engine_agreement; and eight requests decoded together against the
same eight sent one at a time.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import subprocess
import sys
import time

import httpx
import jsonschema
import openai
import pytest

from lamina.testing.server_process import ServerProcess

PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "The three laws of robotics are",
           "List of prime numbers: 2, 3, 5,", "In 1492, Columbus", "Water boils at", "My favourite colour is"]
N_PREDICT = 24


@pytest.fixture(scope="module")
def server(model_paths):
    srv = ServerProcess(["-m", str(model_paths["smollm2"]), "-c", "4096", "-np", "8", "--metrics",
                         "--max-body", str(1 << 20), "--header-timeout", "2", "-a", "smollm2"])
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused")


def cli_text(model, prompt: str, n: int = N_PREDICT) -> str:
    """What ``lamina -m MODEL -p PROMPT -n N --temp 0`` prints after the prompt."""
    out = subprocess.run([sys.executable, "-m", "lamina.cli", "-m", str(model), "-p", prompt, "-n", str(n),
                          "--temp", "0", "--no-display-prompt", "--no-escape"], capture_output=True, check=True)
    text = out.stdout.decode("utf-8")
    assert text.endswith("\n")  # the command ends its output with a newline of its own
    return text[:-1]


@pytest.fixture(scope="module")
def cli_texts(model_paths):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        texts = list(pool.map(lambda p: cli_text(model_paths["smollm2"], p), PROMPTS[:4]))
    return dict(zip(PROMPTS[:4], texts))


def complete(server, prompt, **fields) -> dict:
    r = httpx.post(server.url + "/completion", json={"prompt": prompt, "n_predict": N_PREDICT, "temperature": 0,
                                                     "cache_prompt": False, **fields}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


# -- the routes' greedy text is the CLI's ----------------------------------------------------------------------------
def test_native_completion_equals_the_cli(server, cli_texts):
    for prompt, expected in cli_texts.items():
        answer = complete(server, prompt)
        assert answer["content"] == expected, prompt
        assert answer["stop_type"] == "limit" and answer["tokens_predicted"] == N_PREDICT
        assert answer["truncated"] is False and answer["stop"] is True
        assert set(answer["timings"]) >= {"prompt_n", "prompt_ms", "predicted_n", "predicted_ms",
                                          "predicted_per_second", "cache_n"}


def test_openai_completions_equal_the_cli_streamed_or_not(client, cli_texts):
    for prompt, expected in cli_texts.items():
        whole = client.completions.create(model="smollm2", prompt=prompt, max_tokens=N_PREDICT, temperature=0)
        assert whole.choices[0].text == expected
        assert whole.choices[0].finish_reason == "length"
        assert whole.usage.completion_tokens == N_PREDICT
        pieces = client.completions.create(model="smollm2", prompt=prompt, max_tokens=N_PREDICT, temperature=0,
                                           stream=True)
        assert "".join(c.choices[0].text for c in pieces) == expected


def test_chat_completion_equals_the_cli_on_the_rendered_prompt(server, client, model_paths):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    rendered = httpx.post(server.url + "/apply-template", json={"messages": messages}).json()["prompt"]
    assert "What is the capital of France?" in rendered and rendered.endswith("assistant\n")
    expected = cli_text(model_paths["smollm2"], rendered, 16)
    reply = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=16, temperature=0)
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].message.role == "assistant"
    chunks = list(client.chat.completions.create(model="smollm2", messages=messages, max_tokens=16, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    assert chunks[-1].usage.prompt_tokens == reply.usage.prompt_tokens


def test_eight_concurrent_streams_each_equal_their_solo_text(server):
    """Eight requests decoded in the same steps get, token for token, what each gets alone."""
    solo = {}
    for p in PROMPTS:
        answer = complete(server, p, return_tokens=True)
        # as llama-server, a whole answer's tokens end with the end-of-generation token; a stream's do not
        solo[p] = answer["tokens"][:-1] if answer["stop_type"] == "eos" else answer["tokens"]

    def streamed(prompt):
        tokens = []
        with httpx.stream("POST", server.url + "/completion", timeout=300,
                          json={"prompt": prompt, "n_predict": N_PREDICT, "temperature": 0, "stream": True,
                                "cache_prompt": False, "return_tokens": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    tokens += json.loads(line[6:])["tokens"]
        return tokens

    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = dict(zip(PROMPTS, pool.map(streamed, PROMPTS)))
    for p in PROMPTS:
        assert together[p] == solo[p], p
    metrics = httpx.get(server.url + "/metrics").text
    busy = float(next(line.split()[1] for line in metrics.splitlines()
                      if line.startswith("llamacpp:n_busy_slots_per_decode")))
    assert busy > 1.0  # the streams really did share decode steps


def test_a_cached_prompt_is_reused_and_answers_the_same(server, cli_texts):
    prompt, expected = next(iter(cli_texts.items()))
    first = complete(server, prompt, cache_prompt=True, id_slot=3)
    again = complete(server, prompt, cache_prompt=True, id_slot=3)
    assert again["timings"]["cache_n"] == again["tokens_evaluated"]  # nothing evaluated a second time
    assert first["content"] == again["content"] == expected


def test_conversations_sharing_a_system_prompt_keep_their_own_slots(server):
    """The second conversation copies the shared prefix into a slot of its own (it does not take over the
    first one's), so the first conversation's next turn still finds its whole history cached."""
    system = "You are a careful assistant. Answer in one short sentence, and never use lists. " * 3
    a1 = complete(server, system + "Question: what is rain?", cache_prompt=True, n_predict=6)
    b1 = complete(server, system + "Question: what is snow?", cache_prompt=True, n_predict=6)
    assert b1["id_slot"] != a1["id_slot"]
    assert 0.5 * b1["tokens_evaluated"] < b1["timings"]["cache_n"] < b1["tokens_evaluated"]  # the shared prefix
    a2 = complete(server, system + "Question: what is rain?" + a1["content"] + " Question: and hail?",
                  cache_prompt=True, n_predict=6)
    assert a2["id_slot"] == a1["id_slot"]
    assert a2["timings"]["cache_n"] >= a1["tokens_evaluated"]  # its first turn, answer and all, was still there


# -- fields -------------------------------------------------------------------------------------------------------------
def test_n_choices_logprobs_and_stop(client, server):
    r = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Count to five"}],
                                       max_tokens=8, temperature=0.7, seed=5, n=2, logprobs=True, top_logprobs=3)
    assert [c.index for c in r.choices] == [0, 1]
    for choice in r.choices:
        content = choice.logprobs.content
        assert len(content) >= 1 and all(len(t.top_logprobs) == 3 for t in content)
        assert all(t.logprob <= 0 for t in content)
    answer = complete(server, "1, 2, 3, 4,", stop=[" 7"], n_predict=32)
    assert answer["stop_type"] == "word" and answer["stopping_word"] == " 7" and " 7" not in answer["content"]
    probs = complete(server, "1, 2, 3,", n_predict=2, n_probs=4)["completion_probabilities"]
    assert len(probs) == 2 and len(probs[0]["top_logprobs"]) == 4
    assert probs[0]["id"] == probs[0]["top_logprobs"][0]["id"]  # greedy: the sampled token is the most likely


def test_assistant_prefill_continues_the_last_message(server):
    messages = [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "A fruit is the"}]
    prompt = httpx.post(server.url + "/apply-template", json={"messages": messages}).json()["prompt"]
    assert prompt.endswith("A fruit is the")
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": messages, "max_tokens": 4,
                                                               "temperature": 0}).json()
    assert r["choices"][0]["message"]["content"]


def test_tokenize_detokenize_models_props_slots(server):
    toks = httpx.post(server.url + "/tokenize", json={"content": "Hello world", "with_pieces": True}).json()["tokens"]
    assert "".join(t["piece"] for t in toks) == "Hello world"
    ids = [t["id"] for t in toks]
    assert httpx.post(server.url + "/detokenize", json={"tokens": ids}).json()["content"] == "Hello world"
    models = httpx.get(server.url + "/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "smollm2"
    props = httpx.get(server.url + "/props").json()
    assert props["total_slots"] == 8 and props["default_generation_settings"]["n_ctx"] == 512
    slots = httpx.get(server.url + "/slots").json()
    assert len(slots) == 8 and all("prompt" not in s for s in slots)  # no admin key: no text shown


def test_refused_rather_than_ignored(server):
    for body, words in (
            ({"prompt": "x", "grammar": "root ::= \"a\"", "grammar_lazy": True}, "lazy"),
            ({"prompt": "x", "grammar": "root ::= (\"a\""}, "line 1, column 10"),
            ({"prompt": "x", "json_schema": {"type": "array", "uniqueItems": True}}, "uniqueItems"),
            ({"prompt": "x", "grammar": "root ::= \"a\"", "json_schema": {}}, "only one of"),
            ({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"schema": {"not": {}}}}},
             "'not'"),
            ({"prompt": "x", "tools": [{"type": "function", "function": {"name": "f"}}]}, "chat/completions")):
        path = "/v1/chat/completions" if "messages" in body else "/completion"
        r = httpx.post(server.url + path, json=body)
        assert r.status_code == 400, body
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert words in r.json()["error"]["message"], (body, r.json())
    r = httpx.post(server.url + "/v1/embeddings", json={"input": "x"})
    assert r.status_code == 501 and r.json()["error"]["type"] == "not_supported_error"


PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 24},
                                          "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"]}


def test_grammars_and_schemas_constrain_every_route(server):
    r = httpx.post(server.url + "/completion", json={"prompt": "Is water wet? Answer:", "n_predict": 8,
                                                     "temperature": 0, "grammar": 'root ::= "true" | "false"'})
    assert r.status_code == 200 and r.json()["content"] in ("true", "false")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    answers = [client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": f"Invent person number {i} as JSON."}], max_tokens=60,
        temperature=0.7, seed=i, response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}})
        for i in range(3)]
    for a in answers:
        jsonschema.validate(json.loads(a.choices[0].message.content), PERSON)
    stream = client.completions.create(model="x", prompt="A list of three colours:", max_tokens=40, temperature=0,
                                       stream=True, extra_body={"json_schema": {"type": "array", "items": {
                                           "enum": ["red", "green", "blue", "black"]}, "minItems": 3, "maxItems": 3}})
    colours = json.loads("".join(c.choices[0].text for c in stream))
    assert len(colours) == 3 and set(colours) <= {"red", "green", "blue", "black"}


def test_server_wide_grammar(model_paths):
    """``lamina serve --grammar G`` holds requests that ask for no grammar to G, as llama-server does."""
    srv = ServerProcess(["-m", str(model_paths["smollm2"]), "-c", "512", "-np", "1", "--grammar",
                         'root ::= "yes" | "no"'])
    try:
        srv.wait_ready()
        for seed in range(3):
            r = httpx.post(srv.url + "/completion", json={"prompt": "Write a poem", "n_predict": 8, "seed": seed})
            assert r.json()["content"] in ("yes", "no")
        r = httpx.post(srv.url + "/completion", json={"prompt": "A number:", "n_predict": 8,
                                                      "json_schema": {"type": "integer", "minimum": 0}})
        assert r.json()["content"].isdigit()
    finally:
        srv.stop()
    bad = subprocess.run([sys.executable, "-m", "lamina.cli", "serve", "-m", str(model_paths["smollm2"]),
                          "--grammar", 'root ::= ('], capture_output=True, text=True)
    assert bad.returncode == 1 and "line 1, column 10" in bad.stderr


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 32}}, "required": ["city"]}}}


def test_tool_calls(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(model="x", messages=ask, tools=[WEATHER_TOOL], tool_choice="required",
                                       temperature=0, max_tokens=80)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert set(json.loads(call.function.arguments)) == {"city"} and call.id.startswith("call_")
    stream = client.chat.completions.create(model="x", messages=ask, tools=[WEATHER_TOOL], tool_choice="required",
                                            temperature=0, max_tokens=80, stream=True)
    chunks = list(stream)
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(tc.index, tc.function.name, tc.function.arguments) for tc in calls] == \
        [(0, "get_weather", call.function.arguments)]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": ask, "tools": [WEATHER_TOOL],
                                                               "tool_choice": {"type": "function",
                                                                               "function": {"name": "nope"}}})
    assert r.status_code == 400 and "not among the tools" in r.json()["error"]["message"]


def test_prompt_longer_than_a_slot(server):
    r = httpx.post(server.url + "/completion", json={"prompt": list(range(1, 600)), "n_predict": 1})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "exceed_context_size_error" and err["n_prompt_tokens"] == 599 and err["n_ctx"] == 512


def test_generation_stops_when_the_slot_is_full(server):
    answer = complete(server, list(range(1, 500)), n_predict=-1, ignore_eos=True)
    assert answer["truncated"] is True and answer["stop_type"] == "limit"
    # every cell of the slot holds a token, and the last one's logits gave one token more
    assert answer["tokens_evaluated"] + answer["tokens_predicted"] == 512 + 1


def test_one_requests_failing_sampler_fails_only_that_request(server, cli_texts):
    prompt = PROMPTS[1]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        neighbour = pool.submit(complete, server, prompt, n_predict=300, ignore_eos=True)
        ban_everything = {str(t): False for t in range(49152)}  # smollm2's whole vocabulary
        while not busy_slots(server):
            time.sleep(0.01)
        r = httpx.post(server.url + "/completion", timeout=60,
                       json={"prompt": "Hello", "n_predict": 4, "logit_bias": ban_everything})
        assert r.status_code == 400 and "sampling" in r.json()["error"]["message"], r.text
        assert busy_slots(server)  # the neighbour was decoding all along
        # and went on, unchanged: its greedy text starts with the CLI's 24 tokens
        assert neighbour.result()["content"].startswith(cli_texts[prompt])


# -- clients that go away --------------------------------------------------------------------------------------------------
def busy_slots(server) -> list[int]:
    return [s["id"] for s in httpx.get(server.url + "/slots").json() if s["is_processing"]]


def test_a_client_that_disconnects_frees_its_slot(server):
    body = json.dumps({"prompt": "Tell me a long story", "n_predict": 400, "stream": True, "ignore_eos": True,
                       "temperature": 0}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        got = b""
        while got.count(b"data: ") < 3:
            got += s.recv(4096)
        (busy,) = busy_slots(server)
    deadline = time.monotonic() + 5
    while busy_slots(server) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert busy_slots(server) == []
    slot = httpx.get(server.url + "/slots").json()[busy]
    assert slot["n_cached_tokens"] < 100  # it stopped soon after the client left, far from 400 tokens


def test_a_non_streaming_client_that_disconnects_frees_its_slot(server):
    body = json.dumps({"prompt": "Tell me another long story", "n_predict": 400, "ignore_eos": True}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        deadline = time.monotonic() + 30
        while not busy_slots(server) and time.monotonic() < deadline:
            time.sleep(0.02)
        (busy,) = busy_slots(server)
    deadline = time.monotonic() + 5
    while busy_slots(server) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert busy_slots(server) == []
    assert httpx.get(server.url + "/slots").json()[busy]["n_cached_tokens"] < 150

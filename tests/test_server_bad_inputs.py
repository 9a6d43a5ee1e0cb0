"""``lamina serve`` against untrusted clients: ../shared/docs/BAD-INPUTS.md, cases 22-28.

One locked-down server (two API keys, an admin key, one slot, a queue of one, a small body
limit, a one-second header timeout, a slot folder) answers every case; each test says which
case it pins. Errors are checked by status and by the OpenAI-shaped ``error`` object, and
every test ends with the server still answering.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time

import httpx
import pytest

from lamina.server.cli import argv_with_environment, build_parser
from lamina.testing.server_process import ServerProcess

API_KEY, OTHER_KEY, ADMIN_KEY = "k1-secret", "k2-secret", "admin-secret"
USER = {"Authorization": f"Bearer {API_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def slot_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("slots")


@pytest.fixture(scope="module")
def server(slot_folder, model_paths):
    proc = ServerProcess(["-m", str(model_paths["smollm2"]), "-c", "1024", "-np", "1", "--queue-max", "1",
                          "--api-key", f"{API_KEY},{OTHER_KEY}", "--admin-key", ADMIN_KEY, "--metrics",
                          "--slot-save-path", str(slot_folder), "--max-body", "65536", "--header-timeout", "1"])
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def post(server, path, body=None, *, content=None, headers=USER, timeout=120):
    return httpx.post(server.url + path, json=body, content=content, headers=headers, timeout=timeout)


def assert_error(r: httpx.Response, status: int, kind: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and isinstance(err["message"], str) and err["message"]
    if kind:
        assert err["type"] == kind
    return err


def assert_still_serving(server):
    r = post(server, "/completion", {"prompt": "Hello", "n_predict": 2})
    assert r.status_code == 200 and r.json()["tokens_predicted"] == 2


# -- 22: malformed bodies -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b'"text"', b"null", b'{"prompt": NaN}',
                                     b"\xff\xfe{}"])
def test_a_body_that_is_not_a_json_object_is_400(server, content):
    r = post(server, "/v1/chat/completions", content=content, headers={**USER, "Content-Type": "application/json"})
    assert_error(r, 400, "invalid_request_error")


@pytest.mark.parametrize("messages", [None, "hello", [123], [{}], [{"role": "user"}], [{"content": "hi"}], []])
def test_malformed_messages_are_400(server, messages):
    err = assert_error(post(server, "/v1/chat/completions", {"messages": messages}), 400, "invalid_request_error")
    assert "messages" in err["message"]


@pytest.mark.parametrize("body", [{}, {"prompt": 123.5}, {"prompt": [1, "a", {}]}, {"prompt": "x", "n_predict": "ten"},
                                  {"prompt": "x", "temperature": "hot"}, {"prompt": "x", "n_probs": -1},
                                  {"prompt": [10 ** 9]}])
def test_malformed_completion_fields_are_400(server, body):
    assert_error(post(server, "/completion", body), 400)
    assert_still_serving(server)


@pytest.mark.parametrize("body", [{"prompt": "x", "stop": ["\ud800"]}, {"prompt": "\udfff"},
                                  {"prompt": "x", "model": "\ud800"},
                                  {"prompt": "x", "dry_multiplier": 0.8, "dry_sequence_breakers": ["\ud801"]},
                                  {"prompt": "x", "logit_bias": {"5": 1e400}}, {"prompt": "x", "top_p": 10 ** 400},
                                  {"prompt": "x", "t_max_predict_ms": 10 ** 400}, {"prompt": "x", "seed": 10 ** 30},
                                  {"prompt": "x", "n_keep": -(10 ** 400)}])
def test_values_that_would_fail_later_are_400_now(server, body):
    # lone surrogates would fail when encoded, 400-digit numbers when converted to float, on the engine thread
    content = json.dumps(body).replace("Infinity", "1e400").encode()
    assert_error(post(server, "/completion", content=content, headers={**USER, "Content-Type": "application/json"}),
                 400, "invalid_request_error")
    assert_still_serving(server)


def test_a_window_longer_than_the_context_is_the_whole_context(server):
    r = post(server, "/completion", {"prompt": "Hello", "n_predict": 2, "repeat_penalty": 1.1,
                                     "repeat_last_n": 10 ** 15, "dry_multiplier": 0.5, "dry_penalty_last_n": 10 ** 15})
    assert r.status_code == 200, r.text
    settings = r.json()["generation_settings"]
    assert settings["repeat_last_n"] == settings["dry_penalty_last_n"] == 1024


def test_a_banned_token_is_reported_as_null_bias(server):
    r = post(server, "/completion", {"prompt": "Hello", "n_predict": 2, "logit_bias": {"5": False}, "n_probs": 2})
    assert r.status_code == 200, r.text
    assert r.json()["generation_settings"]["logit_bias"] == [{"bias": None, "token": 5}]


# -- 23: sizes and slow clients -----------------------------------------------------------------------------------------------
def test_a_body_over_the_limit_is_413(server):
    r = post(server, "/completion", {"prompt": "x" * 70000})
    assert_error(r, 413)
    chunked = httpx.post(server.url + "/completion", content=iter([b'{"prompt": "', b"y" * 70000, b'"}']),
                         headers=USER, timeout=30)
    assert_error(chunked, 413)


def test_a_client_sending_headers_slowly_is_dropped(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        assert s.recv(100) == b""  # the server closed the connection on its own
        assert time.monotonic() - t0 < 5
    assert_still_serving(server)


# -- 24: API keys ---------------------------------------------------------------------------------------------------------
def test_a_missing_or_wrong_key_is_401(server):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"X-Api-Key": "nope"}, {"Authorization": API_KEY},
                    {"Authorization": "Basic " + API_KEY}):
        assert_error(post(server, "/completion", {"prompt": "hi", "n_predict": 1}, headers=headers), 401,
                     "authentication_error")


def test_both_key_headers_and_every_key_are_accepted(server):
    for headers in (USER, {"Authorization": f"Bearer {OTHER_KEY}"}, {"X-Api-Key": API_KEY}, ADMIN):
        r = post(server, "/completion", {"prompt": "hi", "n_predict": 1}, headers=headers)
        assert r.status_code == 200, r.text


def test_health_and_model_list_stay_public(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/v1/models").status_code == 200


def test_admin_routes_need_the_admin_key(server):
    for path in ("/slots", "/metrics"):
        assert_error(httpx.get(server.url + path, headers=USER), 401, "authentication_error")
        assert httpx.get(server.url + path, headers=ADMIN).status_code == 200
    assert_error(post(server, "/slots/0?action=erase", {}), 401)
    assert_error(post(server, "/props", {}), 401)
    post(server, "/completion", {"prompt": "my private prompt", "n_predict": 1})
    (slot,) = httpx.get(server.url + "/slots", headers=ADMIN).json()
    assert "my private prompt" in slot["prompt"]


# -- 25: more requests than slots ------------------------------------------------------------------------------------------
def test_requests_past_the_queue_get_503_with_retry_after(server):
    finished: list[str] = []
    answers: dict[str, httpx.Response] = {}

    def run(name, n):
        answers[name] = post(server, "/completion", {"prompt": f"Story {name}:", "n_predict": n, "ignore_eos": True})
        finished.append(name)

    first = threading.Thread(target=run, args=("first", 150))
    first.start()
    wait_until(lambda: busy(server))
    with socket.create_connection(("127.0.0.1", server.port)) as gone:  # waits in the queue, then hangs up
        body = json.dumps({"prompt": "Story gone:", "n_predict": 4}).encode()
        gone.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_until(lambda: metric(server, "llamacpp:requests_deferred") == 1)
    wait_until(lambda: metric(server, "llamacpp:requests_deferred") == 0)  # its place in the queue is free again
    second = threading.Thread(target=run, args=("second", 4))
    second.start()
    wait_until(lambda: metric(server, "llamacpp:requests_deferred") == 1)
    third = post(server, "/completion", {"prompt": "Story third:", "n_predict": 4})
    assert_error(third, 503, "unavailable_error")
    assert int(third.headers["Retry-After"]) >= 1
    assert busy(server)  # all of this while the first request was still running
    first.join()
    second.join()
    assert finished == ["first", "second"]  # the queued request was served, after the one before it
    assert answers["first"].json()["tokens_predicted"] == 150 and answers["second"].json()["tokens_predicted"] == 4


def wait_until(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def busy(server) -> bool:
    return any(s["is_processing"] for s in httpx.get(server.url + "/slots", headers=ADMIN).json())


def metric(server, name: str) -> float:
    for line in httpx.get(server.url + "/metrics", headers=ADMIN).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


# -- 26: clients that leave ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_frees_the_slot_at_once(server, stream):
    body = json.dumps({"prompt": "A long tale", "n_predict": 600, "ignore_eos": True, "stream": stream}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_until(lambda: busy(server))
        time.sleep(0.3)
    left = time.monotonic()
    wait_until(lambda: not busy(server), timeout=5)
    assert time.monotonic() - left < 2
    (slot,) = httpx.get(server.url + "/slots", headers=ADMIN).json()
    assert slot["n_cached_tokens"] < 300  # far from the 600 tokens asked for
    assert_still_serving(server)


# -- 28: slot file names ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "..", ".", "", "a" * 256, "sub/x", ".hidden", "a\x00b",
                                  None, 7, "..\\x"])
def test_unsafe_slot_file_names_are_refused(server, slot_folder, name):
    for action in ("save", "restore"):
        assert_error(post(server, f"/slots/0?action={action}", {"filename": name}, headers=ADMIN), 400)
    assert os.listdir(slot_folder) == [] or all(not f.startswith(".slot-") for f in os.listdir(slot_folder))


def test_a_symlink_out_of_the_slot_folder_is_refused(server, slot_folder, tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"do not touch")
    (slot_folder / "link").symlink_to(outside)
    try:
        for action in ("save", "restore"):
            assert_error(post(server, f"/slots/0?action={action}", {"filename": "link"}, headers=ADMIN), 400)
        assert outside.read_bytes() == b"do not touch"
    finally:
        (slot_folder / "link").unlink()


def test_a_slot_saves_erases_and_restores(server, slot_folder):
    prompt = "The capital of France is"
    first = post(server, "/completion", {"prompt": prompt, "n_predict": 8, "temperature": 0}).json()
    saved = post(server, "/slots/0?action=save", {"filename": "france.slot"}, headers=ADMIN).json()
    assert saved["n_saved"] > 0 and os.path.getsize(slot_folder / "france.slot") == saved["n_written"]
    assert post(server, "/slots/0?action=erase", {}, headers=ADMIN).json()["n_erased"] == saved["n_saved"]
    restored = post(server, "/slots/0?action=restore", {"filename": "france.slot"}, headers=ADMIN).json()
    assert restored["n_restored"] == saved["n_saved"]
    again = post(server, "/completion", {"prompt": prompt, "n_predict": 8, "temperature": 0}).json()
    assert again["content"] == first["content"]
    assert again["tokens_cached"] > 0 and again["timings"]["prompt_n"] < first["timings"]["prompt_n"]
    assert_error(post(server, "/slots/0?action=restore", {"filename": "missing.slot"}, headers=ADMIN), 404)
    (slot_folder / "junk.slot").write_bytes(b"PK\x03\x04 not really a zip")
    assert_error(post(server, "/slots/0?action=restore", {"filename": "junk.slot"}, headers=ADMIN), 400)
    assert_error(post(server, "/slots/9?action=erase", {}, headers=ADMIN), 400)
    assert_error(post(server, "/slots/0?action=explode", {}, headers=ADMIN), 400)


# -- 27: while the model loads (in process, nothing loaded) ------------------------------------------------------------------
def test_requests_before_the_model_is_loaded_get_503(model_paths):
    from lamina.server.app import create_app
    from lamina.server.state import ServerConfig, ServerState

    app = create_app(ServerState(ServerConfig(model=str(model_paths["smollm2"]))))  # never loaded

    async def ask_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lamina") as client:
            body = {"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}
            return [await client.request(method, path, json=body) for method, path in
                    (("GET", "/health"), ("GET", "/v1/models"), ("POST", "/completion"),
                     ("POST", "/v1/chat/completions"), ("GET", "/slots"))]

    for r in asyncio.run(ask_all()):
        assert_error(r, 503, "unavailable_error")
        assert r.headers["Retry-After"] == "1"


# -- the command line ------------------------------------------------------------------------------------------------------
def test_environment_variables_are_read_as_llama_server_reads_them():
    env = {"LLAMA_ARG_PORT": "9001", "LLAMA_ARG_N_PARALLEL": "2", "LLAMA_ARG_ENDPOINT_METRICS": "on",
           "LLAMA_ARG_ENDPOINT_SLOTS": "disabled", "LLAMA_API_KEY": "abc", "LLAMA_ARG_CTX_SIZE": "2048"}
    args = build_parser().parse_args(argv_with_environment(["-m", "x.gguf", "--port", "9002"], env))
    assert (args.port, args.parallel, args.metrics, args.slots, args.api_key, args.ctx_size) == \
        (9002, 2, True, False, ["abc"], 2048)  # the command line wins over the variable
    with pytest.raises(SystemExit, match="LLAMA_ARG_ENDPOINT_METRICS"):
        argv_with_environment([], {"LLAMA_ARG_ENDPOINT_METRICS": "maybe"})


def test_an_unknown_flag_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["-m", "x.gguf", "--no-such-flag"])
    assert e.value.code == 2 and "--no-such-flag" in capsys.readouterr().err


def test_sigterm_ends_streams_with_an_error_and_frees_the_port(model_paths):
    proc = ServerProcess(["-m", str(model_paths["smollm2"]), "-c", "1024", "-np", "2"]).wait_ready()
    lines: list[str] = []

    def read_stream():
        with httpx.stream("POST", proc.url + "/completion", timeout=60,
                          json={"prompt": "Once", "n_predict": 5000, "ignore_eos": True, "stream": True}) as r:
            for line in r.iter_lines():
                if line:
                    lines.append(line)

    reader = threading.Thread(target=read_stream)
    reader.start()
    wait_until(lambda: len(lines) >= 3)
    t0 = time.monotonic()
    assert proc.stop(signal.SIGTERM) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has stopped
    assert time.monotonic() - t0 < 10
    reader.join(10)
    assert "error" in json.loads(lines[-1].removeprefix("data: "))
    with socket.socket() as s:  # the port is free again at once: a new server can listen on it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as every server does (uvicorn too)
        s.bind(("127.0.0.1", proc.port))
        s.listen()

"""``lamina serve --ray`` on a local Ray cluster: two replicas of smollm2 behind the ingress, as clients see them.

The test starts a one-node Ray cluster in this process and runs the real command against it
(``lamina serve --ray --replicas 2 --ray-address ADDR``, the way a second machine joins a
cluster), next to a single ``lamina serve`` with the same flags. It checks that the ``openai``
client gets the single server's greedy texts, that a conversation stays on its replica and
reuses its prefix, that keys are enforced at the ingress, that streams pass through and a
hang-up frees the slot, that ``/metrics`` adds the replicas up, and that killing a replica's
process mid-request costs that request alone (a 503) while the service goes on and Ray Serve
replaces the replica. The cluster is stopped at the end of the module.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import openai
import pytest
import ray
from ray import serve

from lamina.server.ray.aggregate import parse_metrics
from lamina.server.ray.forwarding import ForwardedRequest
from lamina.testing.server_process import ServerProcess

KEY, ADMIN = "inference-key", "admin-key"
AUTH, ADMIN_AUTH = {"Authorization": f"Bearer {KEY}"}, {"Authorization": f"Bearer {ADMIN}"}
SERVER_FLAGS = ["-c", "2048", "-np", "4", "--api-key", KEY, "--admin-key", ADMIN, "--metrics", "-a", "smollm2",
                "--max-body", str(1 << 20)]
QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "Name three prime numbers."]
DEADLINE = 180.0  # seconds for anything the cluster does in the background (a replacement replica loading)


@pytest.fixture(scope="module")
def cluster():
    """A one-node Ray cluster of 2 CPUs (one per replica), stopped at the end of the module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def service(cluster, model_paths):
    srv = ServerProcess(["-m", str(model_paths["smollm2"]), "--ray", "--replicas", "2", "--ray-address", cluster,
                         *SERVER_FLAGS])
    try:
        yield srv.wait_ready(timeout=DEADLINE)
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def single(model_paths):
    srv = ServerProcess(["-m", str(model_paths["smollm2"]), "-t", "1", *SERVER_FLAGS])
    try:
        yield srv.wait_ready(timeout=DEADLINE)
    finally:
        srv.stop()


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, timeout=120, max_retries=0)


def replicas() -> dict[str, dict]:
    """Each running replica's id, process and node, asked through Ray Serve (by id); a replica that has just
    died (and that the handle does not know about yet) is left out."""
    handle = serve.get_deployment_handle("LaminaReplica", "lamina")
    answers = handle.broadcast("describe").results(timeout_s=60, return_exceptions=True)
    return {d["replica"]: d for d in answers if isinstance(d, dict)}


def wait_for_two_replicas(without: str) -> dict[str, dict]:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        running = replicas()
        if len(running) == 2 and without not in running:
            return running
        time.sleep(1)
    raise AssertionError(f"Ray Serve did not replace replica {without} within {DEADLINE:.0f} s")


def replica_metrics() -> list[dict[str, float]]:
    handle = serve.get_deployment_handle("LaminaReplica", "lamina")
    request = ForwardedRequest("GET", "/metrics", headers=[(b"authorization", ADMIN_AUTH["Authorization"].encode())])
    return [parse_metrics(body.decode()) for _, body in handle.broadcast("call", request).results(timeout_s=60)]


# -- what clients get --------------------------------------------------------------------------------------------------
def test_the_openai_client_gets_the_single_servers_greedy_texts(service, single):
    fresh = {"cache_prompt": False}  # evaluated from scratch on both sides, so equal to the last bit
    for question in QUESTIONS:
        messages = [{"role": "user", "content": question}]
        texts = []
        for server in (single, service):
            c = client(server)
            whole = c.chat.completions.create(model="smollm2", messages=messages, max_tokens=24, temperature=0,
                                              extra_body=fresh)
            streamed = "".join(chunk.choices[0].delta.content or "" for chunk in c.chat.completions.create(
                model="smollm2", messages=messages, max_tokens=24, temperature=0, stream=True, extra_body=fresh))
            text = c.completions.create(model="smollm2", prompt=question, max_tokens=16, temperature=0,
                                        extra_body=fresh).choices[0].text
            texts.append((whole.choices[0].message.content, streamed, text, whole.usage.completion_tokens))
        assert texts[1] == texts[0], question
        assert texts[1][0] == texts[1][1]


def test_a_conversation_stays_on_its_replica_and_reuses_its_prefix(service):
    """Five conversations, their turns interleaved: each turn goes where the last one went, and finds the
    whole previous prompt in that replica's cache (a random choice of 2 replicas would keep them all by
    chance with probability 1/1024; round-robin over an odd number of conversations moves every one)."""
    c = client(service)
    openers = ["Tell me a fact about owls.", "What is a prime number?", "Describe the colour blue.",
               "Why is the sky dark at night?", "Name a famous bridge."]
    talks = {i: [{"role": "user", "content": opener}] for i, opener in enumerate(openers)}
    served: dict[int, list[str]] = {i: [] for i in talks}
    previous_prompt: dict[int, int] = {}
    for turn in range(3):
        for i, messages in talks.items():
            raw = c.chat.completions.with_raw_response.create(model="smollm2", messages=messages, max_tokens=12,
                                                              temperature=0)
            reply = raw.parse()
            served[i].append(raw.headers["x-lamina-replica"])
            if turn > 0:
                assert reply.usage.prompt_tokens_details.cached_tokens >= previous_prompt[i], (i, turn)
            previous_prompt[i] = reply.usage.prompt_tokens
            messages += [{"role": "assistant", "content": reply.choices[0].message.content},
                         {"role": "user", "content": "Tell me another one."}]
    for i, ids in served.items():
        assert len(set(ids)) == 1, (i, ids)
    assert len({ids[0] for ids in served.values()}) == 2  # and the conversations were spread over both


def test_keys_are_enforced_at_the_ingress(service):
    r = httpx.post(service.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert "x-lamina-replica" not in r.headers  # refused before any replica saw it
    assert httpx.get(service.url + "/metrics", headers=AUTH, timeout=30).status_code == 401  # admin route
    assert httpx.get(service.url + "/health", timeout=30).json() == {"status": "ok"}  # public
    ok = httpx.post(service.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, headers=AUTH, timeout=60)
    assert ok.status_code == 200 and ok.headers["x-lamina-replica"] in replicas()


def test_bad_requests_get_the_single_servers_errors(service, single):
    for server in (service, single):
        bad_json = httpx.post(server.url + "/v1/chat/completions", content=b"{not json", headers=AUTH, timeout=30)
        assert bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "invalid_request_error"
        too_big = httpx.post(server.url + "/completion", content=b"x" * (2 << 20), headers=AUTH, timeout=30)
        assert too_big.status_code == 413
    slot_action = httpx.post(service.url + "/slots/0?action=erase", headers=ADMIN_AUTH, timeout=30)
    assert slot_action.status_code == 501 and "each replica has its own" in slot_action.json()["error"]["message"]


def test_a_stream_passes_through_and_a_hang_up_frees_the_slot_streamed_or_not(service):
    body = {"prompt": "Once upon a time", "n_predict": 4000, "temperature": 0, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", service.url + "/completion", json=body, headers=AUTH, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = []
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            if len(events) == 3:
                busy = [s for s in slots(service) if s["is_processing"]]
                assert [s["id_replica"] for s in busy] == [r.headers["x-lamina-replica"]]
                break
    assert all("content" in e and e["stop"] is False for e in events)
    wait_until_idle(service)
    with pytest.raises(httpx.ReadTimeout):  # a whole answer the client stops waiting for
        httpx.post(service.url + "/completion", json={**body, "stream": False}, headers=AUTH, timeout=3)
    wait_until_idle(service)


def wait_until_idle(service) -> None:
    """Every slot idle within 5 s, and none ran its request to the end of its 512 cells (what a request the
    hang-up did not stop would do: it asked for 4000 tokens)."""
    deadline = time.monotonic() + 5
    while any(s["is_processing"] for s in slots(service)):
        assert time.monotonic() < deadline, "a slot was still busy 5 s after its client hung up"
        time.sleep(0.05)
    assert max(s["n_cached_tokens"] for s in slots(service)) < 400


def slots(service) -> list[dict]:
    r = httpx.get(service.url + "/slots", headers=ADMIN_AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_metrics_add_the_replicas_up(service):
    assert len(slots(service)) == 8  # 2 replicas x 4 slots, each marked with its replica
    per_replica = replica_metrics()
    total = parse_metrics(httpx.get(service.url + "/metrics", headers=ADMIN_AUTH, timeout=30).text)
    assert len(per_replica) == 2 and all(m["tokens_predicted_total"] > 0 for m in per_replica)
    for name in ("tokens_predicted_total", "prompt_tokens_total", "n_decode_total"):
        assert total[name] == sum(m[name] for m in per_replica), name
    assert total["n_tokens_max"] == max(m["n_tokens_max"] for m in per_replica)


# -- a replica's process dies --------------------------------------------------------------------------------------
def test_killing_a_replica_fails_its_requests_with_503_and_the_service_goes_on(service):
    before = replicas()
    body = {"prompt": "Once upon a time", "max_tokens": 4000, "temperature": 0, "ignore_eos": True, "stream": True}
    events = []
    with httpx.stream("POST", service.url + "/v1/completions", json=body, headers=AUTH, timeout=60) as r:
        victim = r.headers["x-lamina-replica"]
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if len(events) == 3:
                    os.kill(before[victim]["pid"], signal.SIGKILL)
    assert events[-1]["error"]["code"] == 503 and "send it again" in events[-1]["error"]["message"]
    survivor = next(rid for rid in before if rid != victim)
    c = client(service)
    for question in QUESTIONS:  # later requests are answered (by the survivor, until the replacement is up)
        answer = c.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": question}],
                                           max_tokens=4, temperature=0)
        assert answer.choices[0].finish_reason == "length"
    after = wait_for_two_replicas(without=victim)
    assert survivor in after and after[survivor]["pid"] == before[survivor]["pid"]  # nothing else was lost

    # a whole (not streamed) request in flight on a replica that dies: a plain 503
    with httpx.Client(timeout=120) as http:
        answers = []
        thread = threading.Thread(target=lambda: answers.append(http.post(
            service.url + "/v1/completions", headers=AUTH,
            json={"prompt": "Once upon a time", "max_tokens": 4000, "temperature": 0, "ignore_eos": True})))
        thread.start()
        deadline = time.monotonic() + 60
        while not (busy := [s["id_replica"] for s in slots(service) if s["is_processing"]]):
            assert time.monotonic() < deadline and thread.is_alive(), "the request never started"
            time.sleep(0.05)
        os.kill(after[busy[0]]["pid"], signal.SIGKILL)
        thread.join(60)
    assert answers[0].status_code == 503 and answers[0].json()["error"]["type"] == "unavailable_error"
    assert answers[0].headers["retry-after"] == "1"
    wait_for_two_replicas(without=busy[0])
    assert httpx.get(service.url + "/health", timeout=30).status_code == 200

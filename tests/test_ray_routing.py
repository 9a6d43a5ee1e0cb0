"""``lamina serve --ray`` without a cluster: its flags, the routing policy and the merging of replicas' answers.

The policy is what decides whether a conversation's next turn finds its prefix cached; these
tests pin its decisions on plain replica names and loads (the cluster tests in
test_ray_serve.py then check the effect on real replicas).
"""

from __future__ import annotations

import json

import pytest

from lamina.server.cli import build_parser
from lamina.server.ray.aggregate import merge_metrics, merge_slots
from lamina.server.ray.options import estimate_replica_memory, parse_autoscale, parse_size, ray_plan, replica_args
from lamina.server.ray.routing import (PrefixAwarePolicy, PrefixIndex, RoundRobinPolicy, common_prefix_length,
                                       parse_body)
from lamina.server.ray.routing import routing_key as key_of_data


def routing_key(path: str, body: bytes) -> str | None:
    return key_of_data(path, parse_body(body))


def parsed(*argv: str, model: str = "m.gguf"):
    return build_parser().parse_args(["-m", model, *argv])


# -- flags ----------------------------------------------------------------------------------------------------------
def test_ray_flags_need_ray():
    with pytest.raises(ValueError, match=r"--replicas, --ray-routing only apply with --ray"):
        ray_plan(parsed("--replicas", "2", "--ray-routing", "round-robin"))
    assert ray_plan(parsed()) is None


@pytest.mark.parametrize("argv, message", [
    (["--replicas", "2", "--autoscale", "1:3"], "not both"),
    (["--replicas", "0"], "at least 1"),
    (["--autoscale", "0:2"], "MIN >= 1"),
    (["--autoscale", "3:2"], "MIN <= MAX"),
    (["--autoscale", "two"], "MIN:MAX"),
    (["--replica-cpus", "0"], "positive"),
    (["--replica-memory", "lots"], "a size"),
    (["--slot-save-path", "/tmp"], "slot file"),
])
def test_contradictory_ray_flags_are_refused(argv, message, model_paths):
    with pytest.raises(ValueError, match=message):
        ray_plan(parsed("--ray", *argv, model=str(model_paths["smollm2"])))


def test_a_plan_reserves_what_the_replicas_use(model_paths):
    plan = ray_plan(parsed("--ray", "--autoscale", "2:5", "-t", "3", "-np", "6", "--queue-max", "10", "-c", "4096",
                           model=str(model_paths["smollm2"])))
    assert (plan.replicas, plan.autoscale, plan.cpus, plan.routing, plan.app_name) == (2, (2, 5), 3.0, "prefix", "lamina")
    assert plan.max_ongoing_requests == 16
    # smollm2: 30 layers x 3 KV heads x (64 + 64) dims x 4096 tokens x 2 bytes, the file, and the overhead
    kv = 30 * 3 * 128 * 4096 * 2
    assert plan.memory == estimate_replica_memory(str(model_paths["smollm2"]), 4096)
    assert plan.memory == model_paths["smollm2"].stat().st_size + kv + (512 << 20)


def test_sizes_and_autoscale_ranges_parse():
    assert parse_size("2G") == 2 << 30 and parse_size("800m") == 800 << 20 and parse_size("1.5GiB") == 3 << 29
    assert parse_size("4096") == 4096
    assert parse_autoscale(" 1 : 4 ") == (1, 4)


def test_a_replica_gets_file_contents_not_paths(tmp_path, model_paths):
    keys = tmp_path / "keys.txt"
    keys.write_text("# comment\nk1\nk2\n")
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object"}')
    args = parsed("--ray", "--api-key-file", str(keys), "-jf", str(schema), "--replica-cpus", "2",
                  model=str(model_paths["smollm2"]))
    out = replica_args(args, ray_plan(args))
    assert (out.api_key_file, out.json_schema_file, out.json_schema, out.threads) == (None, None,
                                                                                     '{"type": "object"}', 2)
    assert out.api_key == ["k1,k2"] and args.api_key_file == str(keys)  # the caller's flags are left alone


def test_app_builder_options_become_flags():
    from lamina.server.ray.app import argv_from_options

    argv = argv_from_options({"model": "m.gguf", "replicas": 2, "metrics": True, "webui": False,
                              "api_key": ["a", "b"], "args": "-c 4096 -np 4", "alias": None})
    assert argv == ["--model", "m.gguf", "--replicas", "2", "--metrics", "--no-webui", "--api-key", "a",
                    "--api-key", "b", "-c", "4096", "-np", "4"]
    args = build_parser().parse_args(argv)
    assert (args.replicas, args.metrics, args.webui, args.ctx_size, args.parallel) == (2, True, False, 4096, 4)


# -- routing keys ---------------------------------------------------------------------------------------------------
def chat(*messages, **extra) -> bytes:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in messages], **extra}).encode()


def test_a_conversations_next_turn_extends_its_key():
    turn1 = routing_key("/v1/chat/completions", chat(("system", "Be brief."), ("user", "Hi")))
    turn2 = routing_key("/v1/chat/completions", chat(("system", "Be brief."), ("user", "Hi"),
                                                     ("assistant", "Hello!"), ("user", "Why?")))
    assert turn2.startswith(turn1) and len(turn2) > len(turn1)
    parts = json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}).encode()
    assert routing_key("/chat/completions", parts) == routing_key("/chat/completions", chat(("user", "Hi")))


def test_completion_keys_and_requests_without_one():
    assert routing_key("/completion", b'{"prompt": "abc"}') == routing_key("/v1/completions", b'{"prompt": ["abc"]}')
    ids = routing_key("/completion", b'{"prompt": [1, 2, 3]}')
    assert routing_key("/completion", b'{"prompt": [1, 2, 3, 4]}').startswith(ids)
    for path, body in [("/tokenize", b'{"content": "x"}'), ("/v1/chat/completions", b"not json"),
                       ("/v1/chat/completions", b"[1]"), ("/v1/chat/completions", b'{"messages": "x"}'),
                       ("/v1/chat/completions", b'{"messages": [1]}'), ("/completion", b'{"prompt": ""}'),
                       ("/completion", b"{}")]:
        assert routing_key(path, body) is None, (path, body)


def test_common_prefix_length():
    assert common_prefix_length("abcdef", "abcxyz") == 3
    assert common_prefix_length("", "abc") == 0 and common_prefix_length("abc", "abc") == 3
    assert common_prefix_length("a" * 1000 + "b", "a" * 1000 + "c") == 1000
    assert common_prefix_length("é✓x", "é✓y") == 2


# -- the policy -----------------------------------------------------------------------------------------------------
def test_a_continued_conversation_goes_back_to_its_replica():
    policy = PrefixAwarePolicy(slots=2)
    replicas = ["a", "b"]
    first = policy.rank("chat|sys|user: hi|", replicas, {})[0]
    policy.record(first, "chat|sys|user: hi|")
    other = policy.rank("chat|sys|user: something else entirely|", replicas, {})[0]
    assert other != first  # a new conversation sharing only the system prompt spreads out
    # the next turn holds only a third of its key in common with the first, but all of it: it continues there
    next_turn = "chat|sys|user: hi|assistant: hello there, how can I help you today|user: tell me more|"
    assert policy.rank(next_turn, replicas, {"a": 1, "b": 0} if first == "a" else {"a": 0, "b": 1})[0] == first


def test_a_cache_holder_without_a_free_slot_is_passed_over_for_one_with():
    policy = PrefixAwarePolicy(slots=4)
    policy.record("a", "text|once upon a time")
    assert policy.rank("text|once upon a time, there", ["a", "b"], {"a": 3, "b": 0})[0] == "a"
    assert policy.rank("text|once upon a time, there", ["a", "b"], {"a": 4, "b": 3}) == ["b", "a"]
    assert policy.rank("text|once upon a time, there", ["a", "b"], {"a": 6, "b": 4})[0] == "a"  # both full: wait here
    assert policy.rank(None, ["a", "b", "c"], {"a": 1, "b": 2}) == ["c", "a", "b"]


def test_a_lost_replica_is_forgotten():
    policy = PrefixAwarePolicy()
    policy.record("a", "text|hello")
    policy.forget("a")
    assert policy.rank("text|hello world", ["a", "b"], {"a": 1, "b": 0}) == ["b", "a"]  # by load alone
    assert policy.index.size("a") == 0


def test_the_index_keeps_the_latest_keys_and_replaces_what_they_extend():
    index = PrefixIndex(per_replica=2)
    index.record("a", "one")
    index.record("a", "one two")  # the conversation went on: its shorter key goes
    assert index.size("a") == 1
    index.record("a", "three")
    index.record("a", "four")
    assert index.size("a") == 2 and index.longest("one two three", ["a"]) == (None, 0, False)  # evicted
    assert index.longest("four five", ["a", "b"]) == ("a", 4, True)


def test_round_robin_takes_turns_whatever_the_key():
    policy = RoundRobinPolicy()
    policy.record("a", "text|x")
    firsts = [policy.rank("text|x", ["b", "a", "c"], {})[0] for _ in range(6)]
    assert firsts == ["a", "b", "c", "a", "b", "c"]


# -- merged answers -----------------------------------------------------------------------------------------------
def metrics_text(**values) -> str:
    lines = []
    for name, value in values.items():
        lines += [f"# HELP llamacpp:{name} x", f"# TYPE llamacpp:{name} counter", f"llamacpp:{name} {value}"]
    return "\n".join(lines) + "\n"


def test_metrics_combine_as_their_meaning_asks():
    a = metrics_text(tokens_predicted_total=10, n_decode_total=4, n_busy_slots_per_decode=2.0, n_tokens_max=50,
                     predicted_tokens_seconds=30.5)
    b = metrics_text(tokens_predicted_total=5, n_decode_total=1, n_busy_slots_per_decode=1.0, n_tokens_max=70,
                     predicted_tokens_seconds=20.0)
    merged = merge_metrics([a, b])
    values = dict(line.split(" ") for line in merged.splitlines() if not line.startswith("#"))
    assert values == {"llamacpp:tokens_predicted_total": "15", "llamacpp:n_decode_total": "5",
                      "llamacpp:n_busy_slots_per_decode": "1.8", "llamacpp:n_tokens_max": "70",
                      "llamacpp:predicted_tokens_seconds": "50.5"}
    assert merged.count("# HELP") == 5


def test_slots_are_listed_with_their_replica():
    slots = merge_slots([("r2", b'[{"id": 0}]'), ("r1", b'[{"id": 0}, {"id": 1}]')])
    assert slots == [{"id": 0, "id_replica": "r1"}, {"id": 1, "id_replica": "r1"}, {"id": 0, "id_replica": "r2"}]


def test_app_builder_builds_what_serve_run_deploys(model_paths):
    from ray.serve import Application

    from lamina.server.ray import app_builder

    app = app_builder({"model": str(model_paths["smollm2"]), "autoscale": "1:3", "parallel": 2, "ctx_size": 1024})
    assert isinstance(app, Application)
    with pytest.raises(ValueError, match="not both"):
        app_builder({"model": str(model_paths["smollm2"]), "autoscale": "1:3", "replicas": 2})

"""Which replica serves a request: the one whose slots already hold the longest prefix of its prompt.

A replica's slots keep the tokens of the prompts (and answers) they last ran, so a request
whose prompt starts the same way only evaluates what is new (``cached_tokens`` in its
usage). Spreading a conversation's turns over the replicas throws that away: each turn
would evaluate the whole conversation again. So the router remembers, per replica, the
*routing keys* of the requests it sent there, and sends a request to the replica holding
the longest prefix of its key, unless every slot of that replica is busy while another
replica has one free (a cached prefix saves evaluating it again, which is worth less than
waiting for a slot).

The router decides before any replica has tokenized the request, so a key is text that
grows the way the prompt's tokens grow: for a chat, each message's role and content in
order (turn n+1's messages start with turn n's, so its key starts with turn n's key); for
a completion, the prompt itself. Nothing here imports Ray: the Ray side
(``lamina.server.ray.router``) only feeds these classes replica ids and loads.
"""

from __future__ import annotations

import collections
import itertools
import json
from typing import Protocol

#: the routes whose prompts fill the slots' caches (the others go to the least loaded replica)
CHAT_PATHS = frozenset({"/chat/completions", "/v1/chat/completions"})
TEXT_PATHS = frozenset({"/completion", "/completions", "/v1/completions", "/infill"})


def parse_body(body: bytes):
    """The JSON body, leniently: None when it is not JSON (the replica answers the 400 that says why)."""
    try:
        return json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def routing_key(path: str, data) -> str | None:
    """The text a request's prompt tokens will follow, or None (no preference); ``data`` is its parsed body."""
    if not isinstance(data, dict) or (path not in CHAT_PATHS and path not in TEXT_PATHS):
        return None
    if path in CHAT_PATHS:
        return _chat_key(data)
    if path == "/infill":
        return _text_key([data.get("input_extra"), data.get("input_prefix")])
    return _text_key(data.get("prompt", data.get("content")))


def _chat_key(data: dict) -> str | None:
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    parts = ["chat\x1d"]
    if data.get("tools"):
        parts.append(_json(data["tools"]) + "\x1d")
    for m in messages:
        if not isinstance(m, dict):
            return None
        parts.append(f"{m.get('role')}\x1f{_content_text(m.get('content'))}")
        if m.get("tool_calls"):
            parts.append("\x1f" + _json(m["tool_calls"]))
        parts.append("\x1e")
    return "".join(parts)


def _content_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI's content parts: the text ones are what the template renders
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return "" if content is None else _json(content)


def _text_key(prompt) -> str | None:
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompt = prompt[0]  # several prompts: they run in slots side by side; the first one decides
    if isinstance(prompt, str):
        return "text\x1d" + prompt if prompt else None
    if isinstance(prompt, list) and prompt:
        return "text\x1d" + _json(prompt)[:-1]  # token ids (or a mix): without the closing bracket it grows as they do
    return None


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def common_prefix_length(a: str, b: str) -> int:
    """Length of the longest common prefix, by bisection on slice equality (compared in C, not per character)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class PrefixIndex:
    """The routing keys recently sent to each replica, most recent last, at most ``per_replica`` each.

    A key that extends one already held (the next turn of a conversation) replaces it: the
    replica's slot now holds the longer prompt.
    """

    def __init__(self, per_replica: int = 64):
        self.per_replica = per_replica
        self._keys: dict[str, collections.OrderedDict[str, None]] = {}

    def record(self, replica: str, key: str) -> None:
        keys = self._keys.setdefault(replica, collections.OrderedDict())
        for old in [k for k in keys if key.startswith(k)]:
            del keys[old]
        keys[key] = None
        while len(keys) > self.per_replica:
            keys.popitem(last=False)

    def longest(self, key: str, replicas: list[str]) -> tuple[str | None, int, bool]:
        """The replica holding the longest prefix of ``key``, its length, and whether it is a whole key held
        there (``key`` continues a conversation that replica served); (None, 0, False) when none shares any."""
        best, best_n, best_whole = None, 0, False
        for replica in replicas:
            for held in self._keys.get(replica, ()):
                n = common_prefix_length(held, key)
                whole = n == len(held)
                if (n, whole) > (best_n, best_whole):
                    best, best_n, best_whole = replica, n, whole
        return best, best_n, best_whole

    def forget(self, replica: str) -> None:
        self._keys.pop(replica, None)

    def size(self, replica: str) -> int:
        return len(self._keys.get(replica, ()))


class Policy(Protocol):
    def rank(self, key: str | None, replicas: list[str], loads: dict[str, int]) -> list[str]:
        """``replicas`` in order of preference for a request with this key."""

    def record(self, replica: str, key: str | None) -> None:
        """The request with this key went to ``replica``."""

    def forget(self, replica: str) -> None:
        """``replica`` is gone; so is its cache."""


class PrefixAwarePolicy:
    """Longest cached prefix first, unless its replica has all ``slots`` busy while another has one free
    (then: the least loaded replica).

    A prefix that is a whole earlier key (the request continues a conversation; the slot also
    holds the answer that followed it) always counts; one that ends inside an earlier key
    (two conversations that share a system prompt) counts only when it covers at least
    ``min_share`` of the key, so that new conversations still spread over the replicas.
    """

    def __init__(self, slots: int = 4, min_share: float = 0.5, keys_per_replica: int = 64):
        self.slots = slots
        self.min_share = min_share
        self.index = PrefixIndex(keys_per_replica)

    def rank(self, key: str | None, replicas: list[str], loads: dict[str, int]) -> list[str]:
        by_load = sorted(replicas, key=lambda r: (loads.get(r, 0), self.index.size(r), r))
        if key is None or not by_load:
            return by_load
        best, n, whole = self.index.longest(key, by_load)
        if best is None or not (whole or n >= self.min_share * len(key)):
            return by_load
        if loads.get(best, 0) >= self.slots > loads.get(by_load[0], 0):
            return by_load
        return [best] + [r for r in by_load if r != best]

    def record(self, replica: str, key: str | None) -> None:
        if key is not None:
            self.index.record(replica, key)

    def forget(self, replica: str) -> None:
        self.index.forget(replica)


class RoundRobinPolicy:
    """Each replica in turn, whatever the request: the baseline the prefix-aware policy is measured against."""

    def __init__(self):
        self._turn = itertools.count()

    def rank(self, key: str | None, replicas: list[str], loads: dict[str, int]) -> list[str]:
        if not replicas:
            return []
        ordered = sorted(replicas)
        start = next(self._turn) % len(ordered)
        return ordered[start:] + ordered[:start]

    def record(self, replica: str, key: str | None) -> None:
        pass

    def forget(self, replica: str) -> None:
        pass


def make_policy(name: str, slots: int = 4) -> Policy:
    """The policy called ``name``, for replicas of ``slots`` slots each."""
    if name == "prefix":
        return PrefixAwarePolicy(slots=slots)
    if name == "round-robin":
        return RoundRobinPolicy()
    raise ValueError(f"unknown routing policy {name!r}: use prefix or round-robin")

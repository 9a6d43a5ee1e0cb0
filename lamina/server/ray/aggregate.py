"""The answers the ingress gathers from every replica, merged into one: ``/metrics`` and ``/slots``.

Prometheus scrapes one address, so the ingress's ``/metrics`` is the whole service: llama-server's
``llamacpp:*`` names with each value combined over the replicas the way its meaning asks
(token counts, times and throughputs add up; the largest ``n_tokens`` is the largest of all;
busy slots per decode is the mean over every replica's decode calls).
"""

from __future__ import annotations

import json

PREFIX = "llamacpp:"
#: how each metric combines over replicas; the others add up
_MAX = {"n_tokens_max"}
_PER_DECODE = {"n_busy_slots_per_decode"}  # a mean per llama_decode() call: weighted by each replica's calls


def parse_metrics(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line.startswith(PREFIX):
            name, _, value = line[len(PREFIX):].partition(" ")
            values[name] = float(value)
    return values


def merge_metrics(texts: list[str]) -> str:
    """One exposition with the first text's layout (HELP and TYPE lines) and the combined values."""
    per_replica = [parse_metrics(t) for t in texts]
    decodes = [v.get("n_decode_total", 0.0) for v in per_replica]
    lines = []
    for line in texts[0].splitlines():
        if not line.startswith(PREFIX):
            lines.append(line)
            continue
        name = line[len(PREFIX):].partition(" ")[0]
        values = [v.get(name, 0.0) for v in per_replica]
        if name in _MAX:
            merged = max(values)
        elif name in _PER_DECODE:
            merged = sum(v * d for v, d in zip(values, decodes)) / sum(decodes) if sum(decodes) else 0.0
        else:
            merged = sum(values)
        lines.append(f"{PREFIX}{name} {_number(merged)}")
    return "\n".join(lines) + "\n"


def _number(x: float) -> str:
    return str(int(x)) if x == int(x) and abs(x) < 2**53 else repr(x)


def merge_slots(answers: list[tuple[str, bytes]]) -> list[dict]:
    """Every replica's ``/slots`` list in one, each slot marked with its replica (``id`` is per replica)."""
    slots = []
    for replica, body in sorted(answers):
        for slot in json.loads(body):
            slots.append({**slot, "id_replica": replica})
    return slots

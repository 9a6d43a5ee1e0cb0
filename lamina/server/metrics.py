"""``/metrics``: the engine's counters in Prometheus text format, under llama-server's ``llamacpp:*`` names."""

from __future__ import annotations

# name, type, help, value(engine, recent prompt rate, recent generation rate)
_METRICS = (
    ("prompt_tokens_total", "counter", "Number of prompt tokens processed.",
     lambda e, c, p, g: c.n_prompt_tokens_processed_total),
    ("prompt_seconds_total", "counter", "Prompt process time", lambda e, c, p, g: c.t_prompt_processing_total),
    ("tokens_predicted_total", "counter", "Number of generation tokens processed.",
     lambda e, c, p, g: c.n_tokens_predicted_total),
    ("tokens_predicted_seconds_total", "counter", "Predict process time",
     lambda e, c, p, g: c.t_tokens_generation_total),
    ("n_decode_total", "counter", "Total number of llama_decode() calls", lambda e, c, p, g: c.n_decode_total),
    ("n_tokens_max", "counter", "Largest observed n_tokens.", lambda e, c, p, g: c.n_tokens_max),
    ("n_busy_slots_per_decode", "counter", "Average number of busy slots per llama_decode() call",
     lambda e, c, p, g: c.n_busy_slots_total / c.n_decode_total if c.n_decode_total else 0.0),
    ("prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.", lambda e, c, p, g: p),
    ("predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s.", lambda e, c, p, g: g),
    ("requests_processing", "gauge", "Number of requests processing.", lambda e, c, p, g: e.n_busy),
    ("requests_deferred", "gauge", "Number of requests deferred.", lambda e, c, p, g: e.n_waiting),
)


def prometheus_text(engine) -> str:
    c = engine.counters
    prompt_rate, gen_rate = c.take_recent()
    lines = []
    for name, kind, about, value in _METRICS:
        lines += [f"# HELP llamacpp:{name} {about}", f"# TYPE llamacpp:{name} {kind}",
                  f"llamacpp:{name} {value(engine, c, prompt_rate, gen_rate)}"]
    return "\n".join(lines) + "\n"

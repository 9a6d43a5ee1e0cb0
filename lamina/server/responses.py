"""The JSON the routes answer with, in llama-server's shapes.

Three families share one set of events: the native ``/completion`` (``content``,
``stop_type``, ``timings``, ``generation_settings``...), OpenAI's ``text_completion`` and
OpenAI's ``chat.completion`` (with their ``.chunk`` forms for streaming). A
:class:`Choice` accumulates one task's events; the ``*_final`` functions build the
whole answer, the ``*_chunk`` functions one streamed piece.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field

from lamina.sampling import SamplingParams

from .tasks import CompletionResult, CompletionTask, TokenEvent

SYSTEM_FINGERPRINT = "lamina-0.1.0"


def text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def finite_or(value: float, fallback):
    """JSON has no infinities: llama-server writes them as null, log-probabilities of 0 as -9999."""
    return value if math.isfinite(value) else fallback


def completion_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_urlsafe(24)}"


@dataclass
class Choice:
    """One task's events so far."""

    task: CompletionTask
    events: list[TokenEvent] = field(default_factory=list)
    result: CompletionResult | None = None
    text_offset: int = 0  # characters of logprob tokens streamed so far (legacy completions' text_offset)
    n_tokens: int = 0     # events that carry a sampled token (the others only release held-back text)

    def add(self, event: TokenEvent) -> None:
        self.events.append(event)
        self.n_tokens += event.token >= 0

    @property
    def token_events(self) -> list[TokenEvent]:
        return [e for e in self.events if e.token >= 0]


# -- pieces ---------------------------------------------------------------------------------------------------
def piece_json(tokenizer, token: int, logprob: float, key: str = "logprob", with_id: bool = True) -> dict:
    piece = tokenizer.token_to_piece(token, special=True)
    out = {"id": token} if with_id else {}
    value = math.exp(logprob) if key == "prob" else logprob
    out.update({"token": text(piece), key: finite_or(value, -9999.0), "bytes": list(piece)})
    return out


def native_probs(tokenizer, event: TokenEvent, post_sampling: bool) -> dict:
    """One token's entry of ``completion_probabilities``."""
    key, top_key = ("prob", "top_probs") if post_sampling else ("logprob", "top_logprobs")
    first, *top = event.probs
    out = piece_json(tokenizer, first.token, first.logprob, key)
    out[top_key] = [piece_json(tokenizer, p.token, p.logprob, key) for p in top]
    return out


def chat_logprobs(tokenizer, events: list[TokenEvent], n_top: int) -> dict:
    """OpenAI's chat ``logprobs``: ``{"content": [{token, logprob, bytes, top_logprobs}]}``."""
    content = []
    for e in events:
        if not e.probs:
            continue
        first, *top = e.probs
        entry = piece_json(tokenizer, first.token, first.logprob, with_id=False)
        entry["top_logprobs"] = [piece_json(tokenizer, p.token, p.logprob, with_id=False) for p in top[:n_top]]
        content.append(entry)
    return {"content": content}


def text_logprobs(tokenizer, events: list[TokenEvent], n_top: int, offset: int = 0) -> dict:
    """OpenAI's legacy completions ``logprobs``: parallel ``tokens``/``token_logprobs``/``top_logprobs``/``text_offset``."""
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for e in events:
        if not e.probs:
            continue
        first, *top = e.probs
        piece = text(tokenizer.token_to_piece(first.token, special=True))
        out["tokens"].append(piece)
        out["token_logprobs"].append(finite_or(first.logprob, -9999.0))
        out["top_logprobs"].append({text(tokenizer.token_to_piece(p.token, special=True)): finite_or(p.logprob, -9999.0)
                                    for p in top[:n_top]})
        out["text_offset"].append(offset)
        offset += len(piece)
    return out


def usage(choices: list[Choice]) -> dict:
    # the n choices of one prompt share its token list: their prompt counts once, as in OpenAI's usage
    prompt = sum({id(c.task.prompt_tokens): c.result.n_prompt for c in choices}.values())
    cached = sum({id(c.task.prompt_tokens): c.result.n_cached for c in choices}.values())
    completion = sum(len(c.result.tokens) for c in choices)
    return {"completion_tokens": completion, "prompt_tokens": prompt, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def generation_settings(task: CompletionTask, stream: bool) -> dict:
    """What ``/completion`` and ``/props`` report as the settings a completion ran with."""
    p: SamplingParams = task.params
    return {
        "n_predict": task.n_predict, "seed": 0xFFFFFFFF if p.seed in (-1, None) else p.seed,
        "temperature": p.temperature, "dynatemp_range": p.dynatemp_range, "dynatemp_exponent": p.dynatemp_exponent,
        "top_k": p.top_k, "top_p": p.top_p, "min_p": p.min_p, "top_n_sigma": p.top_n_sigma,
        "xtc_probability": p.xtc_probability, "xtc_threshold": p.xtc_threshold, "typical_p": p.typical_p,
        "repeat_last_n": p.repeat_last_n, "repeat_penalty": p.repeat_penalty, "presence_penalty": p.presence_penalty,
        "frequency_penalty": p.frequency_penalty, "dry_multiplier": p.dry_multiplier, "dry_base": p.dry_base,
        "dry_allowed_length": p.dry_allowed_length, "dry_penalty_last_n": p.dry_penalty_last_n,
        "dry_sequence_breakers": list(p.dry_sequence_breakers), "mirostat": p.mirostat, "mirostat_tau": p.mirostat_tau,
        "mirostat_eta": p.mirostat_eta, "stop": list(task.stops), "max_tokens": task.n_predict, "n_keep": task.n_keep,
        "ignore_eos": p.ignore_eos, "stream": stream, "n_probs": task.n_probs, "min_keep": p.min_keep,
        "samplers": list(p.samplers), "post_sampling_probs": task.post_sampling_probs,
        "logit_bias": [{"bias": finite_or(b, None), "token": t} for t, b in p.logit_bias],  # a ban: null
        "cache_prompt": task.cache_prompt,
    }


# -- the native /completion -------------------------------------------------------------------------------------
def native_chunk(tokenizer, choice: Choice, event: TokenEvent) -> dict:
    task = choice.task
    out = {"index": task.index, "content": text(event.text),
           "tokens": [event.token] if task.return_tokens and event.token >= 0 else [],
           "stop": False, "id_slot": event.id_slot, "tokens_predicted": choice.n_tokens,
           "tokens_evaluated": len(task.prompt_tokens)}
    if event.probs:
        out["completion_probabilities"] = [native_probs(tokenizer, event, task.post_sampling_probs)]
    return out


def native_final(tokenizer, choice: Choice, *, model: str, stream: bool) -> dict:
    r, task = choice.result, choice.task
    out = {
        "index": task.index, "content": "" if stream else text(r.text),
        "tokens": [] if stream or not task.return_tokens else list(r.tokens), "id_slot": r.id_slot, "stop": True,
        "model": model, "tokens_predicted": len(r.tokens), "tokens_evaluated": r.n_prompt,
        "generation_settings": generation_settings(task, stream),
        "prompt": text(tokenizer.detokenize(task.prompt_tokens, special=True)),
        "has_new_line": b"\n" in r.text, "truncated": r.truncated, "stop_type": r.stop_type,
        "stopping_word": r.stopping_word, "tokens_cached": r.n_ctx_tokens, "timings": r.timings.as_dict(),
    }
    if task.n_probs > 0 and not stream:
        out["completion_probabilities"] = [native_probs(tokenizer, e, task.post_sampling_probs)
                                           for e in choice.token_events if e.probs]
    return out


# -- OpenAI text completions --------------------------------------------------------------------------------------
def _envelope(obj: str, cid: str, model: str, created: int) -> dict:
    return {"created": created, "model": model, "system_fingerprint": SYSTEM_FINGERPRINT, "object": obj, "id": cid}


def text_completion_final(tokenizer, choices: list[Choice], *, cid: str, model: str, created: int,
                          top_logprobs: int | None) -> dict:
    out = {"choices": [{
        "text": text(c.result.text), "index": c.task.index,
        "logprobs": None if top_logprobs is None else text_logprobs(tokenizer, c.token_events, top_logprobs),
        "finish_reason": c.result.finish_reason} for c in choices]}
    out.update(_envelope("text_completion", cid, model, created))
    out["usage"] = usage(choices)
    out["timings"] = choices[0].result.timings.as_dict()
    return out


def text_completion_chunk(tokenizer, choice: Choice, event: TokenEvent | None, *, cid: str, model: str,
                          created: int, top_logprobs: int | None) -> dict:
    finished = event is None
    logprobs = None
    if top_logprobs is not None and event is not None and event.probs:
        logprobs = text_logprobs(tokenizer, [event], top_logprobs, offset=choice.text_offset)
        choice.text_offset += sum(len(t) for t in logprobs["tokens"])
    out = {"choices": [{"text": "" if finished else text(event.text), "index": choice.task.index,
                        "logprobs": logprobs, "finish_reason": choice.result.finish_reason if finished else None}]}
    out.update(_envelope("text_completion", cid, model, created))
    return out


# -- OpenAI chat completions ----------------------------------------------------------------------------------------
def chat_final(tokenizer, choices: list[Choice], *, cid: str, model: str, created: int,
               top_logprobs: int | None, tool_format: str | None = None, tool_names=()) -> dict:
    from lamina.chat.tools import parse_tool_calls

    out = {"choices": []}
    for c in choices:
        message = {"role": "assistant", "content": text(c.result.text)}
        finish_reason = c.result.finish_reason
        if tool_format is not None:
            content, calls = parse_tool_calls(message["content"], tool_format, tool_names)
            message["content"] = content
            if calls:
                message["tool_calls"] = calls
                finish_reason = "tool_calls" if finish_reason == "stop" else finish_reason
        entry = {"finish_reason": finish_reason, "index": c.task.index, "message": message}
        if top_logprobs is not None:
            entry["logprobs"] = chat_logprobs(tokenizer, c.token_events, top_logprobs)
        out["choices"].append(entry)
    out.update(_envelope("chat.completion", cid, model, created))
    out["usage"] = usage(choices)
    out["timings"] = choices[0].result.timings.as_dict()
    return out


def chat_chunk(tokenizer, choice: Choice, delta: dict, *, cid: str, model: str, created: int,
               finish_reason: str | None = None, event: TokenEvent | None = None,
               top_logprobs: int | None = None) -> dict:
    entry = {"finish_reason": finish_reason, "index": choice.task.index, "delta": delta}
    if top_logprobs is not None and event is not None and event.probs:
        entry["logprobs"] = chat_logprobs(tokenizer, [event], top_logprobs)
    out = {"choices": [entry]}
    out.update(_envelope("chat.completion.chunk", cid, model, created))
    return out


def usage_chunk(choices: list[Choice], *, obj: str, cid: str, model: str, created: int) -> dict:
    out = {"choices": []}
    out.update(_envelope(obj, cid, model, created))
    out["usage"] = usage(choices)
    out["timings"] = choices[0].result.timings.as_dict()
    return out


def rerank(body: dict, model: str, scores: list[float], documents: list[str], *, tei: bool, top_n: int,
           n_tokens: int):
    """llama-server's ``format_response_rerank``: results by falling score, ``top_n`` of them; TEI's
    bare list (``score``, and ``text`` with ``return_text``) or the Jina/Cohere envelope
    (``relevance_score``, ``usage``)."""
    label = "score" if tei else "relevance_score"
    results = [{"index": i, label: float(s)} for i, s in enumerate(scores)]
    if tei and body.get("return_text") is True:
        for r in results:
            r["text"] = documents[r["index"]]
    results.sort(key=lambda r: -r[label])
    results = results[:top_n]
    if tei:
        return results
    return {"model": body.get("model") or model, "object": "list",
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}, "results": results}


def now() -> int:
    return int(time.time())

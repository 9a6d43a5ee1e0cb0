"""Chat completions in OpenAI's shapes (what ``Llama.create_chat_completion`` returns), and chat prompt tokens.

    llm = Llama("smollm2.gguf")
    reply = llm.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=32, seed=1)
    reply["choices"][0]["message"]["content"]

The response and stream chunks have exactly llama-cpp-python's shapes: ``chatcmpl-…``
ids, a first chunk whose delta is ``{"role": "assistant"}``, content deltas, a last
chunk with an empty delta and the finish reason; ``usage`` in the whole response.
Generation itself is :func:`lamina.completion.run_completion`, as in llama-cpp-python,
where a chat completion is a text completion of the rendered prompt.

Two things differ from llama-cpp-python on purpose:

* Message text is tokenized **without** parsing special tokens: a ``<|im_end|>``
  typed by a user stays text (llama-cpp-python and llama.cpp's server parse the
  whole rendered prompt). Only the template's own text produces control tokens.
* ``response_format`` (``json_object``, with an optional ``schema``, or ``json_schema``) and
  ``grammar`` constrain every generated token (:mod:`lamina.grammar`); a schema keyword that
  cannot be enforced is an error, not ignored. A ``tool_choice`` (or ``function_call``) that
  forces a named function is refused with :class:`ChatCompletionError` for now, instead of
  silently producing unconstrained text. ``tools``/``functions`` alone are passed to the
  template, and the reply is plain text, as llama-cpp-python's template-based handlers do.
"""

from __future__ import annotations

import weakref
from typing import Any, Iterator

from .builtin import BUILTIN_TEMPLATE_NAMES
from .errors import ChatTemplateError
from .messages import normalize_messages
from .templates import ChatTemplate, builtin_chat_template, load_chat_template, read_model_chat_template
from .tools import (ToolCallError, ToolCallStream, parse_tool_calls, tool_deltas, tool_format,
                    tool_grammar, tool_request)


class ChatCompletionError(ValueError):
    """A chat completion request lamina cannot serve as asked (bad messages, or a feature it lacks)."""


#: llama-cpp-python's ``chat_format`` names whose llama.cpp built-in format lamina uses instead.
CHAT_FORMAT_ALIASES = {"llama-2": "llama2", "llama-3": "llama3"}

_templates: "weakref.WeakKeyDictionary[Any, tuple[tuple, ChatTemplate]]" = weakref.WeakKeyDictionary()


def chat_template_for(llm) -> ChatTemplate:
    """The template ``llm``'s chat completions use, made once per ``(chat_template, chat_format)``.

    Precedence: ``Llama(chat_template=...)`` (a built-in name or Jinja source), then
    ``Llama(chat_format=...)`` (``"chat_template.default"``/``"chat_template.<name>"``
    for the file's templates, a llama.cpp built-in name, or ``llama-2``/``llama-3``),
    then the file's ``tokenizer.chat_template``, then chatml, as llama.cpp does for
    a model without a template (llama-cpp-python falls back to llama-2 instead).
    """
    key = (getattr(llm, "chat_template", None), getattr(llm, "chat_format", None))
    cached = _templates.get(llm)
    if cached is not None and cached[0] == key:
        return cached[1]
    template = _choose_template(llm, *key)
    _templates[llm] = (key, template)
    return template


def _choose_template(llm, chat_template: str | None, chat_format: str | None) -> ChatTemplate:
    tok = llm.tokenizer_
    model_name = getattr(llm, "model_path", "the model")
    tokens = dict(bos_token=tok.token_text(tok.bos_id) if tok.bos_id >= 0 else "",
                  eos_token=tok.token_text(tok.eos_id) if tok.eos_id >= 0 else "",
                  add_bos=tok.add_bos, add_eos=tok.add_eos, model_name=model_name)
    if chat_template:
        return load_chat_template(template=chat_template, **tokens)
    if chat_format is None or chat_format == "chat_template.default":
        return load_chat_template(model_template=read_model_chat_template(llm.gguf), **tokens)
    if chat_format.startswith("chat_template."):
        variant = chat_format[len("chat_template."):]
        source = read_model_chat_template(llm.gguf, variant)
        if source is None:
            raise ChatTemplateError(f"the model has no tokenizer.chat_template.{variant}", template=chat_format)
        return load_chat_template(model_template=source, **tokens)
    name = CHAT_FORMAT_ALIASES.get(chat_format, chat_format)
    if name in BUILTIN_TEMPLATE_NAMES:
        return builtin_chat_template(name)
    raise ChatTemplateError(
        f"unknown chat_format; use 'chat_template.default' (the model's template), one of llama.cpp's built-in "
        f"formats ({', '.join(BUILTIN_TEMPLATE_NAMES)}) or {', '.join(CHAT_FORMAT_ALIASES)}", template=chat_format)


def chat_prompt_tokens(tokenizer, parts: list[tuple[str, bool]], *, add_bos: bool) -> list[int]:
    """Token ids of a rendered prompt given as ``ChatTemplate.render_parts`` pieces.

    The template's own text has its control tokens parsed (``<|im_start|>`` becomes
    one id); message text (pieces marked True) never does. The text between two
    control tokens is tokenized in one call, template and message text together,
    so the ids equal llama.cpp's for the same prompt whenever the messages hold no
    control-token text (a space ending ``[INST] `` still merges into the first
    word, SentencePiece's space prefix is added once). ``add_bos`` puts the BOS id
    first (the template already left its BOS text out when the tokenizer adds one).
    """
    runs: list[str | int] = []
    for text, is_message in parts:
        # the tokenizer's own special-token split (llama.cpp's tokenizer_st_partition), on template text only
        pieces = [text] if is_message else tokenizer._partition(text, True)
        for piece in pieces:
            if isinstance(piece, str) and runs and isinstance(runs[-1], str):
                runs[-1] += piece
            elif piece != "":
                runs.append(piece)
    ids: list[int] = []
    if add_bos:
        if tokenizer.bos_id < 0:
            raise ChatCompletionError("the tokenizer asks for a BOS token but the vocabulary defines none")
        ids.append(tokenizer.bos_id)
    for run in runs:
        if isinstance(run, int):
            ids.append(run)
        else:
            ids.extend(tokenizer.tokenize(run, add_special=False, parse_special=False))
    return ids


def turn_parts(template: ChatTemplate, past: list[dict], new_message: dict, *,
               add_generation_prompt: bool = True) -> list[tuple[str, bool]]:
    """``render_turn``'s text as ``render_parts`` pieces: only what ``new_message`` adds after ``past``."""
    before = template.render(past, add_generation_prompt=False) if past else ""
    parts = template.render_parts(past + [new_message], add_generation_prompt=add_generation_prompt)
    out: list[tuple[str, bool]] = [("\n", False)] if add_generation_prompt and before.endswith("\n") else []
    skip = len(before)
    for text, is_message in parts:
        if skip >= len(text):
            skip -= len(text)
            continue
        out.append((text[skip:], is_message))
        skip = 0
    return out


def chat_turn_tokens(template: ChatTemplate, tokenizer, past: list[dict], new_message: dict, *,
                     at_start: bool, after_answer: bool) -> list[int]:
    """Tokens a new message adds to a conversation whose earlier turns are already evaluated (interactive chat).

    After a generated answer the model stopped at its end-of-turn token, before the
    newline the template writes after it, so the turn starts with that newline (as
    llama.cpp's ``common_chat_format_single``); after a system prompt rendered in
    full the newline is already there and is not repeated. ``at_start``: nothing is
    evaluated yet, so BOS comes first when the tokenizer adds one.
    """
    parts = turn_parts(template, past, new_message)
    if parts and parts[0] == ("\n", False) and not after_answer:
        parts = parts[1:]
    return chat_prompt_tokens(tokenizer, parts, add_bos=at_start and tokenizer.add_bos)


def chat_prompt_for(llm, messages, *, tools=None, functions=None, tool_choice=None, **template_kwargs) -> list[int]:
    """The prompt token ids ``create_chat_completion`` evaluates for ``messages``.

    ``functions`` (the older OpenAI spelling) reach the template as ``tools`` when
    no ``tools`` are given; ``tool_choice`` and extra keyword arguments reach it as is.
    """
    template = chat_template_for(llm)
    if functions is not None and tools is None:
        tools = [{"type": "function", "function": f} for f in functions]
    if tool_choice is not None:
        template_kwargs["tool_choice"] = tool_choice
    parts = template.render_parts(messages, add_generation_prompt=True, tools=tools, **template_kwargs)
    tok = llm.tokenizer_
    tokens = chat_prompt_tokens(tok, parts, add_bos=tok.add_bos)
    if not tokens:
        raise ChatCompletionError("the chat template rendered an empty prompt for these messages")
    return tokens


def _stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
        raise ChatCompletionError(f"stop must be a string or a list of strings, got {stop!r}")
    return list(stop)


def _grammar_for(response_format, grammar):
    """The grammar a chat request asks for, by ``response_format`` or ``grammar`` (not both)."""
    from lamina.grammar import RESPONSE_FORMAT_TYPES, as_grammar, request_grammar

    if response_format is not None and (not isinstance(response_format, dict)
                                        or not isinstance(response_format.get("type"), str)):
        raise ChatCompletionError(f"response_format must be an object with a 'type', got {response_format!r}")
    if response_format is not None and response_format["type"] not in RESPONSE_FORMAT_TYPES:
        raise ChatCompletionError(f"response_format type {response_format['type']!r} is not one of "
                                  f"{', '.join(repr(t) for t in RESPONSE_FORMAT_TYPES)}")
    if grammar is not None:
        try:
            grammar = as_grammar(grammar)
        except TypeError as e:
            raise ChatCompletionError(str(e)) from None
    from_format = request_grammar(response_format=response_format)
    if grammar is not None and from_format is not None:
        raise ChatCompletionError("give either grammar or a JSON response_format, not both")
    return grammar if grammar is not None else from_format


def create_chat_completion(llm, messages, functions=None, function_call=None, tools=None, tool_choice=None,
                           temperature: float = 0.2, top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05,
                           typical_p: float = 1.0, stream: bool = False, stop: str | list[str] | None = [],
                           seed: int | None = None, response_format=None, max_tokens: int | None = None,
                           presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                           repeat_penalty: float = 1.0, tfs_z: float = 1.0, mirostat_mode: int = 0,
                           mirostat_tau: float = 5.0, mirostat_eta: float = 0.1, model: str | None = None,
                           logits_processor=None, grammar=None, logit_bias=None, logprobs: bool | None = None,
                           top_logprobs: int | None = None, parallel_tool_calls: bool | None = None,
                           **template_kwargs):
    """An OpenAI ``chat.completion`` dict, or an iterator of ``chat.completion.chunk`` dicts with ``stream=True``.

    Arguments and defaults are llama-cpp-python's. ``tfs_z`` is accepted and has no
    effect (llama.cpp removed tail-free sampling). Extra keyword arguments reach the
    Jinja template (like llama-cpp-python's), e.g. ``enable_thinking=False``.
    ``tools``/``tool_choice``/``parallel_tool_calls`` are OpenAI's (see :mod:`lamina.chat.tools`);
    calls come back as ``message.tool_calls`` with ``finish_reason`` ``"tool_calls"``.
    """
    from lamina.completion import run_completion

    if isinstance(messages, (list, tuple)) and not messages:
        raise ChatCompletionError("messages is empty: a chat completion needs at least one message")
    normalize_messages(messages)  # bad shapes fail here, naming the message
    grammar = _grammar_for(response_format, grammar)
    try:
        tool_req = tool_request(tools, tool_choice, parallel_tool_calls, functions, function_call)
    except ToolCallError as e:
        raise ChatCompletionError(str(e)) from None
    fmt = None
    if tool_req is not None:
        if grammar is not None:
            raise ChatCompletionError("give tools or a grammar/JSON response_format, not both")
        fmt = tool_format(chat_template_for(llm).source)
        grammar = tool_grammar(tool_req, fmt, llm.tokenizer_)
    stops = _stop_list(stop)
    if logprobs and top_logprobs is not None and (not isinstance(top_logprobs, int) or top_logprobs < 0):
        raise ChatCompletionError(f"top_logprobs must be a non-negative integer, got {top_logprobs!r}")

    prompt_tokens = chat_prompt_for(llm, messages, tools=tool_req.tools if tool_req else None,
                                    tool_choice=tool_choice if tool_req else None, **template_kwargs)
    tok = llm.tokenizer_
    # as llama-cpp-python's template handler: the EOS token's text also stops generation
    eos_text = tok.token_text(tok.eos_id) if tok.eos_id >= 0 else ""
    if eos_text:
        stops.append(eos_text)

    chunks = run_completion(
        llm, prompt_tokens, max_tokens=max_tokens, logprobs=top_logprobs if logprobs else None, stop=stops,
        stream=stream, seed=seed, model=model,
        sampling=dict(temp=temperature, top_p=top_p, min_p=min_p, typical_p=typical_p, top_k=top_k,
                      frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                      repeat_penalty=repeat_penalty, mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau,
                      mirostat_eta=mirostat_eta, logits_processor=logits_processor, logit_bias=logit_bias,
                      grammar=grammar),
    )
    if stream:
        return _chat_chunks(chunks) if fmt is None else _tool_chunks(chunks, fmt, tool_req.names)
    return _chat_response(next(chunks), fmt, tool_req.names if tool_req else ())


def _chat_logprobs(lp: dict | None) -> dict | None:
    """A text completion's ``logprobs`` in the chat shape (llama-cpp-python's conversion)."""
    if lp is None:
        return None
    return {
        "content": [
            {"token": token, "bytes": None, "logprob": logprob,
             "top_logprobs": [{"token": t, "logprob": p, "bytes": None} for t, p in (top or {}).items()]}
            for token, logprob, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"])
        ],
        "refusal": None,
    }


def _chat_response(completion: dict, tool_format_name: str | None = None, names=()) -> dict:
    choice = completion["choices"][0]
    message = {"role": "assistant", "content": choice["text"]}
    finish_reason = choice["finish_reason"]
    if tool_format_name is not None:
        content, calls = parse_tool_calls(choice["text"], tool_format_name, names)
        if calls:
            message = {"role": "assistant", "content": content, "tool_calls": calls}
            finish_reason = "tool_calls" if finish_reason == "stop" else finish_reason
        else:
            message["content"] = content
    return {
        "id": "chat" + completion["id"],
        "object": "chat.completion",
        "created": completion["created"],
        "model": completion["model"],
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": _chat_logprobs(choice["logprobs"]),
            "finish_reason": finish_reason,
        }],
        "usage": completion["usage"],
    }


def _with_chunk_heads(chunks: Iterator[dict]) -> Iterator[tuple[dict, dict, dict | None]]:
    """Each text chunk with its chat-chunk head; the first also gets the ``role`` chunk to send before it."""
    for i, chunk in enumerate(chunks):
        head = {"id": "chat" + chunk["id"], "model": chunk["model"], "created": chunk["created"],
                "object": "chat.completion.chunk"}
        first = {**head, "choices": [{"index": 0, "delta": {"role": "assistant"}, "logprobs": None,
                                      "finish_reason": None}]} if i == 0 else None
        yield head, chunk["choices"][0], first


def _chat_chunks(chunks: Iterator[dict]) -> Iterator[dict]:
    for head, choice, first in _with_chunk_heads(chunks):
        if first is not None:
            yield first
        delta = {"content": choice["text"]} if choice["finish_reason"] is None else {}
        yield {**head, "choices": [{"index": 0, "delta": delta, "logprobs": _chat_logprobs(choice["logprobs"]),
                                    "finish_reason": choice["finish_reason"]}]}


def _tool_chunks(chunks: Iterator[dict], fmt: str, names) -> Iterator[dict]:
    """Chunks of an answer that may call tools: text is streamed until it may be turning into a
    call; then it is held, and the calls come at the end as ``tool_calls`` deltas."""
    calls_stream = ToolCallStream(fmt, names)
    for head, choice, first in _with_chunk_heads(chunks):
        if first is not None:
            yield first
        if choice["finish_reason"] is None:
            shown = calls_stream.feed(choice["text"])
            deltas = [{"content": shown}] if shown else []
        else:
            rest, calls = calls_stream.finish()
            deltas = tool_deltas(rest, calls)
        for delta in deltas:
            yield {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}
        if choice["finish_reason"] is not None:
            reason = "tool_calls" if calls and choice["finish_reason"] == "stop" else choice["finish_reason"]
            yield {**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}]}

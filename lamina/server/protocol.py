"""Reading requests: JSON bodies, prompts and generation settings, with llama-server's field names.

Everything here is untrusted input. Each function either returns well-typed values or
raises a :class:`ServerError` (400) that names the field and what was wrong with it.
Fields that would change the output and that lamina cannot honour yet (lazy grammars,
tools, infill) are refused rather than ignored; fields that change nothing
(``user``, ``metadata``, ``store``...) are accepted and ignored, as OpenAI's clients send them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from lamina.chat.errors import ChatTemplateError
from lamina.grammar.llama_grammar import RESPONSE_FORMAT_TYPES
from lamina.sampling import SamplingError, SamplingParams

from .errors import ServerError, invalid_request, not_supported
from .tasks import CompletionTask

MAX_CHOICES = 16           # `n`: completions per request
MAX_STOPS = 16             # stop strings per request
MAX_STOP_LENGTH = 1024     # bytes per stop string
MAX_PROMPT_CHARS = 4 << 20  # a prompt string longer than this is refused before tokenizing
MAX_N_PROBS = 100
MAX_INT = 2**53            # integer fields: JSON's exact range (and no 400-digit numbers reaching float())
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

# llama-server's field -> lamina's SamplingParams field
SAMPLING_FIELDS = {
    "temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
    "typical_p": "typical_p", "repeat_penalty": "repeat_penalty", "repeat_last_n": "repeat_last_n",
    "frequency_penalty": "frequency_penalty", "presence_penalty": "presence_penalty",
    "dry_multiplier": "dry_multiplier", "dry_base": "dry_base", "dry_allowed_length": "dry_allowed_length",
    "dry_penalty_last_n": "dry_penalty_last_n", "dry_sequence_breakers": "dry_sequence_breakers",
    "xtc_probability": "xtc_probability", "xtc_threshold": "xtc_threshold", "top_n_sigma": "top_n_sigma",
    "dynatemp_range": "dynatemp_range", "dynatemp_exponent": "dynatemp_exponent", "mirostat": "mirostat",
    "mirostat_tau": "mirostat_tau", "mirostat_eta": "mirostat_eta", "min_keep": "min_keep",
    "ignore_eos": "ignore_eos", "samplers": "samplers",
}

#: lazy grammars (llama-server's tool-call triggers): refused, never ignored
NEEDS_LAZY_GRAMMAR = ("grammar_lazy", "grammar_triggers")
#: fields with a meaning this server does not implement
UNSUPPORTED = {
    "lora": "LoRA adapters are not supported",
    "input_prefix": "input_prefix/input_suffix belong to /infill",
    "input_suffix": "input_prefix/input_suffix belong to /infill",
    "suffix": "suffix (infill) is not supported: use /infill with input_prefix and input_suffix",
    "image_data": "images are not supported",
    "multimodal_data": "images and audio are not supported",
    "best_of": "best_of is not supported; use n",
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
}


def parse_json(raw: bytes) -> dict:
    """A request body as a JSON object; NaN and Infinity (which Python's json accepts) are refused."""
    def no_constants(name: str):
        raise invalid_request(f"the request body contains {name}, which is not valid JSON")

    try:
        body = json.loads(raw, parse_constant=no_constants)
    except ServerError:
        raise
    except UnicodeDecodeError as e:
        raise invalid_request(f"the request body is not UTF-8 text: {e.reason} at byte {e.start}") from None
    except (json.JSONDecodeError, RecursionError) as e:
        where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        raise invalid_request(f"the request body is not valid JSON{where}: "
                              f"{e.msg if isinstance(e, json.JSONDecodeError) else 'nested too deeply'}") from None
    if not isinstance(body, dict):
        raise invalid_request(f"the request body must be a JSON object, got {type(body).__name__ if body is not None else 'null'}"
                              .replace("list", "an array").replace("str", "a string"))
    where = unpaired_surrogate(body)
    if where is not None:
        raise invalid_request(f"{where} holds an unpaired UTF-16 surrogate (a lone \\uD800-\\uDFFF escape), "
                              "which is not text")
    return body


def unpaired_surrogate(value, where: str = "the request body") -> str | None:
    """Where a string (or object key) holds a lone surrogate, if anywhere. JSON's \\u escapes can spell
    half a character; Python keeps it, and it would fail later, when the text is encoded."""
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                return path
        elif isinstance(item, dict):
            for k, v in item.items():
                if _LONE_SURROGATE.search(k):
                    return f"a key of {path}"
                stack.append((v, f"'{k[:40]}'" if path == "the request body" else f"{path}.{k[:40]}"))
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
    return None


# -- typed fields ---------------------------------------------------------------------------------------------
def get_bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid_request(f"'{name}' must be true or false, got {json.dumps(value)[:80]}")
    return value


def get_int(body: dict, name: str, default: int, minimum: int = -MAX_INT, maximum: int = MAX_INT) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_request(f"'{name}' must be an integer, got {json.dumps(value)[:80]}")
    if value < minimum:
        raise invalid_request(f"'{name}' must be at least {minimum}, got {str(value)[:40]}")
    if value > maximum:
        raise invalid_request(f"'{name}' must be at most {maximum}, got {str(value)[:40]}")
    return value


def get_number(body: dict, name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not is_finite_number(value):
        raise invalid_request(f"'{name}' must be a finite number, got {json.dumps(value)[:80]}")
    return float(value)


def is_finite_number(value) -> bool:
    """A JSON number that is a finite double (``1e400`` parses as infinity, a 400-digit integer overflows)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def get_stops(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise invalid_request("'stop' must be a string or an array of strings")
    if len(stop) > MAX_STOPS:
        raise invalid_request(f"'stop' has {len(stop)} strings; at most {MAX_STOPS} are allowed")
    for s in stop:
        if len(s.encode("utf-8", "surrogatepass")) > MAX_STOP_LENGTH:
            raise invalid_request(f"a stop string is longer than {MAX_STOP_LENGTH} bytes")
    return tuple(s for s in stop if s)


def refuse_unsupported(body: dict) -> None:
    """400 for every field whose meaning this server cannot honour."""
    for name in NEEDS_LAZY_GRAMMAR:
        if body.get(name) not in (None, "", [], {}, False):
            raise invalid_request(f"'{name}': lazy grammars (triggered by tool-call text) are not supported yet; "
                                  "the request is refused rather than answered without the constraint")
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
            raise invalid_request("'response_format' must be an object with a string 'type'")
        if fmt["type"] not in RESPONSE_FORMAT_TYPES:
            raise invalid_request(f"response_format type '{fmt['type']}' is not one of "
                                  f"{', '.join(repr(t) for t in RESPONSE_FORMAT_TYPES)}")
    if "messages" not in body:  # tools belong to chat completions
        for name in ("tools", "functions"):
            if body.get(name):
                raise invalid_request(f"'{name}': tools are offered through /v1/chat/completions")
        for name in ("tool_choice", "function_call"):
            if body.get(name) not in (None, "none", "auto"):
                raise invalid_request(f"'{name}': tools are offered through /v1/chat/completions")
    for name, why in UNSUPPORTED.items():
        if body.get(name) not in (None, "", [], {}, False, 1 if name == "best_of" else None):
            raise not_supported(f"'{name}': {why}") if name in ("image_data", "multimodal_data") \
                else invalid_request(f"'{name}': {why}")
    if get_bool(body, "echo", False):
        raise invalid_request("'echo' is not supported: the prompt is not repeated in the answer")


# -- sampling ----------------------------------------------------------------------------------------------------
def sampling_params(body: dict, defaults: SamplingParams, n_ctx: int, tokenizer) -> SamplingParams:
    """The request's sampling settings over the server's defaults (its command-line flags)."""
    changes: dict[str, Any] = {}
    for name, field in SAMPLING_FIELDS.items():
        if body.get(name) is not None:
            changes[field] = body[name]
    for name in ("repeat_last_n", "dry_penalty_last_n"):  # -1: the whole context, as llama-server
        value = changes.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and (value == -1 or value > n_ctx):
            changes[name] = n_ctx  # a window longer than the context sees the whole context
    if body.get("seed") is not None:
        seed = body["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or abs(seed) > MAX_INT:
            raise invalid_request(f"'seed' must be an integer, got {json.dumps(seed)[:80]}")
        changes["seed"] = -1 if seed == -1 or seed == 0xFFFFFFFF else seed % 2**32
    bias = logit_bias(body.get("logit_bias"), tokenizer)
    if bias is not None:
        changes["logit_bias"] = bias
    try:
        params = defaults.replace(**changes)
    except (SamplingError, TypeError, ValueError, OverflowError) as e:
        raise invalid_request(f"invalid sampling setting: {e}") from None
    if params.top_k > tokenizer.n_vocab:
        params = params.replace(top_k=tokenizer.n_vocab)  # as llama.cpp: top_k past the vocabulary keeps all
    return params


def logit_bias(value, tokenizer) -> dict[int, float] | None:
    """llama-server's three spellings: {"id": bias}, [[id, bias]] and [["text", bias]]; false bans a token."""
    if value is None:
        return None
    n_vocab = tokenizer.n_vocab
    pairs: list[tuple[Any, Any]]
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list):
        if not all(isinstance(p, list) and len(p) == 2 for p in value):
            raise invalid_request("'logit_bias' as an array must hold [token, bias] pairs")
        pairs = [tuple(p) for p in value]
    else:
        raise invalid_request("'logit_bias' must be an object {token id: bias} or an array of [token, bias] pairs")
    out: dict[int, float] = {}
    for key, bias in pairs:
        if bias is False:
            bias = float("-inf")
        elif not is_finite_number(bias):
            raise invalid_request(f"logit_bias for {str(key)[:40]!r} must be a finite number or false (false bans the "
                                  f"token), got {json.dumps(bias)[:40]}")
        if isinstance(key, str) and isinstance(value, dict):
            try:
                ids = [int(key)]
            except ValueError:
                raise invalid_request(f"logit_bias key {key!r} is not a token id") from None
        elif isinstance(key, str):
            ids = tokenizer.tokenize(key.encode("utf-8", "surrogatepass"), add_special=False, parse_special=False)
        elif isinstance(key, int) and not isinstance(key, bool):
            ids = [key]
        else:
            raise invalid_request(f"logit_bias token must be an id or a string, got {json.dumps(key)[:40]}")
        for t in ids:
            if not 0 <= t < n_vocab:
                raise invalid_request(f"logit_bias token id {t} is outside the vocabulary (0..{n_vocab - 1})")
            out[t] = float(bias)
    return out


def check_token_ids(ids: list[int], n_vocab: int, what: str = "the prompt") -> None:
    for i, t in enumerate(ids):
        if not 0 <= t < n_vocab:
            raise invalid_request(f"{what}: token {i} is {str(t)[:40]}, outside the vocabulary (0..{n_vocab - 1})")


# -- prompts ----------------------------------------------------------------------------------------------------
def prompt_tokens(prompt, tokenizer, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
    """A prompt as llama-server reads one: text, token ids, or a mix ([12, " text", 34])."""
    if isinstance(prompt, str):
        if len(prompt) > MAX_PROMPT_CHARS:
            raise invalid_request(f"the prompt has {len(prompt)} characters; at most {MAX_PROMPT_CHARS} are accepted")
        return tokenizer.tokenize(prompt.encode("utf-8", "surrogatepass"), add_special=add_special,
                                  parse_special=parse_special)
    if isinstance(prompt, list) and prompt:
        out: list[int] = []
        for i, piece in enumerate(prompt):
            if isinstance(piece, bool) or not isinstance(piece, (int, str)):
                raise invalid_request(f"prompt element {i} must be a token id or a string, got {json.dumps(piece)[:40]}")
            if isinstance(piece, int):
                out.append(piece)
            else:
                out.extend(prompt_tokens(piece, tokenizer, add_special=add_special and i == 0,
                                         parse_special=parse_special))
        return out
    raise invalid_request("'prompt' must be a string, an array of token ids (and strings), or an array of those")


def prompts_of(body: dict, tokenizer, field: str = "prompt") -> list[list[int]]:
    """One or several prompts: a list of strings or of token lists means one completion each."""
    if field not in body or body[field] is None:
        raise invalid_request(f"'{field}' is required")
    prompt = body[field]
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        if len(prompt) > MAX_CHOICES:
            raise invalid_request(f"'{field}' holds {len(prompt)} prompts; at most {MAX_CHOICES} are accepted")
        return [prompt_tokens(p, tokenizer) for p in prompt]
    return [prompt_tokens(prompt, tokenizer)]


INFILL_FIELDS = ("input_prefix", "input_suffix", "input_extra", "prompt")
MAX_EMBEDDING_INPUTS = 256


def embedding_inputs(body: dict, field: str) -> list[str]:
    """The texts to embed: one string or a list of strings (llama-server's ``content``, OpenAI's ``input``)."""
    value = body.get(field)
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise invalid_request(f"'{field}' must be a string or a non-empty array of strings")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise invalid_request(f"'{field}' holds {len(texts)} texts; at most {MAX_EMBEDDING_INPUTS} are accepted")
    if any(len(t) > MAX_PROMPT_CHARS for t in texts):
        raise invalid_request(f"a text is longer than {MAX_PROMPT_CHARS} characters")
    return texts


def rerank_inputs(body: dict) -> tuple[str, list[str], int, bool]:
    """``/rerank``'s query, documents, ``top_n`` and whether the body is TEI's (``texts``), as
    llama-server reads them."""
    query = body.get("query")
    if "query" not in body:
        raise invalid_request('"query" must be provided')
    if not isinstance(query, str):
        raise invalid_request('"query" must be a string')
    tei = "texts" in body
    documents = body.get("documents", body.get("texts"))
    if not isinstance(documents, list) or not documents or not all(isinstance(d, str) for d in documents):
        raise invalid_request('"documents" must be a non-empty string array')
    if len(documents) > MAX_EMBEDDING_INPUTS:
        raise invalid_request(f'"documents" holds {len(documents)} texts; at most {MAX_EMBEDDING_INPUTS} are accepted')
    if any(len(t) > MAX_PROMPT_CHARS for t in [query, *documents]):
        raise invalid_request(f"a text is longer than {MAX_PROMPT_CHARS} characters")
    return query, documents, get_int(body, "top_n", len(documents), minimum=0), tei


def embd_normalize(body: dict) -> int:
    """llama-server's ``embd_normalize``: -1 none, 0 max-abs, 1 taxicab, 2 euclidean (default), p."""
    return get_int(body, "embd_normalize", 2, minimum=-1)


def infill_parts(body: dict, tokenizer) -> tuple[list[int], list[int], list[dict], list[int]]:
    """``/infill``'s code before and after the cursor, extra files and the start of the middle, as
    llama-server reads them (prefix and suffix: text or tokens, special tokens not parsed)."""
    parts = []
    for name in ("input_prefix", "input_suffix"):
        if name not in body:
            raise invalid_request(f"'{name}' is required")
        value = body[name]
        parts.append([] if value in ("", []) else prompt_tokens(value, tokenizer, add_special=False,
                                                                  parse_special=False))
    extra = body.get("input_extra", [])
    if not isinstance(extra, list):
        raise invalid_request("'input_extra' must be an array of {\"filename\": string, \"text\": string}")
    for chunk in extra:
        if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str):
            raise invalid_request("an 'input_extra' chunk must contain a 'text' field with a string value")
        if "filename" in chunk and not isinstance(chunk["filename"], str):
            raise invalid_request("an 'input_extra' chunk's 'filename' must be a string")
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise invalid_request("'prompt' must be a string")
    middle = prompt_tokens(prompt, tokenizer, add_special=False) if prompt else []
    return parts[0], parts[1], extra, middle


# -- a whole completion request ------------------------------------------------------------------------------------
@dataclass
class CompletionRequest:
    tasks: list[CompletionTask]
    stream: bool
    include_usage: bool
    model: str | None
    top_logprobs: int | None = None   # OpenAI logprobs asked for: this many candidates per token
    tool_format: str | None = None    # tools offered: the family whose calls the answers are read for
    tool_names: tuple[str, ...] = ()


def tools_of(body: dict):
    """The request's ``tools``/``tool_choice``/``parallel_tool_calls`` (a ``ToolRequest``), or None."""
    from lamina.chat.tools import ToolCallError, tool_request

    try:
        return tool_request(body.get("tools"), body.get("tool_choice"), body.get("parallel_tool_calls"),
                            body.get("functions"), body.get("function_call"))
    except ToolCallError as e:
        raise invalid_request(str(e)) from None


def chat_prompt_parts(template, body: dict, tools=None, now=None) -> list[tuple[str, bool]]:
    """A chat request's prompt as ``template.render_parts`` gives it, the way llama-server renders
    ``/v1/chat/completions`` and ``/apply-template``: a final assistant message is continued (prefill);
    ``tools`` (a ``ToolRequest``) reach the template, which shows them to the model as it likes;
    ``chat_template_kwargs`` are the template's extra variables; ``now`` the time it is told (the clock's)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_request("'messages' must be a non-empty array of message objects")
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise invalid_request("'chat_template_kwargs' must be an object")
    prefill = isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant"
    options = dict(add_generation_prompt=not prefill, continue_final_message=prefill, now=now, **kwargs)
    if tools is not None:
        options["tools"] = tools.tools
    try:
        return template.render_parts(messages, **options)
    except ChatTemplateError as e:
        raise invalid_request(str(e)) from None
    except TypeError as e:
        raise invalid_request(f"'chat_template_kwargs': {e}") from None


def grammar_of(body: dict):
    """The request's ``grammar`` (GBNF), ``json_schema`` or JSON ``response_format`` as a
    ``LlamaGrammar``, checked and compiled here, in the request's own thread; or None."""
    from lamina.grammar import GrammarError, request_grammar

    grammar = body.get("grammar")
    if grammar is not None and not isinstance(grammar, str):
        raise invalid_request("'grammar' must be a string of GBNF")
    schema = body.get("json_schema")
    if schema is not None and not isinstance(schema, (dict, bool)):
        raise invalid_request("'json_schema' must be a JSON schema object")
    try:
        return request_grammar(grammar=grammar or None, json_schema=schema,
                               response_format=body.get("response_format"))
    except GrammarError as e:
        raise invalid_request(str(e)) from None


def completion_tasks(body: dict, prompts: list[list[int]], defaults: SamplingParams, *, n_ctx: int, tokenizer,
                     n_predict_default: int, oai: bool, tool_grammar=None,
                     default_grammar=None) -> CompletionRequest:
    """Tasks for ``prompts`` with the request's settings: one per prompt and per choice (``n``)."""
    refuse_unsupported(body)
    params = sampling_params(body, defaults, n_ctx, tokenizer)
    grammar = grammar_of(body)
    if tool_grammar is not None:
        if grammar is not None:
            raise invalid_request("give tools or a grammar/json_schema/JSON response_format, not both")
        grammar = tool_grammar
    if grammar is None:
        grammar = default_grammar  # the server's --grammar / --json-schema, as llama-server's
    if grammar is not None:
        grammar.compiled_for(tokenizer)  # <|name|> tokens are looked up now, not in the engine's thread
    n_predict = n_predict_default
    for name in ("n_predict", "max_tokens", "max_completion_tokens"):
        if body.get(name) is not None:
            n_predict = get_int(body, name, -1, minimum=-1)  # a full slot stops it
    n_choices = get_int(body, "n", 1, minimum=1, maximum=MAX_CHOICES)
    if n_choices * len(prompts) > MAX_CHOICES:
        raise invalid_request(f"{len(prompts)} prompts x n={n_choices} choices is more than {MAX_CHOICES} completions")
    n_probs = get_int(body, "n_probs", 0, minimum=0, maximum=MAX_N_PROBS)
    top_logprobs = None
    if oai and body.get("logprobs") not in (None, False):
        if body["logprobs"] is True:  # chat: logprobs true, and top_logprobs candidates
            top_logprobs = get_int(body, "top_logprobs", 0, minimum=0, maximum=20)
        else:  # completions: logprobs is the number of candidates
            top_logprobs = get_int(body, "logprobs", 0, minimum=0, maximum=20)
        n_probs = max(1, top_logprobs)  # the sampled token's own log-probability is always reported
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise invalid_request("'stream_options' must be an object")
    stream = get_bool(body, "stream", False)
    common = dict(
        params=params, n_predict=n_predict, stops=get_stops(body), n_probs=n_probs,
        post_sampling_probs=get_bool(body, "post_sampling_probs", False),
        cache_prompt=get_bool(body, "cache_prompt", True), id_slot=get_int(body, "id_slot", -1, minimum=-1),
        n_keep=get_int(body, "n_keep", 0, minimum=-1), return_tokens=get_bool(body, "return_tokens", False),
        t_max_predict_ms=float(get_int(body, "t_max_predict_ms", 0, minimum=0)), grammar=grammar)
    tasks = []
    for p, prompt in enumerate(prompts):
        for c in range(n_choices):
            # choice c of a seeded request draws with seed + c: n identical choices would be of no use
            seeded = c > 0 and params.seed not in (-1, None)
            choice = {**common, "params": params.replace(seed=(params.seed + c) % 2**32)} if seeded else common
            tasks.append(CompletionTask(prompt_tokens=prompt, index=len(tasks), **choice))
    model = body.get("model")
    return CompletionRequest(tasks, stream, get_bool(stream_options, "include_usage", False),
                             model if isinstance(model, str) else None, top_logprobs)

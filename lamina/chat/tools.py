"""Tool calls: what a request asks, the grammar that makes the model call, and reading the calls back.

A model calls tools in its own family's format, which its chat template shows it:

- ``hermes`` (Hermes 2 Pro, Qwen 2.5/3): ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``;
- ``llama3`` (Llama 3.1+): a bare ``{"name": ..., "parameters": {...}}``;
- ``mistral`` (Mistral Nemo and later): ``[TOOL_CALLS][{"name": ..., "arguments": {...}}]``;
- ``generic``, for every other template: lamina knows no call syntax of its own for it, so a
  call is JSON ``{"tool_call": {"name": ..., "arguments": {...}}}`` (``{"tool_calls": [...]}``
  when parallel).

The prompt is always the template's own rendering with ``tools`` passed in, as llama.cpp's
server renders it (it adds no instructions of its own: a template that shows no tools gives the
model none to see).

``tool_choice`` decides the constraint. ``"none"``: tools are left out and nothing is parsed.
``"auto"``: the model may answer or call; its text is read afterwards (a Hermes or Mistral call
that starts with a marker token of its own is held to the schemas; a generic answer is read as
a call only when it is one of the JSON shapes above, or a bare call naming an offered tool). ``"required"`` or a named function: the answer is forced,
by a grammar, to be a call (to that function), with arguments that match the function's
``parameters`` schema; ``parallel_tool_calls`` allows several.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from .messages import normalize_tools

HERMES, LLAMA3, MISTRAL, GENERIC = "hermes", "llama3", "mistral", "generic"


class ToolCallError(ValueError):
    """A malformed ``tools``/``tool_choice`` request (HTTP 400)."""


@dataclass(frozen=True)
class ToolRequest:
    tools: list[dict]         # normalized: {"type": "function", "function": {name, description, parameters}}
    choice: str               # "auto", "required", or a function's name
    parallel: bool

    @property
    def names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools]

    @property
    def forced(self) -> bool:
        return self.choice != "auto"

    def callable_tools(self) -> list[dict]:
        if self.choice in ("auto", "required"):
            return self.tools
        return [t for t in self.tools if t["function"]["name"] == self.choice]


def tool_request(tools=None, tool_choice=None, parallel_tool_calls=None, functions=None,
                 function_call=None) -> ToolRequest | None:
    """The tools a chat request offers and how they must be used; None when no tool may be called.

    ``functions``/``function_call`` (OpenAI's older names) mean the same as ``tools``/``tool_choice``.
    """
    if functions is not None and tools is None:
        if not isinstance(functions, list):
            raise ToolCallError("functions must be a list")
        tools = [{"type": "function", "function": f} for f in functions]
    if function_call is not None and tool_choice is None:
        tool_choice = function_call if isinstance(function_call, str) else {"type": "function",
                                                                              "function": function_call}
    try:
        normalized = normalize_tools(tools)
    except ValueError as e:
        raise ToolCallError(str(e)) from None
    choice = _choice(tool_choice)
    if normalized is None:
        if choice not in ("auto", "none"):
            raise ToolCallError(f"tool_choice {tool_choice!r} needs tools to choose from")
        return None
    if choice not in ("auto", "none", "required") and choice not in [t["function"]["name"] for t in normalized]:
        raise ToolCallError(f"tool_choice names function {choice!r}, which is not among the tools")
    if choice == "none":
        return None
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise ToolCallError("parallel_tool_calls must be true or false")
    return ToolRequest(normalized, choice, bool(parallel_tool_calls))


def _choice(tool_choice) -> str:
    if tool_choice is None:
        return "auto"
    if isinstance(tool_choice, str):
        if tool_choice not in ("auto", "none", "required"):
            raise ToolCallError(f"tool_choice {tool_choice!r} is not one of 'auto', 'none', 'required' "
                                "or {'type': 'function', 'function': {'name': ...}}")
        return tool_choice
    if isinstance(tool_choice, dict) and isinstance(tool_choice.get("function"), dict) \
            and isinstance(tool_choice["function"].get("name"), str):
        return tool_choice["function"]["name"]
    raise ToolCallError("tool_choice must be 'auto', 'none', 'required' or "
                        "{'type': 'function', 'function': {'name': ...}}")


def tool_format(template_source: str | None) -> str:
    """The tool-call family a chat template uses, read from its source as llama.cpp reads it."""
    src = template_source or ""
    if "[TOOL_CALLS]" in src:
        return MISTRAL
    if "<tool_call>" in src:
        return HERMES
    if "<|python_tag|>" in src or ("<|start_header_id|>" in src and "ipython" in src):
        return LLAMA3
    return GENERIC


# -- the grammar --------------------------------------------------------------------------------------

def _call_schema(tool: dict, arguments_key: str) -> dict:
    from lamina.grammar.json_schema import llamacpp_meaning

    f = tool["function"]
    return {"type": "object", "properties": {"name": {"const": f["name"]},
                                             arguments_key: llamacpp_meaning(f["parameters"] or {})},
            "required": ["name", arguments_key], "additionalProperties": False}


def _json(schema: dict) -> str:
    from lamina.grammar.json_schema import WHITESPACE

    return "%json " + json.dumps({**schema, "x-guidance": {"whitespace_pattern": WHITESPACE,
                                                            "json_allow_general_unicode_escapes": True}})


def _marker(tokenizer, text: str) -> str:
    """A Lark item for ``text``: the single special token it is in this vocabulary, else the text."""
    ids = tokenizer.tokenize(text, add_special=False, parse_special=True)
    if len(ids) == 1 and tokenizer.token_to_piece(ids[0], special=True) == text.encode():
        return f"<[{ids[0]}]>"
    return json.dumps(text)


def _special_marker(tokenizer, text: str) -> str | None:
    """``<[id]>`` when ``text`` is one special token of the vocabulary (text can never spell it)."""
    marker = _marker(tokenizer, text)
    return marker if marker.startswith("<[") else None


def tool_grammar(request: ToolRequest, fmt: str, tokenizer):
    """The ``LlamaGrammar`` the answer must fit, or None when it is free.

    With ``auto``, Hermes and Mistral answers are free text, but where the vocabulary has the
    call marker as a token of its own (Qwen's ``<tool_call>``, Mistral's ``[TOOL_CALLS]``), a call
    the model starts is held to the tools' schemas: free text cannot contain that token, so the
    grammar knows exactly where a call begins (llama.cpp reaches the same with a lazy grammar)."""
    from lamina.grammar import LlamaGrammar

    tools = request.callable_tools()
    if fmt == GENERIC:
        call = {"anyOf": [_call_schema(t, "arguments") for t in tools]}
        key = "tool_calls" if request.parallel else "tool_call"
        value = {"type": "array", "items": call, "minItems": 1} if request.parallel else call
        calling = {"type": "object", "properties": {key: value}, "required": [key], "additionalProperties": False}
        return LlamaGrammar(f"start: {_json(calling)}\n", "lark") if request.forced else None
    if not request.forced:
        return _auto_grammar(request, fmt, tokenizer, tools)
    if fmt == HERMES:
        body = _json({"anyOf": [_call_schema(t, "arguments") for t in tools]})
        start, end = _marker(tokenizer, "<tool_call>"), _marker(tokenizer, "</tool_call>")
        repeat = ' ("\\n" call)*' if request.parallel else ""
        lark = f'start: call{repeat}\ncall: {start} "\\n" body "\\n" {end}\nbody: {body}\n'
    elif fmt == LLAMA3:
        lark = f"start: {_json({'anyOf': [_call_schema(t, 'parameters') for t in tools]})}\n"
    else:  # mistral
        calls = {"type": "array", "items": {"anyOf": [_call_schema(t, "arguments") for t in tools]},
                 "minItems": 1, **({} if request.parallel else {"maxItems": 1})}
        lark = f"start: {_marker(tokenizer, '[TOOL_CALLS]')} body\nbody: {_json(calls)}\n"
    return LlamaGrammar(lark, "lark")


def _auto_grammar(request: ToolRequest, fmt: str, tokenizer, tools: list[dict]):
    from lamina.grammar import LlamaGrammar

    text = "TEXT: /(?s:.)+/\n"
    if fmt == HERMES:
        start, end = _special_marker(tokenizer, "<tool_call>"), _special_marker(tokenizer, "</tool_call>")
        if start is None or end is None:
            return None
        body = _json({"anyOf": [_call_schema(t, "arguments") for t in tools]})
        calls = 'call (/\\s+/? call)*' if request.parallel else "call"
        return LlamaGrammar(f'start: TEXT? ({calls} TEXT?)?\ncall: {start} /\\s*/ body /\\s*/ {end}\n'
                            f"body: {body}\n{text}", "lark")
    if fmt == MISTRAL:
        start = _special_marker(tokenizer, "[TOOL_CALLS]")
        if start is None:
            return None
        calls = {"type": "array", "items": {"anyOf": [_call_schema(t, "arguments") for t in tools]},
                 "minItems": 1, **({} if request.parallel else {"maxItems": 1})}
        return LlamaGrammar(f"start: TEXT? ({start} body)?\nbody: {_json(calls)}\n{text}", "lark")
    return None


# -- reading the answer -------------------------------------------------------------------------------

_HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_BARE_JSON = re.compile(r"(?:```(?:json)?\s*)?(\{.*\})\s*(?:```)?", re.DOTALL)


def new_call_id() -> str:
    return "call_" + secrets.token_urlsafe(18).replace("-", "a").replace("_", "b")


def _call(obj, arguments_key: str = "arguments") -> dict | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get(arguments_key, obj.get("arguments", obj.get("parameters", {})))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    return {"id": new_call_id(), "type": "function",
            "function": {"name": obj["name"], "arguments": json.dumps(args, ensure_ascii=False)}}


def _json_prefix(text: str):
    try:
        return json.JSONDecoder().raw_decode(text.lstrip())[0]
    except ValueError:
        return None


def parse_tool_calls(text: str, fmt: str, names: Sequence[str] = ()) -> tuple[str | None, list[dict]]:
    """The answer's remaining text (None if nothing is left) and its calls in OpenAI's shape.

    Text that does not read as a call is the answer itself, as llama.cpp falls back to. Small
    Hermes-family models (Qwen 2.5 Coder) often write the call's JSON without its tags; an answer
    that is just such an object, naming one of the offered ``names``, is read as a call too.
    """
    calls: list[dict] = []
    content = text
    if fmt == HERMES:
        for m in _HERMES_CALL.finditer(text):
            call = _call(_json_prefix(m.group(1)))
            if call is not None:
                calls.append(call)
        if calls:
            content = _HERMES_CALL.sub("", text)
        else:
            bare = _BARE_JSON.fullmatch(text.strip())
            found = _json_prefix(bare.group(1)) if bare else None
            call = _call(found) if isinstance(found, dict) and found.get("name") in names else None
            if call is not None:
                calls, content = [call], ""
    elif fmt == MISTRAL:
        head, marker, tail = text.partition("[TOOL_CALLS]")
        found = _json_prefix(tail) if marker else None
        if isinstance(found, dict):
            found = [found]
        if isinstance(found, list):
            calls = [c for c in (_call(item) for item in found) if c is not None]
        if calls:
            content = head
    elif fmt == LLAMA3:
        body = text.strip().removeprefix("<|python_tag|>")
        call = _call(_json_prefix(body), "parameters") if body.startswith("{") else None
        if call is not None:
            calls, content = [call], ""
    else:
        found = _json_prefix(text)
        if isinstance(found, dict):
            if isinstance(found.get("tool_calls"), list):
                calls = [c for c in (_call(item) for item in found["tool_calls"]) if c is not None]
            elif "tool_call" in found:
                calls = [c for c in [_call(found["tool_call"])] if c is not None]
            elif found.get("name") in names:
                calls = [c for c in [_call(found)] if c is not None]
            if calls:
                content = ""
            elif isinstance(found.get("response"), str):
                content = found["response"]
    content = content.strip() if calls else content
    return (content or None) if calls else content, calls


def showable_end(text: str, fmt: str) -> int:
    """While streaming: how much of the text so far can be shown now, as it cannot be part of a call."""
    if fmt == GENERIC:  # an answer that starts as JSON may be a call: it is known at the end
        return 0 if text.lstrip() == "" or text.lstrip().startswith(("{", "`")) else len(text)
    if fmt == LLAMA3:
        stripped = text.lstrip()
        starts_a_call = stripped == "" or stripped.startswith("{") or "<|python_tag|>".startswith(stripped[:14]) \
            or stripped.startswith("<|python_tag|>")
        return 0 if starts_a_call else len(text)
    marker = "<tool_call>" if fmt == HERMES else "[TOOL_CALLS]"
    if fmt == HERMES and text.lstrip().startswith(("{", "`")):
        return 0  # perhaps a call written without its tags (see parse_tool_calls)
    at = text.find(marker)
    if at >= 0:
        return at
    for i in range(len(marker) - 1, 0, -1):  # a marker may be arriving
        if text.endswith(marker[:i]):
            return len(text) - i
    return len(text)


class ToolCallStream:
    """Streams an answer that may call tools: ``feed`` returns the text that can be shown now;
    ``finish`` returns the text left to show and the calls, once the answer is complete."""

    def __init__(self, fmt: str, names: Sequence[str]):
        self.fmt, self.names = fmt, list(names)
        self.text, self.shown = "", 0

    def feed(self, piece: str) -> str:
        self.text += piece
        end = showable_end(self.text, self.fmt)
        if end <= self.shown:
            return ""
        out, self.shown = self.text[self.shown:end], end
        return out

    def finish(self) -> tuple[str, list[dict]]:
        content, calls = parse_tool_calls(self.text, self.fmt, self.names)
        if calls:  # the text outside the calls that was not shown yet
            return parse_tool_calls(self.text[self.shown:], self.fmt, self.names)[0] or "", calls
        if self.fmt == GENERIC and self.shown == 0:
            return content or "", []  # held back whole: {"response": ...} is given as its text
        return self.text[self.shown:], []


def tool_deltas(rest: str, calls: list[dict]) -> list[dict]:
    """The last stream deltas of an answer that may call tools: the text held back, then each call."""
    return ([{"content": rest}] if rest else []) + [{"tool_calls": [{"index": n, **call}]}
                                                     for n, call in enumerate(calls)]

"""Message rewrites llama.cpp's server makes for particular templates before rendering them.

Each is llama.cpp's (common/chat.cpp and common/parsers/, namespace ``workaround``), chosen the
same way, by what the template's source contains or what its probes found:

* ``null_content_as_empty``: a template that reads tool calls gets ``""`` for a missing
  content (some index into it);
* ``trim_contents``: StepFun's template gets contents without surrounding whitespace;
* ``gemma4_tool_responses``: Gemma 4's older templates read tool results from the assistant
  message (``tool_responses``), not from ``tool`` messages: an assistant's calls, the tool
  messages after them and a final answer become one assistant message.
"""

from __future__ import annotations

import json
from typing import Any

STEPFUN_MARK = "You have access to the following functions in JSONSchema format"
GEMMA4_MARK = "'<|tool_call>call:'"
GEMMA4_CURRENT_MARK = "{#- OpenAI Chat Completions:"  # the current template reads tool messages itself


def null_content_as_empty(messages: list[dict[str, Any]]) -> None:
    for message in messages:
        if message.get("content") is None:
            message["content"] = ""


def trim_contents(messages: list[dict[str, Any]]) -> None:
    for message in messages:
        if isinstance(message.get("content"), str):
            message["content"] = message["content"].strip()
        if isinstance(message.get("reasoning_content"), str):
            message["reasoning_content"] = message["reasoning_content"].strip()
        if isinstance(message.get("content"), list):
            message["content"] = [{**part, "text": part["text"].strip()}
                                  if part.get("type") == "text" and isinstance(part.get("text"), str) else part
                                  for part in message["content"]]


def needs_gemma4_tool_responses(source: str) -> bool:
    return GEMMA4_MARK in source and GEMMA4_CURRENT_MARK not in source


def gemma4_tool_responses(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out, i = [], 0
    while i < len(messages):
        message = messages[i]
        if message.get("role") != "assistant" or not _calls(message):
            out.append(message)
            i += 1
            continue
        turn: dict[str, Any] = {"role": "assistant", "tool_calls": list(message["tool_calls"])}
        if isinstance(message.get("reasoning_content"), str):
            reasoning = message["reasoning_content"]
        else:
            reasoning = None
        i += 1
        responses = []
        while i < len(messages) and messages[i].get("role") == "tool":
            responses.append(_response(messages[i], turn["tool_calls"], len(responses)))
            i += 1
        if responses:
            turn["tool_responses"] = responses
        if i < len(messages) and messages[i].get("role") == "assistant" and not _calls(messages[i]) \
                and messages[i].get("content") not in (None, "", []):
            turn["content"] = messages[i]["content"]
            i += 1
        if reasoning is not None:
            turn["reasoning_content"] = reasoning
        out.append(turn)
    return out


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON")  # Python's json reads NaN and Infinity; llama.cpp's does not


def _calls(message: dict[str, Any]) -> bool:
    return isinstance(message.get("tool_calls"), list) and bool(message["tool_calls"])


def _response(message: dict[str, Any], calls: list[dict[str, Any]], index: int) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, str):
        try:
            content = json.loads(content, parse_constant=_not_json)
        except ValueError:
            pass
    name = ""
    if index < len(calls) and isinstance(calls[index].get("function"), dict):
        name = calls[index]["function"].get("name", "") or ""
    return {"name": name or message.get("tool_call_id", ""), "response": content}

"""OpenAI-shaped chat messages and tools, checked and put in the shape llama.cpp hands templates.

llama.cpp parses the request's messages (``common_chat_msgs_parse_oaicompat``)
and writes them back as JSON before rendering (``to_json_oaicompat``): only
``role``, ``content``, ``reasoning_content``, ``name``, ``tool_call_id`` and
``tool_calls`` survive, in that order; missing or null content becomes "";
tool-call arguments become a JSON string. Templates see exactly that here too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ChatTemplateError


class ChatMessagesError(ChatTemplateError):
    """The messages (or tools) given to a template are malformed; the message says which and how."""


def _where(index: int, key: str | None = None) -> str:
    return f"messages[{index}]" + (f".{key}" if key else "")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ChatMessagesError(f"{where} must be a string, got {type(value).__name__}")
    return value


def normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """Check messages and rebuild them as llama.cpp passes them to a template.

    Each message needs a string ``role`` and ``content`` that is a string, null,
    or a list of ``{"type": "text", "text": ...}`` parts (kept as a list here;
    the template decides below whether it sees a list or the joined text), or
    ``tool_calls`` instead of content.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ChatMessagesError(f"messages must be a list of message objects, got {type(messages).__name__}")
    result = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ChatMessagesError(f"{_where(i)} must be an object with 'role' and 'content', "
                                    f"got {type(message).__name__}")
        if "role" not in message:
            raise ChatMessagesError(f"{_where(i)} has no 'role'")
        role = _text(message["role"], _where(i, "role"))
        if "content" not in message and "tool_calls" not in message:
            raise ChatMessagesError(f"{_where(i)} has neither 'content' nor 'tool_calls'")
        out: dict[str, Any] = {"role": role, "content": _content(message.get("content"), i)}
        for key in ("reasoning_content", "name", "tool_call_id"):
            if message.get(key) is not None:
                value = _text(message[key], _where(i, key))
                if value:
                    out[key] = value
        if message.get("tool_calls"):
            out["tool_calls"] = _tool_calls(message["tool_calls"], i)
        result.append(out)
    return result


def _content(content: Any, index: int) -> str | list[dict[str, str]]:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, bytes):
        parts = []
        for j, part in enumerate(content):
            where = f"{_where(index, 'content')}[{j}]"
            if not isinstance(part, Mapping) or "type" not in part:
                raise ChatMessagesError(f"{where} must be an object with a 'type'")
            if part["type"] not in ("text", "media_marker"):
                raise ChatMessagesError(f"{where} has type {part['type']!r}: only text content is supported")
            parts.append({"type": part["type"], "text": _text(part.get("text"), f"{where}.text")})
        return parts if parts else ""
    raise ChatMessagesError(f"{_where(index, 'content')} must be a string, a list of text parts or null, "
                            f"got {type(content).__name__}")


def _tool_calls(calls: Any, index: int) -> list[dict[str, Any]]:
    if not isinstance(calls, Sequence) or isinstance(calls, (str, bytes)):
        raise ChatMessagesError(f"{_where(index, 'tool_calls')} must be a list")
    result = []
    for j, call in enumerate(calls):
        where = f"{_where(index, 'tool_calls')}[{j}]"
        if not isinstance(call, Mapping) or call.get("type") != "function" or not isinstance(call.get("function"),
                                                                                               Mapping):
            raise ChatMessagesError(f"{where} must be {{'type': 'function', 'function': {{...}}}}")
        function = call["function"]
        name = _text(function.get("name"), f"{where}.function.name")
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
        out: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
        if call.get("id") is not None:
            out["id"] = _text(call["id"], f"{where}.id")
        result.append(out)
    return result


def normalize_tools(tools: Any) -> list[dict[str, Any]] | None:
    """Tools as llama.cpp re-writes them: ``{"type": "function", "function": {name, description, parameters}}``."""
    if tools is None:
        return None
    if isinstance(tools, (str, bytes)) or not isinstance(tools, Sequence):
        raise ChatMessagesError(f"tools must be a list, got {type(tools).__name__}")
    result = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or tool.get("type") != "function" or not isinstance(tool.get("function"),
                                                                                           Mapping):
            raise ChatMessagesError(f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}")
        function = tool["function"]
        parameters = function.get("parameters", {})
        if not isinstance(parameters, Mapping):
            raise ChatMessagesError(f"tools[{i}].function.parameters must be an object")
        result.append({"type": "function", "function": {
            "name": _text(function.get("name"), f"tools[{i}].function.name"),
            "description": _text(function.get("description", ""), f"tools[{i}].function.description"),
            "parameters": json.loads(json.dumps(parameters)),
        }})
    return result or None


def join_text_parts(parts: list[dict[str, str]]) -> str:
    """Typed content as one string: text parts joined by newlines, none around media markers."""
    text, after_marker = "", False
    for part in parts:
        if part["type"] == "text":
            if text and not after_marker:
                text += "\n"
            after_marker = False
        else:
            after_marker = True
        text += part["text"]
    return text

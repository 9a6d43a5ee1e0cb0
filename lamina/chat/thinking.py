"""Whether llama.cpp's server turns thinking on for a template (``enable_thinking``'s default).

llama-server renders every prompt with ``enable_thinking`` true only when the template
"supports thinking", which its chat auto-parser decides by rendering probe conversations and
comparing them (common/chat-diff-analyzer.cpp, ``analyze_reasoning``). A template that reads
``enable_thinking`` for something else (Apertus's "Deliberation: enabled" line) but shows no
reasoning markers is rendered with it false. This module asks the template the same three
questions, in the same order:

1. does a past assistant message's ``reasoning_content`` appear, closed by a marker
   (``<...>`` or ``[...]``)?
2. does turning ``enable_thinking`` on or off change only the end of the generation prompt
   (an opening ``<think>``, or an empty ``<think></think>`` pair)?
3. for templates that read tool calls: does reasoning appear only beside a tool call?

plus the source patterns llama.cpp special-cases (old Qwen/DeepSeek templates that split on
``</think>``, Granite 3.3, Nemotron Nano v2). A template that fails a probe answers no to it.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ChatTemplateError, ChatTemplateLimitError

_USER = {"role": "user", "content": "U_USER_MSG Hello END_U"}
_ANSWER = "A_ASST_MSG I can help END_A"
_THINKING = "REASON_PART I am thinking END_R"
_MARKER = re.compile(r"<[^>]*>|\[[^\]]*\]")
_ANCHOR = 64

# source patterns llama.cpp's auto-parser gives a reasoning mode by hand (its "workarounds")
_PATCHED = (
    lambda src: "content.split('</think>')" in src and "reasoning_content" not in src and "<SPECIAL_12>" not in src,
    lambda src: "Write your thoughts between <think></think> and write your response between <response></response>"
    in src,
    lambda src: all(m in src for m in ("<SPECIAL_10>", "<SPECIAL_11>", "<SPECIAL_12>", "<TOOL_RESPONSE>")),
)


def supports_thinking(template) -> bool:
    """llama.cpp's answer for this ``JinjaChatTemplate`` (see the module docstring)."""
    return (_reasoning_is_shown(template) or _thinking_switch_at_the_end(template)
            or (template.caps.supports_tool_calls and _reasoning_only_with_tools(template))
            or any(patched(template.source) for patched in _PATCHED))


def _render(template, messages: list, add_generation_prompt: bool, enable_thinking: bool,
            tools: list | None = None) -> str | None:
    variables: dict[str, Any] = {"messages": messages, "bos_token": "", "eos_token": "",
                                 "add_generation_prompt": add_generation_prompt, "enable_thinking": enable_thinking}
    if tools:
        variables["tools"] = tools
    try:
        return template.render_raw(variables)
    except ChatTemplateLimitError:
        raise  # a template that cannot render a probe in bounds will not render a chat either
    except ChatTemplateError:
        return None


def _reasoning_is_shown(template) -> bool:
    with_reasoning = [_USER, {"role": "assistant", "content": _ANSWER, "reasoning_content": _THINKING}]
    plain = _render(template, [_USER, {"role": "assistant", "content": _ANSWER}], False, True)
    shown = _render(template, with_reasoning, False, True)
    if plain is None or shown is None or _THINKING not in shown:
        return False
    after = shown[shown.index(_THINKING) + len(_THINKING):].lstrip()
    return _MARKER.match(after) is not None


def _split(a: str, b: str) -> tuple[str, str]:
    """What differs between ``a`` and ``b`` once their common prefix and suffix are taken off."""
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[len(a) - 1 - end] == b[len(b) - 1 - end]:
        end += 1
    return a[start:len(a) - end], b[start:len(b) - end]


def _thinking_switch_at_the_end(template) -> bool:
    off = _render(template, [_USER], True, False)
    on = _render(template, [_USER], True, True)
    if off is None or on is None or off == on:
        return False
    left, right = _split(off, on)
    if not left.strip() and right:
        return bool(right.strip()) and on.endswith(right.strip())
    if not right.strip() and left:
        return bool(left.strip()) and off.endswith(left.strip())
    for base, extended in ((on, off), (off, on)):  # one prompt's tail, then two markers more
        anchor = base[-_ANCHOR:]
        at = extended.rfind(anchor)
        if at < 0 or at + len(anchor) >= len(extended):
            continue
        extra = extended[at + len(anchor):].strip()
        pieces = [p for p in re.split(r"(<[^>]*>|\[[^\]]*\])", extra) if p.strip()]
        if len(pieces) == 2 and all(_MARKER.fullmatch(p) for p in pieces):
            return True
    return False


def _reasoning_only_with_tools(template) -> bool:
    tools = [{"type": "function", "function": {"name": "FFF_FIRST_FUN_F", "description": "",
                                               "parameters": {"type": "object", "properties": {}}}}]
    call = {"id": "call00001", "type": "function",
            "function": {"name": "FFF_FIRST_FUN_F", "arguments": '{"AA_ARG_FST_AA": "VVVV"}'}}
    without = _render(template, [_USER, {"role": "assistant", "content": _ANSWER, "reasoning_content": _THINKING}],
                      False, True, tools)
    beside = _render(template, [_USER, {"role": "assistant", "content": None, "reasoning_content": _THINKING,
                                        "tool_calls": [call]}], False, True, tools)
    return without is not None and beside is not None and _THINKING not in without and _THINKING in beside

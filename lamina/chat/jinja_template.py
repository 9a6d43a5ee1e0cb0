"""A model's Jinja chat template, rendered the way llama.cpp's server renders it.

What llama.cpp does around the template (common/chat.cpp, ``common_chat_templates_apply_jinja``
and ``common_chat_template_direct_apply``), and so what this class does:

* it first probes the template (``caps_get``): does it read a system message,
  does it take string or list content, does it read tool calls and object
  arguments;
* messages are rebuilt (see ``messages.py``); content lists become joined text
  for templates that only take strings, and strings become one text part for
  templates that only take lists; the "developer" role becomes "system";
* a system message is merged into the next message when the template ignores
  system messages;
* the template sees ``messages``, ``bos_token``, ``eos_token``,
  ``add_generation_prompt`` (only when true), ``tools`` (only when given),
  ``enable_thinking`` (on where llama.cpp finds the template thinks, ``thinking.py``),
  ``datetime`` and ``date_string``, the server's default
  ``preserve_reasoning`` (and the ``preserve_thinking``/``clear_thinking``/...
  switches it sets), and any extra keyword arguments;
* a leading BOS token text is removed when the tokenizer adds BOS itself, and a
  trailing EOS text when it adds EOS.

Rendering runs in :class:`BoundedSandbox`; every failure becomes a
:class:`ChatTemplateError` that names the template and, when known, the line.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import jinja2

from . import workarounds
from .errors import ChatTemplateError, ChatTemplateLimitError
from .messages import ChatMessagesError, join_text_parts
from .sandbox import BoundedSandbox, RenderLimits, TemplateLimitExceeded, TemplateRaised, WatchedList, watching

_TEMPLATE_FILENAME = "<chat template>"
_LIST_USE = {"array_access", "selectattr"}  # what llama.cpp counts as using a value as a list


class _Watched(dict):
    """A dict that remembers which keys the template read (for the capability probes)."""

    def __init__(self, *args: Any, seen: set[str], tag: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._seen = seen
        self._tag = tag

    def __getitem__(self, key: Any) -> Any:
        self._seen.add(f"{self._tag}.{key}")
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._seen.add(f"{self._tag}.{key}")
        return super().get(key, default)

    def items(self):
        self._seen.update(f"{self._tag}.{k}" for k in self.keys())
        return super().items()

    def values(self):
        self._seen.update(f"{self._tag}.{k}" for k in self.keys())
        return super().values()

    def note_serialized(self) -> None:
        """``tojson`` wrote this dict out (llama.cpp counts that as using every value)."""
        self._seen.update(f"{self._tag}.{k}!json" for k in self.keys())


class TemplateCaps:
    """What the template reads, found by rendering probe conversations (llama.cpp's ``caps_get``)."""

    def __init__(self, template: "JinjaChatTemplate"):
        self.supports_string_content = True
        self.supports_typed_content = False
        self.supports_system_role = True
        self.supports_tool_calls = True
        self.supports_object_arguments = False
        self._probe(template)

    def _try(self, template: "JinjaChatTemplate", messages: list, tools: list | None = None) -> str | None:
        try:
            return template.render_raw({"messages": messages, "tools": tools or [], "bos_token": "",
                                        "eos_token": "", "add_generation_prompt": True})
        except ChatTemplateLimitError:
            raise  # a template that cannot render a two-line probe in bounds will not render a chat either
        except ChatTemplateError:
            return None

    def _probe(self, template: "JinjaChatTemplate") -> None:
        # Content, as llama.cpp's caps_get decides it: a string content that the template indexes or
        # iterates means typed content; one it fails on, or uses as a list without showing it, means
        # no string content; a template that tests "is string" is asked again with an empty list.
        marker = "STRING_MARKER"
        with watching(marker) as ops:
            string_out = self._try(template, [{"role": "user", "content": marker}])
        as_list = bool(ops[id(marker)] & _LIST_USE)
        self.supports_typed_content = as_list
        self.supports_string_content = string_out is not None and not (as_list and marker not in string_out)
        if "test_is_string" in ops[id(marker)]:
            empty = WatchedList()
            with watching(empty) as ops:
                empty_out = self._try(template, [{"role": "user", "content": empty}])
            if empty_out is not None and ops[id(empty)] & _LIST_USE:
                self.supports_typed_content = True

        seen: set[str] = set()

        system = _Watched({"role": "system", "content": "System message"}, seen=seen, tag="system")
        self._try(template, [system, {"role": "user", "content": "User message"}])
        self.supports_system_role = "system.content" in seen

        seen.clear()
        arguments = _Watched({"arg": "value"}, seen=seen, tag="arguments")
        call = _Watched({"role": "assistant", "content": "", "tool_calls": [
            {"id": "call00001", "type": "function", "function": {"name": "tool1", "arguments": arguments}}]},
            seen=seen, tag="assistant")
        tools = [{"name": "tool", "type": "function", "function": {
            "name": "tool1", "description": "Tool description", "parameters": {
                "type": "object", "properties": {"arg": {"type": "string", "description": "Arg description"}},
                "required": ["arg"]}}}]
        self._try(template, [{"role": "user", "content": "User message"}, call,
                             {"role": "tool", "content": "Tool response", "tool_call_id": "call00001"},
                             {"role": "assistant", "content": "The tool response was 'tool response'"},
                             {"role": "user", "content": "User message"}], tools)
        self.supports_tool_calls = "assistant.tool_calls" in seen
        self.supports_object_arguments = "arguments.arg" in seen or "arguments.arg!json" in seen


class JinjaChatTemplate:
    """A Jinja chat template (``tokenizer.chat_template`` or a ``--chat-template-file``).

    ``bos_token``/``eos_token`` are the texts of the model's BOS and EOS tokens;
    ``add_bos``/``add_eos`` say whether its tokenizer adds them (then the
    rendered prompt does not start/end with them). ``name`` appears in errors.
    A template that does not parse fails here, with a ChatTemplateError.
    """

    def __init__(self, source: str, *, name: str = "chat template", bos_token: str = "", eos_token: str = "",
                 add_bos: bool = False, add_eos: bool = False, limits: RenderLimits | None = None):
        if not isinstance(source, str):
            raise ChatTemplateError(f"the template must be text, got {type(source).__name__}", template=name)
        self.source = source
        self.name = name
        self.bos_token = bos_token or ""
        self.eos_token = eos_token or ""
        self.add_bos = add_bos
        self.add_eos = add_eos
        self.environment = BoundedSandbox(limits)
        try:
            self._template = self.environment.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise ChatTemplateError(f"does not parse: {e.message}", template=name, line=e.lineno) from None
        except (TemplateLimitExceeded, RecursionError, MemoryError) as e:
            raise ChatTemplateError(f"cannot be compiled: {e}", template=name) from None
        self._caps: TemplateCaps | None = None
        self._thinks: bool | None = None

    @property
    def caps(self) -> TemplateCaps:
        if self._caps is None:
            self._caps = TemplateCaps(self)
        return self._caps

    @property
    def supports_thinking(self) -> bool:
        """Whether llama.cpp's server renders this template with ``enable_thinking`` on by default."""
        if self._thinks is None:
            from .thinking import supports_thinking

            self._thinks = supports_thinking(self)
        return self._thinks

    def render_raw(self, variables: dict[str, Any], now: datetime.datetime | None = None) -> str:
        """Render with exactly these variables (no message handling); errors become ChatTemplateError.
        ``now`` is the time ``strftime_now`` tells (the clock's when None)."""
        try:
            return self.environment.render(self._template, variables, now=now)
        except TemplateRaised as e:
            raise ChatTemplateError(f"the template raised an error: {e}", template=self.name,
                                    line=_template_line(e)) from None
        except TemplateLimitExceeded as e:
            raise ChatTemplateLimitError(f"stopped: {e}", template=self.name, line=_template_line(e)) from None
        except jinja2.exceptions.SecurityError as e:
            raise ChatTemplateError(f"refused an unsafe operation: {e}", template=self.name,
                                    line=_template_line(e)) from None
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"failed: {e}", template=self.name, line=_template_line(e)) from None
        except (RecursionError, MemoryError) as e:
            raise ChatTemplateLimitError(f"stopped: {'it recursed too deeply' if isinstance(e, RecursionError) else 'out of memory'}",
                                         template=self.name, line=_template_line(e)) from None
        except Exception as e:  # anything else a template can provoke (TypeError, ValueError, MemoryError...)
            raise ChatTemplateError(f"failed: {type(e).__name__}: {e}", template=self.name,
                                    line=_template_line(e)) from None

    def template_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The normalised messages as this template will see them (llama.cpp's workarounds applied)."""
        caps = self.caps
        out = [dict(m) for m in messages]
        if workarounds.STEPFUN_MARK in self.source:
            workarounds.trim_contents(out)
        only_string = caps.supports_string_content and not caps.supports_typed_content
        only_typed = caps.supports_typed_content and not caps.supports_string_content
        for message in out:
            content = message["content"]
            if only_string and isinstance(content, list):
                message["content"] = join_text_parts(content)
            elif only_typed and isinstance(content, str):
                message["content"] = [{"type": "text", "text": content}]
            elif isinstance(content, list):
                message["content"] = [dict(part) for part in content]
        if "<|channel|>" not in self.source:
            for message in out:
                if message["role"] == "developer":
                    message["role"] = "system"
        if not caps.supports_system_role and out and out[0]["role"] == "system":
            first = out.pop(0)
            if out:
                out[0]["content"] = _as_text(first["content"]) + "\n" + _as_text(out[0]["content"])
        if caps.supports_tool_calls:
            workarounds.null_content_as_empty(out)
        if caps.supports_object_arguments:
            for message in out:
                for call in message.get("tool_calls", ()):
                    arguments = call["function"]["arguments"]
                    if isinstance(arguments, str):
                        try:
                            call["function"] = {**call["function"], "arguments": json.loads(arguments)}
                        except ValueError as e:
                            raise ChatMessagesError(f"tool call arguments are not valid JSON: {e}") from None
        if workarounds.needs_gemma4_tool_responses(self.source):
            out = workarounds.gemma4_tool_responses(out)
        return out

    def render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True,
               tools: list[dict[str, Any]] | None = None, enable_thinking: bool | None = None,
               preserve_reasoning: bool = True, now: datetime.datetime | None = None,
               **template_kwargs: Any) -> str:
        """Render normalised messages (see ``messages.normalize_messages``) to the prompt text.
        ``enable_thinking`` defaults to :attr:`supports_thinking`, as llama-server's does."""
        now = now or datetime.datetime.now()
        if enable_thinking is None:
            enable_thinking = self.supports_thinking
        variables: dict[str, Any] = {
            "messages": self.template_messages(messages),
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "enable_thinking": enable_thinking,
        }
        if tools:
            variables["tools"] = tools
        variables["datetime"] = now.strftime("%b %d %Y")
        variables["date_string"] = now.strftime("%d %b %Y")
        variables["preserve_reasoning"] = preserve_reasoning
        variables.update(template_kwargs)
        if add_generation_prompt:
            variables["add_generation_prompt"] = True
        if isinstance(variables.get("preserve_reasoning"), bool):
            keep = variables["preserve_reasoning"]
            variables.update(preserve_thinking=keep, clear_thinking=not keep, truncate_history_thinking=not keep,
                             drop_thinking=not keep)
        text = self.render_raw(variables, now=now)
        if self.add_bos and self.bos_token and text.startswith(self.bos_token):
            text = text[len(self.bos_token):]
        if self.add_eos and self.eos_token and text.endswith(self.eos_token):
            text = text[:-len(self.eos_token)]
        return text


def _as_text(content: Any) -> str:
    return join_text_parts(content) if isinstance(content, list) else content


def _template_line(error: BaseException) -> int | None:
    """The template line an error was raised on, from Jinja's rewritten traceback."""
    line = getattr(error, "lineno", None)
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_FILENAME or tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line

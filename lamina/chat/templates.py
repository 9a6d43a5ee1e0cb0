"""Choosing a chat template the way llama.cpp does, and turning a conversation into prompt text.

``load_chat_template`` picks, in llama.cpp's order of precedence:

1. ``template_file`` (``--chat-template-file``) or ``template`` (``--chat-template``):
   a built-in name (``BUILTIN_TEMPLATE_NAMES``: chatml, llama2, llama3, gemma, ...)
   selects llama.cpp's hand-written format (what ``--chat-template NAME`` means
   to llama.cpp without ``--jinja``); any other text is a Jinja template;
2. the model's own ``tokenizer.chat_template`` (Jinja);
3. chatml, as llama.cpp uses for models without a template.

With ``use_jinja=False`` (llama.cpp's ``--no-jinja``) a Jinja template is not run:
its kind is detected from the markers it contains and the matching built-in
format is used instead. ``fallback_to_builtin=True`` does the same for a model
template that does not parse, and says so in ``ChatTemplate.warning``.

Every template renders with ``render(messages, add_generation_prompt=True, ...)``
and returns the prompt string; ``render_turn`` gives only the text a new
message adds to a conversation (llama.cpp's ``common_chat_format_single``), for
interactive chat where the earlier turns are already evaluated.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from .builtin import BUILTIN_TEMPLATE_NAMES, detect_template_kind, format_builtin
from .errors import ChatTemplateError
from .jinja_template import JinjaChatTemplate
from .messages import join_text_parts, normalize_messages, normalize_tools
from .sandbox import RenderLimits

#: llama.cpp's Jinja chatml, used when a model has no template (CHATML_TEMPLATE_SRC in common/chat.cpp).
CHATML_JINJA = (
    "{%- for message in messages -%}\n"
    "  {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{- '<|im_start|>assistant\n' -}}\n"
    "{%- endif -%}"
)

_MAX_TEMPLATE_FILE_BYTES = 1 << 20


class ChatTemplate:
    """A chat template ready to render conversations (Jinja or one of llama.cpp's built-in formats)."""

    def __init__(self, *, name: str, jinja: JinjaChatTemplate | None = None, builtin: str | None = None,
                 warning: str | None = None):
        self.name = name
        self.jinja = jinja
        self.builtin = builtin
        self.warning = warning

    @property
    def kind(self) -> str:
        """``"jinja"`` or the built-in format's name."""
        return "jinja" if self.jinja is not None else self.builtin

    @property
    def source(self) -> str | None:
        """The Jinja source, or None for a built-in format."""
        return self.jinja.source if self.jinja is not None else None

    def render(self, messages: Any, *, add_generation_prompt: bool = True, tools: Any = None,
               continue_final_message: bool = False, now: datetime.datetime | None = None,
               **template_kwargs: Any) -> str:
        """The prompt text for ``messages`` (OpenAI-shaped dicts), as llama.cpp's server renders it.

        ``add_generation_prompt`` appends the assistant's header so the model answers.
        ``continue_final_message`` renders a final assistant message as the start of
        the answer to continue (llama.cpp's server does this when the last message
        is the assistant's). ``tools`` and extra keyword arguments
        (``chat_template_kwargs``, e.g. ``enable_thinking=False``) reach Jinja templates.
        """
        normalized = normalize_messages(messages)
        tools = normalize_tools(tools)
        if continue_final_message:
            if not normalized or normalized[-1]["role"] != "assistant":
                raise ChatTemplateError("continue_final_message needs a final assistant message", template=self.name)
            *earlier, last = normalized
            without = self._render(earlier, False, tools, now, template_kwargs)
            with_prompt = self._render(earlier, True, tools, now, template_kwargs)
            common = 0
            for a, b in zip(without, with_prompt):
                if a != b:
                    break
                common += 1
            content = last["content"] if isinstance(last["content"], str) else join_text_parts(last["content"])
            return without + with_prompt[common:] + content
        return self._render(normalized, add_generation_prompt, tools, now, template_kwargs)

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool, tools: Any,
                now: datetime.datetime | None, template_kwargs: dict[str, Any]) -> str:
        if self.jinja is not None:
            return self.jinja.render(messages, add_generation_prompt=add_generation_prompt, tools=tools, now=now,
                                     **template_kwargs)
        chat = [(m["role"], m["content"] if isinstance(m["content"], str) else join_text_parts(m["content"]))
                for m in messages]
        return format_builtin(self.builtin, chat, add_generation_prompt)

    def render_parts(self, messages: Any, **options: Any) -> list[tuple[str, bool]]:
        """The prompt split into (text, is_message_text) pieces, joined = ``render(messages, **options)``.

        Pieces marked True are message content as the caller gave it: tokenize them
        without parsing special tokens, so a ``<|im_end|>`` typed by a person stays
        text; the rest is the template's own text (its control tokens parse as such).
        Found by rendering once more with each content replaced by a placeholder;
        for a template that rewrites content (``trim``, ``upper``...) the content
        is looked for in the prompt instead, in message order.
        """
        prompt = self.render(messages, **options)
        contents = [m.get("content") for m in normalize_messages(messages)]
        texts = [c if isinstance(c, str) else join_text_parts(c) for c in contents]
        marked = [i for i, t in enumerate(texts) if t]
        if not marked:
            return [(prompt, False)] if prompt else []
        stand_ins = {i: f"\ue000{i}\ue001" for i in marked}
        placeholder_messages = []
        for i, message in enumerate(messages):
            message = dict(message)
            if i in stand_ins:
                message["content"] = stand_ins[i]
            placeholder_messages.append(message)
        try:
            shaped = self.render(placeholder_messages, **options)
        except ChatTemplateError:
            shaped = ""
        parts = _split_on_stand_ins(shaped, {v: texts[i] for i, v in stand_ins.items()})
        if parts is not None and "".join(text for text, _ in parts) == prompt:
            return parts
        return _find_in_order(prompt, [texts[i] for i in marked])

    def render_turn(self, past_messages: Any, new_message: Any, *, add_generation_prompt: bool = True,
                    **template_kwargs: Any) -> str:
        """Only the text ``new_message`` adds after ``past_messages`` (llama.cpp's ``common_chat_format_single``).

        The past is rendered without a generation prompt, the whole with one, and
        the difference returned; a newline the past ended with is kept.
        """
        past = list(past_messages)
        before = self.render(past, add_generation_prompt=False, **template_kwargs) if past else ""
        after = self.render(past + [new_message], add_generation_prompt=add_generation_prompt, **template_kwargs)
        prefix = "\n" if add_generation_prompt and before.endswith("\n") else ""
        return prefix + after[len(before):]

    def example(self, **template_kwargs: Any) -> str:
        """The sample conversation llama.cpp prints at start-up (``common_chat_format_example``)."""
        return self.render([
            {"role": "system", "content": "You are a helpful assistant"},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi there"},
            {"role": "user", "content": "How are you?"},
        ], **template_kwargs)

    def __repr__(self) -> str:
        return f"ChatTemplate(name={self.name!r}, kind={self.kind!r})"


def _split_on_stand_ins(shaped: str, replacements: dict[str, str]) -> list[tuple[str, bool]] | None:
    parts: list[tuple[str, bool]] = []
    rest = shaped
    while rest:
        found = [(rest.find(k), k) for k in replacements if k in rest]
        if not found:
            parts.append((rest, False))
            break
        at, key = min(found)
        if at:
            parts.append((rest[:at], False))
        parts.append((replacements[key], True))
        rest = rest[at + len(key):]
    if any(k in "".join(t for t, _ in parts) for k in replacements):
        return None
    return parts


def _find_in_order(prompt: str, texts: list[str]) -> list[tuple[str, bool]]:
    parts: list[tuple[str, bool]] = []
    cursor = 0
    for text in texts:
        for candidate in (text, text.strip()):
            at = prompt.find(candidate, cursor) if candidate else -1
            if at >= 0:
                if at > cursor:
                    parts.append((prompt[cursor:at], False))
                parts.append((candidate, True))
                cursor = at + len(candidate)
                break
    if cursor < len(prompt):
        parts.append((prompt[cursor:], False))
    return parts


def builtin_chat_template(name: str) -> ChatTemplate:
    """One of llama.cpp's built-in formats by name (``--chat-template NAME``)."""
    if name not in BUILTIN_TEMPLATE_NAMES:
        raise ChatTemplateError(f"unknown built-in chat template {name!r}; known: {', '.join(BUILTIN_TEMPLATE_NAMES)}",
                                template=name)
    return ChatTemplate(name=name, builtin=name)


def read_chat_template_file(path: str | os.PathLike) -> str:
    """The text of a ``--chat-template-file`` (UTF-8, at most 1 MiB)."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_TEMPLATE_FILE_BYTES + 1)
    except OSError as e:
        raise ChatTemplateError(f"cannot read the chat template file: {e.strerror or e}", template=str(path)) from None
    if len(data) > _MAX_TEMPLATE_FILE_BYTES:
        raise ChatTemplateError(f"the chat template file is larger than {_MAX_TEMPLATE_FILE_BYTES} bytes",
                                template=str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ChatTemplateError(f"the chat template file is not UTF-8 text ({e.reason} at byte {e.start})",
                                template=str(path)) from None


def load_chat_template(*, model_template: str | None = None, template: str | None = None,
                       template_file: str | os.PathLike | None = None, bos_token: str = "", eos_token: str = "",
                       add_bos: bool = False, add_eos: bool = False, use_jinja: bool = True,
                       fallback_to_builtin: bool = False, model_name: str = "the model",
                       limits: RenderLimits | None = None) -> ChatTemplate:
    """The template a llama.cpp user would get (see the module docstring for the order).

    ``model_template`` is the GGUF's ``tokenizer.chat_template`` (None if absent);
    ``template``/``template_file`` are the ``--chat-template``/``--chat-template-file``
    values; ``bos_token``/``eos_token`` the texts of the model's BOS/EOS tokens and
    ``add_bos``/``add_eos`` whether its tokenizer adds them.
    """
    tokens = dict(bos_token=bos_token, eos_token=eos_token, add_bos=add_bos, add_eos=add_eos, limits=limits)
    if template_file is not None:
        source, name = read_chat_template_file(template_file), str(template_file)
    elif template:
        source, name = template, "--chat-template"
    else:
        source, name = model_template, f"tokenizer.chat_template of {model_name}"

    if not source:
        if use_jinja:
            return ChatTemplate(name="chatml", jinja=JinjaChatTemplate(CHATML_JINJA, name="chatml", **tokens))
        return builtin_chat_template("chatml")
    if source in BUILTIN_TEMPLATE_NAMES:
        return builtin_chat_template(source)
    if not use_jinja:
        return _detected(source, name)
    try:
        return ChatTemplate(name=name, jinja=JinjaChatTemplate(source, name=name, **tokens))
    except ChatTemplateError as e:
        if not fallback_to_builtin:
            raise
        detected = _detected(source, name)
        detected.warning = f"{e}; using llama.cpp's built-in {detected.builtin!r} format instead"
        return detected


def _detected(source: str, name: str) -> ChatTemplate:
    kind = detect_template_kind(source)
    if kind is None:
        raise ChatTemplateError("is not one of the formats llama.cpp recognises without Jinja "
                                f"({', '.join(BUILTIN_TEMPLATE_NAMES)})", template=name)
    return ChatTemplate(name=name, builtin=kind)


def read_model_chat_template(gguf_file: Any, variant: str | None = None) -> str | None:
    """``tokenizer.chat_template`` (or ``tokenizer.chat_template.<variant>``) from an open GGUF file, if any."""
    key = "tokenizer.chat_template" + (f".{variant}" if variant else "")
    return gguf_file.get_str(key, None)

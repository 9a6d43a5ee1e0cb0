"""The one error type the chat package raises."""

from __future__ import annotations


class ChatTemplateError(ValueError):
    """A chat template that cannot be used or rendered, or messages it cannot take.

    ``template`` names the template (e.g. ``tokenizer.chat_template of model.gguf``),
    ``line`` is the template line the problem was found on, when known.
    """

    def __init__(self, message: str, *, template: str | None = None, line: int | None = None):
        where = ""
        if template:
            where = f"chat template {template!r}"
            if line:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)
        self.template = template
        self.line = line
        self.reason = message


class ChatTemplateLimitError(ChatTemplateError):
    """Rendering was stopped by a limit (time, steps, sizes, nesting): the template is hostile or broken."""
